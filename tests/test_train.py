"""training.train and training.config: tiny runs on synthetic data (resnet18, D = 8, 64 px).

The uninterrupted and the killed runs are subprocesses (as users start them) with one thread
each, so two can share the two cores; the resume and the short runs run in this process, with
one thread too (cpu-small's setting): results are comparable bit for bit.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hydralanet import load_model, save_checkpoint
from training import runfolder
from training import train as train_module
from training.config import TrainConfig, load_config
from training.data import read_mask
from training.prepare import main as prepare_main
from training.prepare import read_manifest
from training.synthetic import write_dataset

ROOT = Path(__file__).resolve().parent.parent
TINY = ["preprocessing.input_size=64", "model.decoder_channels=8", "num_workers=0", "batch_size=2",
        "keep_epochs=1", "epochs=2", "warmup_epochs=1"]  # fmt: skip


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), NO_ALBUMENTATIONS_UPDATE="1")
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _train_command(manifest: Path, out: Path, *extra: str, settings: list[str] = TINY) -> list[str]:
    sets = [arg for s in settings for arg in ("--set", s)]
    return [sys.executable, "-m", "training.train", "--manifest", str(manifest), "--config", "cpu-small",
            "--out", str(out), *sets, *extra]  # fmt: skip


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_dataset(root / "syn", n=10, seed=3, size=128)
    assert prepare_main(["--synthetic", str(root / "syn"), "--out", str(root / "manifest.csv")]) == 0
    return root / "manifest.csv"


# ``python -c KILLED_IN_EPOCH_2 ARGS...``: ``python -m training.train ARGS`` that SIGKILLs itself
# (no handler, no cleanup) on an event: epoch 2's second batch, after epoch 1's checkpoint and one
# optimizer step of epoch 2, however fast or slow the machine.
KILLED_IN_EPOCH_2 = """
import os, signal, sys
import training.train as train
end_epoch, loss = train._end_epoch, train.supervised_loss
batches = []
def ended(run, epoch, *args):
    stop = end_epoch(run, epoch, *args)
    if epoch == 0:
        batches.append(0)
    return stop
def loss_or_die(*args, **kwargs):
    if batches:
        batches[0] += 1
        if batches[0] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    return loss(*args, **kwargs)
train._end_epoch, train.supervised_loss = ended, loss_or_die
sys.exit(train.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def runs(manifest, tmp_path_factory) -> dict[str, Path]:
    """Run A trains 2 epochs uninterrupted; run B is SIGKILLed during epoch 2 and resumed.

    A and B's first part run side by side (one core each); B's resume runs in this process (no
    second start-up of torch and the training code; one thread, as cpu-small sets) while A ends.
    """
    base = tmp_path_factory.mktemp("runs")
    a, b = base / "a", base / "b"
    proc_a = subprocess.Popen(_train_command(manifest, a), cwd=ROOT, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    killed_b = [sys.executable, "-c", KILLED_IN_EPOCH_2, *_train_command(manifest, b)[3:]]
    proc_b = subprocess.Popen(killed_b, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    assert proc_b.wait(timeout=300) == -signal.SIGKILL
    killed_state = json.loads((b / "last" / "training_state.json").read_text())
    resume_log, threads = io.StringIO(), torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(resume_log):
            resumed = train_module.main(_train_command(manifest, b, "--resume")[3:])
    finally:  # the process-wide torch state a run sets (as the restore_torch_state fixture)
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)
    assert resumed == 0, resume_log.getvalue()[-3000:]
    out_a, _ = proc_a.communicate(timeout=300)
    assert proc_a.returncode == 0, out_a
    return {"a": a, "b": b, "killed_epoch": killed_state["epoch"], "resume_log": resume_log.getvalue(), "log_a": out_a}


def test_run_writes_checkpoints_logs_and_curves(runs):
    a = runs["a"]
    records = [json.loads(line) for line in (a / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    for r in records:
        assert set(r["val"]) == {"EX", "HE", "MA", "SE", "macro", "loss"}
        for c in ("EX", "HE", "MA", "SE", "macro"):
            assert set(r["val"][c]) == {"aupr", "f1", "iou", "precision", "recall"}
    assert records[-1]["step"] == 2 * records[0]["step"]
    assert (a / "curves.png").stat().st_size > 10_000
    assert TrainConfig.from_dict(json.loads((a / "train_config.json").read_text())) == load_config("cpu-small", TINY)
    best_epoch = max(range(2), key=lambda e: (records[e]["val"]["macro"]["f1"], -e))

    for name in ("best", "last"):
        loaded = load_model(a / name, device="cpu")
        assert loaded.config.model.decoder_channels == 8 and loaded.config.preprocessing.input_size == 64
        prov = loaded.config.provenance
        assert prov["trained"] and prov["split_sizes"]["train"] > 0 and "training.train" in prov["command"]
        assert prov["training_config"]["epochs"] == 2 and prov["code_version"]
        assert "not a medical device" in (a / name / "README.md").read_text()
    best = load_model(a / "best", device="cpu").config
    assert best.provenance["epoch"] == best_epoch + 1
    assert best.thresholds == records[best_epoch]["thresholds"]  # tuned on validation, stored in the checkpoint
    assert not (a / "best" / "training_state.json").exists() and (a / "last" / "training_state.safetensors").exists()
    # keep_epochs=1: every epoch's weights, 1-based; the last one is last/'s, the best one best/'s
    assert sorted(p.name for p in (a / "epochs").iterdir()) == ["001", "002"]
    assert not (a / "epochs" / "002" / "training_state.json").exists()
    kept = {e: load_file(str(a / "epochs" / f"{e:03d}" / "model.safetensors")) for e in (1, 2)}
    for name, epoch in (("last", 2), ("best", best_epoch + 1)):
        weights = load_file(str(a / name / "model.safetensors"))
        assert all(torch.equal(weights[k], kept[epoch][k]) for k in weights)
    assert load_model(a / "epochs" / f"{best_epoch + 1:03d}", device="cpu").config.thresholds == best.thresholds


def test_average_states_by_hand():
    from training.average import average_states

    a = {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([4.0, 6.0]), "n": torch.tensor(7)}
    out = average_states([a, b], [1.0, 3.0])  # weights normalised: 1/4 and 3/4
    assert torch.equal(out["w"], torch.tensor([3.0, 5.0])) and out["n"].item() == 7  # counters: the last run's
    with pytest.raises(ValueError, match="run 1 does not have the same tensors"):
        average_states([{"w": torch.zeros(3)}, b], [1.0, 1.0])


def test_average_runs_writes_a_validated_checkpoint(runs, manifest, tmp_path, capsys):
    from training import average

    # Run B is run A moved along a random direction (A and B of the fixture are identical).
    a, b = runs["a"], tmp_path / "b"
    shutil.copytree(a, b, ignore=shutil.ignore_patterns("cache"))
    moved = load_model(a / "best", device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in moved.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_checkpoint(moved.model, b / "best", moved.config)
    assert average.main(["--runs", str(a), str(b), "--manifest", str(manifest), "--out", str(tmp_path / "avg")]) == 0
    assert "validation AUPR EX" in capsys.readouterr().out
    wa, wb = load_file(str(a / "best" / "model.safetensors")), load_file(str(b / "best" / "model.safetensors"))
    avg = load_model(tmp_path / "avg" / "best", device="cpu")
    state = avg.model.state_dict()
    key = next(k for k in wa if wa[k].ndim > 1 and not torch.equal(wa[k], wb[k]))  # a conv the runs disagree on
    assert torch.allclose(state[key], (wa[key] + wb[key]) / 2, atol=1e-6)
    prov = avg.config.provenance
    assert prov["averaged"]["runs"] == [str(a), str(b)] and prov["averaged"]["weights"] == [1.0, 1.0]
    assert set(prov["metrics"]["val"]) == {"EX", "HE", "MA", "SE", "macro"}
    # All weight on run A: its weights exactly, and validation gives run A's own numbers back.
    assert average.main(["--runs", str(a), str(b), "--weights", "1,0", "--manifest", str(manifest),
                         "--out", str(tmp_path / "only_a")]) == 0  # fmt: skip
    only_a = load_model(tmp_path / "only_a" / "best", device="cpu")
    assert torch.equal(only_a.model.state_dict()[key], wa[key])
    own = load_model(a / "best", device="cpu").config
    assert only_a.config.thresholds == pytest.approx(own.thresholds)
    for c in ("EX", "HE", "MA", "SE"):
        assert only_a.config.provenance["metrics"]["val"][c]["f1"] == pytest.approx(
            own.provenance["metrics"]["val"][c]["f1"]
        )


def test_average_takes_the_kept_epochs_of_one_run(runs, manifest, tmp_path, capsys):
    from training import average

    e1, e2 = runs["a"] / "epochs" / "001", runs["a"] / "epochs" / "002"
    assert average.main(["--runs", str(e1), str(e2), "--manifest", str(manifest), "--out", str(tmp_path / "swa")]) == 0
    w1, w2 = (load_file(str(e / "model.safetensors")) for e in (e1, e2))
    swa = load_model(tmp_path / "swa" / "best", device="cpu")
    key = next(k for k in w1 if w1[k].ndim > 1 and not torch.equal(w1[k], w2[k]))
    assert torch.allclose(swa.model.state_dict()[key], (w1[key] + w2[key]) / 2, atol=1e-6)
    assert swa.config.provenance["averaged"]["runs"] == [str(e1), str(e2)]
    # A checkpoint folder outside any run has no settings to validate with.
    shutil.copytree(e1, tmp_path / "lone" / "ckpt")
    args = ["--manifest", str(manifest), "--out", str(tmp_path / "none")]
    assert average.main(["--runs", str(e2), str(tmp_path / "lone" / "ckpt"), *args]) == 2
    assert "no train_config.json in it or the run above it" in capsys.readouterr().err


def test_average_runs_refuses_what_cannot_be_averaged(runs, manifest, tmp_path, capsys):
    from training import average
    from training.untrained import make_untrained

    other = tmp_path / "other"
    make_untrained(other / "best", decoder_channels=4, input_size=64)
    args = ["--manifest", str(manifest), "--out", str(tmp_path / "avg")]
    assert average.main(["--runs", str(runs["a"]), str(other), *args]) == 2
    assert "differs from" in capsys.readouterr().err
    assert average.main(["--runs", str(runs["a"]), str(tmp_path / "nothing"), *args]) == 2
    assert "no best/ checkpoint" in capsys.readouterr().err
    assert average.main(["--runs", str(runs["a"]), str(runs["b"]), "--weights", "1", *args]) == 2
    assert "one number >= 0 per run (2)" in capsys.readouterr().err
    assert not (tmp_path / "avg").exists()


def test_resume_after_sigkill_matches_uninterrupted_run(runs):
    a, b = runs["a"], runs["b"]
    assert runs["killed_epoch"] == 0  # killed after epoch 1's checkpoint, inside epoch 2
    assert "resuming from" in runs["resume_log"] and "after epoch 1" in runs["resume_log"]
    assert (b / "metrics.jsonl").read_text() == (a / "metrics.jsonl").read_text()  # every line, exactly
    for name in ("best", "last"):  # the same weights, bit for bit (the file header's key order may differ)
        weights_a, weights_b = (load_file(str(run / name / "model.safetensors")) for run in (a, b))
        assert weights_a.keys() == weights_b.keys()
        assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_refuses_to_overwrite_a_run_and_checks_resume_settings(runs, manifest, capsys):
    args = ["--manifest", str(manifest), "--config", "cpu-small", "--out", str(runs["a"])]
    tiny = [a for s in TINY for a in ("--set", s)]
    with pytest.raises(SystemExit) as exit_info:
        train_module.main(args + tiny)
    assert exit_info.value.code == 2 and "already holds a run; pass --resume" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_module.main(args + tiny + ["--set", "lr=0.5", "--resume"])
    assert "--resume: the run was trained with other settings: lr 0.002 -> 0.5" in capsys.readouterr().err


@pytest.fixture
def restore_torch_state():
    """An in-process run sets process-wide torch state (deterministic mode, thread count)."""
    threads = torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(threads)


def test_nan_loss_stops_with_message_and_keeps_last(manifest, tmp_path, monkeypatch, capsys, restore_torch_state):
    calls = {"n": 0}
    real = train_module.DualLoss

    class BreaksInEpoch2(real):
        def forward(self, logits, targets, valid=None):
            if self.training:
                calls["n"] += 1
            loss = super().forward(logits, targets, valid)
            return loss * float("nan") if calls["n"] > 3 else loss  # epoch 1 has 3 batches

    monkeypatch.setattr(train_module, "DualLoss", BreaksInEpoch2)
    args = ["--manifest", str(manifest), "--config", "cpu-small", "--out", str(tmp_path / "run")]
    assert train_module.main(args + [a for s in TINY for a in ("--set", s)]) == 1
    err = capsys.readouterr().err
    assert "loss is nan at epoch 2, batch 1/3" in err and f"last good checkpoint is {tmp_path / 'run' / 'last'}" in err
    state = json.loads((tmp_path / "run" / "last" / "training_state.json").read_text())
    assert state["epoch"] == 0
    load_model(tmp_path / "run" / "last", device="cpu")  # still a good checkpoint
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1


def test_time_limit_stops_after_the_epoch_that_would_overrun(manifest, tmp_path, capsys, restore_torch_state):
    args = ["--manifest", str(manifest), "--config", "cpu-small", "--out", str(tmp_path / "run")]
    settings = TINY[:-2] + ["epochs=5", "time_limit_minutes=0.0001"]  # 6 ms: one epoch already passes it
    assert train_module.main(args + [a for s in settings for a in ("--set", s)]) == 0
    out = capsys.readouterr().out
    assert "time limit:" in out and "stopping after epoch 1/5" in out
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1
    assert json.loads((tmp_path / "run" / "last" / "training_state.json").read_text())["epoch"] == 0
    load_model(tmp_path / "run" / "best", device="cpu")


def test_stop_epoch_stops_part_way_and_keeps_the_whole_schedule(manifest, tmp_path, capsys, restore_torch_state):
    args = ["--manifest", str(manifest), "--config", "cpu-small", "--out", str(tmp_path / "run")]
    settings = TINY[:-2] + ["epochs=5", "stop_epoch=2", "cosine=true"]
    assert train_module.main(args + [a for s in settings for a in ("--set", s)]) == 0
    assert "stop_epoch: stopping after epoch 2/5" in capsys.readouterr().out
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [0, 1]
    # The learning rate follows the 5-epoch cosine, not a 2-epoch one: still well above its floor.
    assert lines[-1]["lr"] > 0.3 * load_config("cpu-small").lr


def test_oversampling_draws_images_with_the_rare_lesion_more_often(
    manifest, tmp_path, capsys, monkeypatch, restore_torch_state
):
    drawn: list[int] = []
    original = train_module.WeightedEpochSampler.__iter__

    def recording(self):
        indices = list(original(self))
        drawn.extend(indices)
        return iter(indices)

    monkeypatch.setattr(train_module.WeightedEpochSampler, "__iter__", recording)
    args = ["--manifest", str(manifest), "--config", "cpu-small", "--out", str(tmp_path / "run")]
    settings = TINY[:-2] + ["epochs=3", "oversample=50,1,1,1"]
    assert train_module.main(args + [a for s in settings for a in ("--set", s)]) == 0
    out = capsys.readouterr().out
    assert "oversampling {'EX': 50.0, 'HE': 1.0, 'MA': 1.0, 'SE': 1.0}" in out
    rows = [r for r in read_manifest(manifest) if r["split"] == "train"]
    has_ex = [bool(read_mask(r["EX"]).any()) for r in rows]
    assert 0 < sum(has_ex) < len(rows)  # the fixture has both kinds (3 of 6 training images have EX)
    share = sum(has_ex[i] for i in drawn) / len(drawn)  # expected 150 / 153; 1/2 without oversampling
    assert len(drawn) == 3 * len(rows) and share >= 0.85
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["oversample"] == [50.0, 1.0, 1.0, 1.0]


def test_ddp_two_cpu_processes_with_gloo(manifest, tmp_path):
    out = tmp_path / "ddp"
    command = _train_command(manifest, out, settings=TINY + ["epochs=1"])
    command[1:3] = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "training.train"]
    result = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "device cpu x 2" in result.stdout
    assert result.stdout.count("epoch 1/1 done") == 1  # only rank 0 logs
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert load_model(out / "best", device="cpu").config.provenance["trained"]


# --------------------------------------------------------------------------- pure pieces


def test_get_lr_warmup_then_cosine():
    cfg = load_config("cpu-small", ["lr=1.0", "min_lr_ratio=0.1"])
    lr = [train_module.get_lr(s, cfg, total_steps=10, warmup_steps=2) for s in range(10)]
    assert lr[:2] == [0.5, 1.0]
    assert lr[2] == 1.0 and lr[-1] > 0.1 and all(x >= y for x, y in zip(lr[2:], lr[3:]))
    assert train_module.get_lr(10, cfg, total_steps=10, warmup_steps=2) == pytest.approx(0.1)
    published = load_config("published")
    assert {train_module.get_lr(s, published, 100, 0) for s in range(100)} == {1e-5}


def test_frozen_batchnorm_keeps_statistics_and_affine():
    from hydralanet import HydraLANet

    model = HydraLANet(encoder="resnet18", decoder_channels=8)
    model.train()
    train_module.freeze_batchnorm(model)
    bn = model.encoder.stem[1]
    before = bn.running_mean.clone()
    model(torch.randn(2, 3, 64, 64)).mean().backward()
    assert not bn.training and torch.equal(bn.running_mean, before)
    assert bn.weight.grad is None and not bn.weight.requires_grad
    assert model.head.branches["EX"][0].weight.grad is not None


def test_deep_supervision_adds_small_weighted_aux_terms():
    """Known numbers: a stand-in loss that is the mean logit, logits of constant 1, 2, 3 and 4
    (main, then the three auxiliary heads) and weights 0.5, 0.25, 0.125:
    1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 4 = 3.25; without deep supervision, the main term, 1."""
    cfg = load_config("cpu-small", ["model.deep_supervision=true", "aux_weights=0.5,0.25,0.125"])
    masks, valid = torch.zeros(2, 4, 8, 8), torch.ones(2, 1, 8, 8)
    logits, *aux = (torch.full((2, 4, 8, 8), float(v)) for v in (1, 2, 3, 4))

    def mean_logit(x, m, v):
        assert m is masks and v is valid
        return x.mean()

    assert train_module.supervised_loss((logits, aux), masks, valid, mean_logit, cfg).item() == 3.25
    assert train_module.supervised_loss(logits, masks, valid, mean_logit, cfg).item() == 1.0


def test_training_state_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    for _ in range(2):
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    gen = torch.Generator().manual_seed(5)
    tensors, meta = runfolder.training_state(opt, scaler, gen, {"epoch": 4})
    from safetensors.torch import save_file

    save_file(tensors, str(tmp_path / runfolder.STATE_TENSORS))
    (tmp_path / runfolder.STATE_JSON).write_text(json.dumps(meta))
    expected = (torch.rand(3), torch.rand(3, generator=gen), __import__("random").random())

    fresh = torch.optim.AdamW(model.parameters(), lr=0.1)
    gen2 = torch.Generator()
    assert runfolder.restore_training_state(tmp_path, fresh, scaler, gen2)["epoch"] == 4
    restored = (torch.rand(3), torch.rand(3, generator=gen2), __import__("random").random())
    assert (
        torch.equal(restored[0], expected[0]) and torch.equal(restored[1], expected[1]) and restored[2] == expected[2]
    )
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for pid, state in a["state"].items():
        assert all(torch.equal(state[k], b["state"][pid][k]) for k in state)


# --------------------------------------------------------------------------- config


def test_named_configs_and_overrides(tmp_path):
    published = load_config("published")
    assert (published.lr, published.batch_size, published.epochs, published.model.encoder) == (1e-5, 2, 125, "resnet50")
    assert published.freeze_bn and published.scale == (0.88, 1.25) and published.class_weights == (1, 1, 5, 1)
    cfg = load_config("cpu-small", ["lr=3e-4", "model.encoder=resnet34", "scale=0.9,1.1", "cosine=false"])
    assert (cfg.lr, cfg.model.encoder, cfg.scale, cfg.cosine) == (3e-4, "resnet34", (0.9, 1.1), False)
    (tmp_path / "c.json").write_text(json.dumps({"epochs": 7, "model": {"decoder_channels": 16}}))
    from_file = load_config(str(tmp_path / "c.json"), ["seed=1"])
    assert (from_file.epochs, from_file.model.decoder_channels, from_file.seed, from_file.lr) == (7, 16, 1, 1e-5)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lrr=1", "unknown setting 'lrr' (did you mean 'lr'?); known: model.encoder, "),
        ("model.encodr=resnet18", "unknown setting 'model.encodr' (did you mean 'model.encoder'?)"),
        ("epochs=2.5", "epochs=2.5: expected an integer"),
        ("lr=fast", "lr='fast': expected a number"),
        ("scale=1.0", "scale=1.0: expected 2 values"),
        ("amp=fp8", "amp='fp8' is not supported; choose one of auto, off, bf16, fp16"),
        ("tversky_over=pixel", "tversky_over='pixel' is not supported; choose one of image, batch"),
        ("model.encoder=vgg16", "encoder='vgg16' is not supported"),
        ("lr", "expected key=value"),
    ],
)
def test_bad_overrides_fail_with_a_clear_message(override, message, capsys):
    with pytest.raises(ValueError) as err:
        load_config("cpu-small", [override])
    assert message in str(err.value)
    with pytest.raises(SystemExit) as exit_info:
        train_module.main(["--manifest", "m.csv", "--out", "x", "--set", override])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_unknown_config_name():
    from training.config import NAMED_CONFIGS

    with pytest.raises(ValueError) as err:
        load_config("gpu-huge")
    assert f"neither a named config ({', '.join(NAMED_CONFIGS)}) nor a JSON file" in str(err.value)
    assert "published" in NAMED_CONFIGS and "cpu-small" in NAMED_CONFIGS
