"""Checkpoints of the original HydraLA-Net code (``best_model.pt``): recognised, mapped exactly,
found in folders and Hub repos/Spaces, converted both ways (docs/checkpoints.md#checkpoints-from-the-original-hydrala-net-code, fixtures README).

The golden fixture holds the original model's sigmoid output for deterministic weights; every way
of loading those weights must reproduce it within 1e-5.
"""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from hydralanet import HydraLANet, load_model
from hydralanet.checkpoints.format import CheckpointError
from hydralanet.checkpoints.hub import HubError, HubSource, parse_hub_source
from hydralanet.checkpoints.original import from_original, infer_model_config, to_original, unwrap_state
from hydralanet.cli import main
from hydralanet.inference.loaded import load_model_or_bundled

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "original_hydralanet"
REPO = Path(__file__).resolve().parent.parent
LAYOUT = json.loads((FIXTURES / "layout.json").read_text())


def _make_state_module():
    spec = importlib.util.spec_from_file_location("original_make_state", FIXTURES / "make_state.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def original_state() -> dict[str, torch.Tensor]:
    return _make_state_module().original_state()


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    data = np.load(FIXTURES / "golden.npz")
    return {"input": data["input"], "probabilities": data["probabilities"]}


@pytest.fixture(scope="module")
def best_model(tmp_path_factory, original_state) -> Path:
    """``best_model.pt`` as the original training saves it: ``torch.save(model.state_dict(), ...)``."""
    path = tmp_path_factory.mktemp("original") / "best_model.pt"
    torch.save(original_state, path)
    return path


def assert_golden(loaded, golden) -> None:
    with torch.no_grad():
        probs = torch.sigmoid(loaded.model.cpu()(torch.from_numpy(golden["input"]))).numpy()
    assert probs.shape == golden["probabilities"].shape
    assert np.abs(probs - golden["probabilities"]).max() < 1e-5


def tiny_original(seed: int = 0) -> tuple[HydraLANet, dict[str, torch.Tensor]]:
    """A small model of ours (ResNet-18, D = 8) with non-trivial BatchNorm statistics, and its
    state dict in the original layout: small files for the discovery and Hub tests."""
    torch.manual_seed(seed)
    model = HydraLANet(encoder="resnet18", decoder_channels=8).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.8, 1.2)
    return model, to_original(model.state_dict(), model.config)


def same_function(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.equal(a.cpu()(x), b.cpu()(x))


# --------------------------------------------------------------------------- exact mapping


def test_best_model_pt_reproduces_the_original_output(best_model, golden):
    loaded = load_model(best_model, allow_pickle=True, device="cpu")
    assert_golden(loaded, golden)
    config = loaded.config
    assert (config.model.encoder, config.model.decoder_channels) == ("resnet50", 256)
    assert config.thresholds == {"EX": 0.35, "HE": 0.35, "MA": 0.35, "SE": 0.35}
    p = config.preprocessing
    assert (p.clahe, p.clip_limit, p.tile_grid, p.input_size, p.crop) == ("green", 1.5, 8, 1024, "centre_square")
    assert p.mean == (0.485, 0.456, 0.406) and p.std == (0.229, 0.224, 0.225)
    assert config.provenance["converted_from"] == "the original HydraLA-Net layout"
    import hashlib

    assert config.provenance["source_sha256"] == hashlib.sha256(best_model.read_bytes()).hexdigest()
    assert loaded.identity["converted_from"] == "the original HydraLA-Net layout"
    assert loaded.identity["file"] == "best_model.pt"


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: {"state_dict": s},
        lambda s: {"model_state_dict": s, "epoch": 12, "optimizer_state_dict": {"lr": 1e-5}},
        lambda s: {"model": s},
        lambda s: {f"module.{k}": v for k, v in s.items()},  # DataParallel / DDP
        lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}},
    ],
    ids=["state_dict", "model_state_dict", "model", "module-prefix", "wrapped-and-prefixed"],
)
def test_wrapped_and_prefixed_variants(tmp_path, original_state, golden, wrap):
    path = tmp_path / "checkpoint.pth"
    torch.save(wrap(original_state), path)
    assert_golden(load_model(path, allow_pickle=True, device="cpu"), golden)


def test_safetensors_with_original_names_needs_no_pickle(tmp_path, original_state, golden):
    path = tmp_path / "best_model.safetensors"
    save_file({k: v.contiguous() for k, v in original_state.items()}, str(path))
    loaded = load_model(path, device="cpu")  # no allow_pickle: safetensors holds no code
    assert_golden(loaded, golden)


def test_folder_holding_only_the_original_file(tmp_path, best_model, golden):
    run = tmp_path / "original-code" / "runs" / "lesions-1024"
    run.mkdir(parents=True)
    (run / "best_model.pt").write_bytes(best_model.read_bytes())
    (run / "train_log.txt").write_text("epoch 1 ...\n")
    loaded = load_model(tmp_path / "original-code", allow_pickle=True, device="cpu")
    assert loaded.identity["file"] == "runs/lesions-1024/best_model.pt"
    assert_golden(loaded, golden)

    (run.parent / "other" / "model.pt").parent.mkdir()
    (run.parent / "other" / "model.pt").write_bytes(b"x")
    with pytest.raises(
        CheckpointError, match=r"2 weights files \(runs/lesions-1024/best_model.pt, runs/other/model.pt\)"
    ) as err:
        load_model(tmp_path / "original-code", allow_pickle=True)
    assert "\n" not in str(err.value)


def test_export_matches_the_layout_exactly_and_round_trips_bit_identically(tmp_path, original_state):
    published = HydraLANet().eval()
    published.load_state_dict(from_original(original_state, infer_model_config(original_state), published.state_dict()))
    exported = to_original(published.state_dict(), published.config)
    assert [[k, list(v.shape)] for k, v in exported.items()] == LAYOUT  # names, shapes and order
    unused = [k for k in exported if ".conv_d1." in k or ".conv_l." in k]
    assert len(unused) == 12 and all(not exported[k].any() for k in unused)

    model, _ = tiny_original(seed=5)
    folder = tmp_path / "ours"
    from hydralanet import save_checkpoint
    from hydralanet.config import CheckpointConfig

    save_checkpoint(model, folder, CheckpointConfig(name="ours"))
    assert main(["convert", str(folder), "--to", "original", "--out", str(tmp_path / "best_model.pt")]) == 0
    state = torch.load(tmp_path / "best_model.pt", weights_only=True)
    assert state.keys() == to_original(model.state_dict(), model.config).keys()
    back = load_model(tmp_path / "best_model.pt", allow_pickle=True, device="cpu")
    ours = back.model.state_dict()
    original = model.state_dict()
    assert ours.keys() == original.keys()
    for k in original:  # bit-identical, every entry
        assert ours[k].dtype == original[k].dtype and torch.equal(ours[k], original[k]), k


# --------------------------------------------------------------------------- broken files


def test_broken_originals_give_one_line_errors(tmp_path, original_state):
    cases = {
        "missing": (
            {k: v for k, v in original_state.items() if k != "lam3.conv4.0.weight"},
            r"1 missing: lam3\.conv4\.0\.weight",
        ),
        "wrong-shape": (
            {**original_state, "head.conv0.bias": torch.zeros(128)},
            r"wrong shape: head\.conv0\.bias \[128\] \(expected \[256\]\)",
        ),
        "extra": (
            {**original_state, "hydra_head.heads.OD.0.weight": torch.zeros(64, 256, 1, 1)},
            r"1 unexpected: hydra_head\.heads\.OD\.0\.weight",
        ),
        "not-a-state-dict": ({"epoch": 3, "best_f1": 0.61}, "does not hold a state dict of tensors"),
        "a-list": ([torch.zeros(3)], "does not hold a state dict of tensors"),
    }
    for name, (obj, message) in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(obj, path)
        with pytest.raises(CheckpointError, match=message) as err:
            load_model(path, allow_pickle=True)
        assert "\n" not in str(err.value) and str(path) in str(err.value), name


def test_a_pickle_is_never_read_without_the_opt_in(tmp_path, best_model):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "best_model.pt"
    torch.save({"bkbone.conv1.weight": Evil()}, evil)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_model(evil)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_model(tmp_path)  # found in a folder: still refused
    with pytest.raises(CheckpointError, match="cannot load best_model.pt as a plain state dict"):
        load_model(evil, allow_pickle=True)  # weights_only refuses the code
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_model(best_model)


# --------------------------------------------------------------------------- Hub and Spaces


def test_hub_source_syntax():
    assert parse_hub_source("owner/name") == HubSource("owner/name")
    assert parse_hub_source("spaces/owner/demo@v1.2:runs/a/best_model.pt") == HubSource(
        "owner/demo", "space", "v1.2", "runs/a/best_model.pt"
    )
    assert parse_hub_source("models/owner/name@refs/pr/1") == HubSource("owner/name", "model", "refs/pr/1")
    assert parse_hub_source("./owner/name") is None and parse_hub_source("just-a-name") is None


def test_hub_model_repo_with_only_best_model_pt(hub, best_model, golden, monkeypatch):
    sha = hub.add_commit(
        "lab/hydralanet-idrid",
        {"runs/idrid/best_model.pt": best_model.read_bytes(), "README.md": b"trained with the original code\n"},
    )
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_model("lab/hydralanet-idrid")
    # Refused before the file was downloaded.
    assert not [path for _, path in hub.requests if path.endswith("best_model.pt")]
    loaded = load_model("lab/hydralanet-idrid", allow_pickle=True, device="cpu")
    assert loaded.identity["revision"] == sha and loaded.identity["file"] == "runs/idrid/best_model.pt"
    assert loaded.identity["converted_from"] == "the original HydraLA-Net layout"
    assert_golden(loaded, golden)
    # Offline, the cached snapshot is searched for the weights file the same way.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = load_model("lab/hydralanet-idrid", allow_pickle=True, device="cpu")
    assert offline.identity["file"] == "runs/idrid/best_model.pt" and offline.identity["revision"] == sha


def test_hub_space_sources_and_naming_the_file(hub, tmp_path, monkeypatch):
    model, state = tiny_original(seed=7)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    sha = hub.add_commit(
        "someone/HydraLA-Net-demo",
        {
            "app.py": b"import gradio\n",
            "requirements.txt": b"torch\n",
            "runs/exp1/best_model.pt": buffer.getvalue(),
            "runs/exp2/model.pt": buffer.getvalue(),
        },
        repo_type="space",
    )

    with pytest.raises(
        HubError,
        match=r"spaces/someone/HydraLA-Net-demo: 2 weights files \(runs/exp1/best_model.pt, "
        r"runs/exp2/model.pt\); name one: spaces/someone/HydraLA-Net-demo\[@revision\]:PATH",
    ):
        load_model("spaces/someone/HydraLA-Net-demo", allow_pickle=True)
    with pytest.raises(HubError, match="not found"):
        load_model("someone/HydraLA-Net-demo", allow_pickle=True)  # a model repo of that name does not exist

    source = f"spaces/someone/HydraLA-Net-demo@{sha}:runs/exp2/model.pt"
    loaded = load_model(source, allow_pickle=True, device="cpu")
    assert loaded.identity["file"] == "runs/exp2/model.pt" and loaded.identity["revision"] == sha
    assert (loaded.config.model.encoder, loaded.config.model.decoder_channels) == ("resnet18", 8)
    assert same_function(loaded.model, model)
    assert any(path.startswith("/spaces/someone/HydraLA-Net-demo/resolve/") for _, path in hub.requests)

    with pytest.raises(HubError, match=r"no file 'runs/exp3/best_model.pt' in the repo"):
        load_model("spaces/someone/HydraLA-Net-demo:runs/exp3/best_model.pt", allow_pickle=True)

    # Offline, the cached copy of the Space's file serves the same source.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = load_model(source, allow_pickle=True, device="cpu")
    assert offline.identity["file"] == "runs/exp2/model.pt" and same_function(offline.model, model)


# --------------------------------------------------------------------------- convert and use


def test_convert_writes_a_folder_that_needs_no_pickle(tmp_path, best_model, golden):
    out = tmp_path / "converted"
    assert main(["convert", str(best_model), "--out", str(out)]) == 2  # no opt-in: refused
    assert not out.exists()
    assert (
        main(
            [
                "convert",
                str(best_model),
                "--out",
                str(out),
                "--allow-pickle",
                "--name",
                "idrid-original",
                "--threshold",
                "EX=0.4",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = load_model(out, device="cpu")  # safetensors + config.json: no pickle anywhere
    assert_golden(loaded, golden)
    assert loaded.config.name == "idrid-original" and loaded.config.thresholds["EX"] == 0.4
    assert loaded.config.thresholds["HE"] == 0.35 and loaded.config.preprocessing.crop == "centre_square"
    assert loaded.identity["converted_from"] == "the original HydraLA-Net layout"
    card = (out / "README.md").read_text()
    assert "Converted by `python -m hydralanet convert` from the original HydraLA-Net layout" in card
    assert loaded.config.provenance["source_sha256"] in card
    assert "Unknown" in card and "python -m training.evaluate --model" in card


def test_cli_predict_with_original_checkpoint_and_crop(tmp_path, retina, capsys):
    import cv2

    model, state = tiny_original(seed=3)
    folder = tmp_path / "orig"
    folder.mkdir()
    torch.save(state, folder / "best_model.pt")
    photo = tmp_path / "wide.png"
    wide = np.zeros((700, 1000, 3), np.uint8)
    wide[:, 150:850] = cv2.resize(retina, (700, 700))
    cv2.imwrite(str(photo), cv2.cvtColor(wide, cv2.COLOR_RGB2BGR))
    # The command's exit status (``python -m hydralanet`` exits with main's: test_cli.py) and message.
    refused = main(["predict", str(photo), "--model", str(folder), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert refused == 2 and "refusing to unpickle" in capsys.readouterr().err
    for crop in ("centre_square", "fov"):
        out = tmp_path / crop
        argv = [str(photo), "--model", str(folder), "--allow-pickle", "--out", str(out), "--device", "cpu"]
        assert main(["predict", *argv] + ([] if crop == "centre_square" else ["--crop", "fov"])) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["preprocessing"]["crop"] == crop  # centre_square: the converted default
        assert summary["model"]["file"] == "best_model.pt"
        assert summary["model"]["converted_from"] == "the original HydraLA-Net layout"
        mask = cv2.imread(str(out / "wide" / "EX.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (700, 1000)


def test_app_shows_the_converted_model_and_segments_the_sample(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    _, state = tiny_original(seed=4)
    folder = tmp_path / "space-files"
    folder.mkdir()
    torch.save(state, folder / "best_model.pt")
    monkeypatch.setenv("HYDRALANET_MODEL", str(folder))

    monkeypatch.delenv("HYDRALANET_ALLOW_PICKLE", raising=False)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    assert any("refusing to unpickle" in w.value and "bundled model instead" in w.value for w in at.warning)

    monkeypatch.setenv("HYDRALANET_ALLOW_PICKLE", "1")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    assert not at.exception and not at.warning
    assert any("hydralanet-original (best_model.pt)" in m.value for m in at.sidebar.markdown)
    assert any("Converted from the original HydraLA-Net layout" in i.value for i in at.sidebar.info)
    assert any("Weights file: best_model.pt" in c.value and "centre square" in c.value for c in at.sidebar.caption)
    assert at.sidebar.selectbox(key="crop").value == "centre_square"
    next(b for b in at.button if b.label == "Try a sample").click()
    at.run()
    assert not at.exception and not at.error
    assert at.session_state.model_runs == 1
    rows = {row["lesion"].split()[0]: row for row in at.table[0].value.to_dict("records")}
    assert set(rows) == {"EX", "HE", "MA", "SE"}


def test_load_model_or_bundled_passes_the_opt_in(best_model):
    loaded, warning = load_model_or_bundled(str(best_model), allow_pickle=True, device="cpu")
    assert warning is None and loaded.identity["converted_from"]
    loaded, warning = load_model_or_bundled(str(best_model), device="cpu")
    assert "refusing to unpickle" in warning and loaded.identity["source"] == "bundled"


def test_unwrap_state_leaves_other_objects_alone():
    t = torch.zeros(1)
    assert unwrap_state({"a": t}) == {"a": t}
    assert unwrap_state({"model": {"module.a": t, "module.b": t}}) == {"a": t, "b": t}
    assert unwrap_state({"module.a": t, "b": t}) == {"module.a": t, "b": t}  # only a prefix on every key
    assert unwrap_state({"model": "resnet50"}) is None and unwrap_state([t]) is None
