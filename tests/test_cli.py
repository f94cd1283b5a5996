from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from hydralanet.cli import main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, retina) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    cv2.imwrite(str(folder / "retina.png"), cv2.cvtColor(retina, cv2.COLOR_RGB2BGR))
    return folder


def test_predict_on_real_photo_with_bundled_model(photo_dir, tmp_path):
    """The README's command, as a user runs it, on the bundled model."""
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hydralanet",
            "predict",
            str(photo_dir / "retina.png"),
            "--out",
            str(out),
            "--save-probabilities",
            "--device",
            "cpu",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    folder = out / "retina"
    for lesion in ["EX", "HE", "MA", "SE"]:
        mask = cv2.imread(str(folder / f"{lesion}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (1411, 1411) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        prob = cv2.imread(str(folder / f"prob_{lesion}.png"), cv2.IMREAD_UNCHANGED)
        assert prob.shape == (1411, 1411) and prob.dtype == np.uint16
        # The mask is exactly the probability map cut at the threshold (to 16-bit precision).
        threshold = json.loads((out / "summary.json").read_text())["thresholds"][lesion]
        disagree = (prob.astype(np.float64) / 65535 >= threshold) != (mask > 0)
        assert disagree.mean() < 1e-4
    overlay = cv2.imread(str(folder / "overlay.png"))
    assert overlay.shape == (1411, 1411, 3)

    rows = list(csv.DictReader((out / "summary.csv").read_text().splitlines()))
    assert [r["lesion"] for r in rows] == ["EX", "HE", "MA", "SE"]
    assert set(rows[0]) >= {"image", "lesion", "threshold", "pixels", "coverage_pct", "count", "largest_px"}
    for row in rows:
        mask = cv2.imread(str(folder / f"{row['lesion']}.png"), cv2.IMREAD_UNCHANGED)
        assert int(row["pixels"]) == int(np.count_nonzero(mask))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["source"] == "bundled" and len(summary["model"]["sha256"]) == 64
    assert summary["preprocessing"]["clahe"] == "green" and summary["failed"] == []
    assert len(summary["results"]) == 4


def test_mixed_good_and_broken_files(photo_dir, tmp_path, tiny_checkpoint, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "text.png").write_bytes(b"not an image at all")
    good = (photo_dir / "retina.png").read_bytes()
    (bad / "cut.png").write_bytes(good[: len(good) // 3])
    cv2.imwrite(str(bad / "black.png"), np.zeros((200, 300, 3), np.uint8))
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(photo_dir),
            str(bad),
            str(tmp_path / "missing.jpg"),
            "--out",
            str(out),
            "--model",
            str(tiny_checkpoint),
            "--threshold",
            "EX=0.05",
            "--clahe",
            "lab",
            "--device",
            "cpu",
        ]
    )
    assert code == 1
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err_lines) == 5
    for name, reason in [
        ("empty.jpg", "empty"),
        ("text.png", "not a recognised image"),
        ("cut.png", "truncated"),
        ("black.png", "blank"),
        ("missing.jpg", "not found"),
    ]:
        assert any(name in line and reason in line for line in err_lines), (name, err_lines)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 1 and len(summary["failed"]) == 5
    assert summary["thresholds"]["EX"] == 0.05 and summary["preprocessing"]["clahe"] == "lab"
    ex = cv2.imread(str(out / "retina" / "EX.png"), cv2.IMREAD_UNCHANGED)
    assert ex.max() == 255  # a threshold of 0.05 is below the untrained model's ~0.12 everywhere in the FOV


def test_same_stem_from_two_folders_does_not_overwrite(photo_dir, tmp_path, tiny_checkpoint):
    other = tmp_path / "other"
    other.mkdir()
    (other / "retina.png").write_bytes((photo_dir / "retina.png").read_bytes())
    out = tmp_path / "out"
    assert main(["predict", str(photo_dir), str(other), "--out", str(out), "--model", str(tiny_checkpoint)]) == 0
    assert (out / "retina" / "EX.png").exists() and (out / "retina_2" / "EX.png").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--threshold", "XX=0.3"], "LESION=VALUE"),
        (["--threshold", "EX=1.5"], "must be in [0, 1]"),
        (["--clahe", "hist"], "invalid choice"),
    ],
)
def test_bad_arguments(photo_dir, tmp_path, args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(photo_dir), "--out", str(tmp_path / "o"), *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_unloadable_model_is_one_line(photo_dir, tmp_path, capsys):
    code = main(["predict", str(photo_dir), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "nowhere" in err and "no such file or folder" in err


def test_fp16_on_cpu_is_one_line_and_writes_nothing(photo_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(["predict", str(photo_dir / "retina.png"), "--out", str(out), "--device", "cpu", "--precision", "fp16"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: precision='fp16' needs a CUDA GPU (device is cpu); use auto (bf16 where the CPU has it) or fp32"
    ]
    assert not out.exists()


def test_an_unexpected_error_costs_one_photo_not_the_batch(photo_dir, tmp_path, monkeypatch, capsys):
    """A photo whose processing raises something unforeseen is listed with its reason; the
    others are written and so is the summary."""
    import shutil

    import hydralanet.inference.segment as inference

    batch = tmp_path / "batch"
    batch.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        shutil.copy(photo_dir / "retina.png", batch / name)
    real_predict = inference.predict
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated out-of-memory\nwith a second line")
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(inference, "predict", flaky)
    out = tmp_path / "out"
    assert main(["predict", str(batch), "--out", str(out), "--device", "cpu", "--no-reading"]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 2 and [f["image"] for f in summary["failed"]] == [str(batch / "b.png")]
    assert summary["failed"][0]["error"] == "RuntimeError: simulated out-of-memory"
    assert (out / "a" / "EX.png").exists() and (out / "c" / "EX.png").exists() and not (out / "b").exists()
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert sorted({r["image"] for r in rows}) == ["a", "c"] and len(rows) == 8
    assert "error: " + str(batch / "b.png") + ": RuntimeError: simulated out-of-memory" in capsys.readouterr().err


def test_help_and_version_answer_without_loading_torch():
    """The front door is instant: --help and --version import neither torch nor OpenCV."""
    code = (
        "import sys\n"
        "from hydralanet.cli import main\n"
        "for argv in (['--help'], ['predict', '--help'], ['--version']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('loaded:', 'torch' in sys.modules, 'cv2' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("loaded: False False")
    assert "hydralanet 0.1.0" in result.stdout and "DIR/<stem>/findings.json" in result.stdout
    assert "``" not in result.stdout  # plain text, no reStructuredText markup
