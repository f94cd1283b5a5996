from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from safetensors.torch import load_file

from hydralanet import HydraLANet, load_model, save_checkpoint
from hydralanet.checkpoints.format import CheckpointError
from hydralanet.config import CheckpointConfig, PreprocessConfig, format_threshold


def _tiny_model(seed: int = 0) -> HydraLANet:
    torch.manual_seed(seed)
    model = HydraLANet(encoder="resnet18", decoder_channels=8)
    # Non-trivial BatchNorm statistics so a lost buffer would show in the outputs.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _config(**kw) -> CheckpointConfig:
    return CheckpointConfig(preprocessing=PreprocessConfig(input_size=64), thresholds={"MA": 0.5}, name="tiny", **kw)


def test_folder_round_trip_is_bit_identical(tmp_path):
    model = _tiny_model()
    folder = save_checkpoint(model, tmp_path / "ckpt", _config(provenance={"datasets": ["synthetic"]}))
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = load_model(folder, device="cpu")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.model(x))
    assert loaded.config.thresholds == {"EX": 0.35, "HE": 0.35, "MA": 0.5, "SE": 0.35}
    assert loaded.config.preprocessing.input_size == 64 and loaded.config.provenance == {"datasets": ["synthetic"]}
    assert loaded.identity["name"] == "tiny" and len(loaded.identity["sha256"]) == 64
    assert not loaded.model.training
    # Loading a single .safetensors file with config.json beside it works too.
    assert load_model(folder / "model.safetensors", device="cpu").identity["sha256"] == loaded.identity["sha256"]
    config = json.loads((folder / "config.json").read_text())
    assert config["classes"] == ["EX", "HE", "MA", "SE"] and config["model"]["encoder"] == "resnet18"


def test_files_are_readable_by_others(tmp_path):
    folder = save_checkpoint(_tiny_model(), tmp_path / "ckpt", _config())
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((folder / "model.safetensors").stat().st_mode) == 0o666 & ~umask


def test_overwrite_replaces_whole_folder(tmp_path):
    folder = save_checkpoint(_tiny_model(0), tmp_path / "ckpt", _config())
    (folder / "stale.txt").write_text("old")
    save_checkpoint(_tiny_model(1), folder, _config())
    assert not (folder / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary folders left behind


def test_half_precision_storage_halves_the_file(tmp_path):
    model = _tiny_model()
    full = save_checkpoint(model, tmp_path / "fp32", _config())
    half = save_checkpoint(model, tmp_path / "fp16", _config(), weights_dtype=torch.float16)
    state = load_file(str(half / "model.safetensors"))
    assert state["encoder.layer1.0.conv1.weight"].dtype == torch.float16
    assert state["encoder.stem.1.running_var"].dtype == torch.float32  # BN statistics keep fp32
    assert (half / "model.safetensors").stat().st_size < 0.6 * (full / "model.safetensors").stat().st_size
    loaded = load_model(half, device="cpu")
    assert next(loaded.model.parameters()).dtype == torch.float32
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (model(x) - loaded.model(x)).abs().max() < 1e-2


def test_pickled_checkpoint_needs_explicit_permission(tmp_path):
    model = _tiny_model()
    folder = save_checkpoint(model, tmp_path / "ckpt", _config())
    legacy = folder / "legacy.pt"
    torch.save(model.state_dict(), legacy)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_model(legacy)
    loaded = load_model(legacy, allow_pickle=True, device="cpu")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.model(x))


def test_pickle_with_code_is_refused_even_when_allowed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError, match="cannot load evil.pt as a plain state dict"):
        load_model(path, allow_pickle=True)


def test_broken_checkpoints_give_one_line_errors(tmp_path):
    folder = save_checkpoint(_tiny_model(), tmp_path / "ckpt", _config())
    config = json.loads((folder / "config.json").read_text())

    config["model"]["decoder_channels"] = 16
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="weights do not match the resnet18/D=16"):
        load_model(folder)

    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(folder)

    config["model"]["decoder_channels"] = 8
    config["model"]["colour"] = "red"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"unknown model setting\(s\) \['colour'\]"):
        load_model(folder)

    del config["model"]["colour"]
    (folder / "config.json").write_text(json.dumps({**config, "format_version": 2}))
    with pytest.raises(CheckpointError, match=r"format_version 2 is newer than this hydralanet reads \(1\); upgrade"):
        load_model(folder)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_model(folder)

    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_model(folder)
    with pytest.raises(CheckpointError, match="not a Hub repo id"):
        load_model(tmp_path / "does" / "not" / "exist")


def test_bundled_model_loads_offline():
    loaded = load_model(device="cpu")
    assert loaded.identity["source"] == "bundled"
    assert loaded.config.preprocessing.input_size % 32 == 0
    assert loaded.identity["sha256"] and loaded.identity["parameters"] > 1e6


def test_thresholds_are_shown_with_the_digits_they_need():
    assert format_threshold(0.35) == "0.35"  # the sliders' two decimals
    assert format_threshold(0.7956) == "0.7956"
    assert format_threshold(0.99999994) == "0.99999994"  # a saturated model's tuned threshold is not "1"
    assert format_threshold(3e-6) == "0.000003"
    assert format_threshold(0.999995) == "0.999995" and format_threshold(0.0474) == "0.0474"
    # Neighbouring slider stops near the ends read differently.
    from hydralanet.config import THRESHOLD_GRID

    labels = [format_threshold(v) for v in THRESHOLD_GRID]
    assert len(set(labels)) == len(labels) and labels[0] == "0.00" and labels[-1] == "1.00"
    assert all(
        label not in ("0", "1") and float(label) == pytest.approx(v, rel=0.05, abs=1e-9)
        for label, v in zip(labels, THRESHOLD_GRID)
    )


def test_fast_path_is_built_once_when_threads_ask_together(monkeypatch):
    import threading

    import hydralanet.inference.loaded as checkpoint

    loaded = load_model(device="cpu")
    built = []
    real = checkpoint.optimize_for_inference
    arrived = threading.Semaphore(0)

    class CountingLock:
        """The model's lock, noting each thread that reaches it."""

        def __init__(self, lock) -> None:
            self.lock = lock

        def __enter__(self):
            arrived.release()
            return self.lock.__enter__()

        def __exit__(self, *exc):
            return self.lock.__exit__(*exc)

    loaded._lock = CountingLock(loaded._lock)

    def slow_build(*args, **kwargs):
        built.append(1)
        for _ in range(4):  # the build ends only when all four threads have asked for it
            assert arrived.acquire(timeout=60)
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "optimize_for_inference", slow_build)
    results = []
    threads = [threading.Thread(target=lambda: results.append(loaded.inference_model("auto"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and len(results) == 4 and all(r is results[0] for r in results)
