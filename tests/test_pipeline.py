"""The batch pipeline behind predict: workers, --list, --resume, kill and resume, ranks, shards."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from hydralanet.batch.pipeline import rank_share
from hydralanet.batch.runner import expand_inputs, read_list
from hydralanet.cli import main

REPO = Path(__file__).resolve().parent.parent
MASKS = ["EX.png", "HE.png", "MA.png", "SE.png"]


@pytest.fixture(scope="module")
def small_photos(tmp_path_factory, retina) -> Path:
    """Six 192 px photos of the sample fundus, each shifted a little (different outputs)."""
    folder = tmp_path_factory.mktemp("small")
    small = cv2.resize(retina, (192, 192), interpolation=cv2.INTER_AREA)
    for i in range(6):
        shifted = np.roll(small, 3 * i, axis=1)
        cv2.imwrite(str(folder / f"p{i:02d}.png"), cv2.cvtColor(shifted, cv2.COLOR_RGB2BGR))
    return folder


def _predict(*args: str, model: Path) -> int:
    return main(["predict", *args, "--model", str(model), "--device", "cpu"])


def _outputs(out: Path) -> dict[str, bytes]:
    """Every photo's files (not the records: they hold the run's index) and the merged tables."""
    files = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if path.is_file() and not rel.startswith(".") and path.name != "record.json" and rel != "summary.json":
            files[rel] = path.read_bytes()
    summary = json.loads((out / "summary.json").read_text())
    summary.pop("seconds")
    files["summary.json"] = json.dumps(summary).encode()
    return files


def test_rank_share_splits_without_duplicates_or_padding():
    for count in range(0, 23):
        for world in range(1, 5):
            shares = [list(rank_share(count, r, world)) for r in range(world)]
            flat = sorted(i for share in shares for i in share)
            assert flat == list(range(count))  # every photo once, none repeated
            assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert list(rank_share(10, 1, 3)) == [1, 4, 7]
    with pytest.raises(ValueError, match="rank must be in"):
        rank_share(10, 3, 3)


def test_workers_and_batches_give_the_serial_outputs(small_photos, tmp_path, tiny_checkpoint):
    """Two workers each side of the model, and batches of 4, write byte-identical files and
    summaries to the serial path (workers 0)."""
    runs = {}
    for label, extra in [("serial", ["--workers", "0"]), ("workers", ["--workers", "2"])]:
        out = tmp_path / label
        assert (
            _predict(str(small_photos), "--out", str(out), "--save-probabilities", *extra, model=tiny_checkpoint) == 0
        )
        runs[label] = _outputs(out)
    assert runs["serial"] == runs["workers"]
    assert sum(name.endswith("/EX.png") for name in runs["serial"]) == 6
    rows = list(csv.DictReader((tmp_path / "serial" / "summary.csv").open()))
    assert [r["image"] for r in rows[::4]] == [f"p{i:02d}" for i in range(6)]  # input order
    out = tmp_path / "batched"
    assert (
        _predict(str(small_photos), "--out", str(out), "--batch-size", "4", "--no-reading", model=tiny_checkpoint) == 0
    )
    for i in range(6):
        for mask in MASKS:
            a = cv2.imread(str(out / f"p{i:02d}" / mask), cv2.IMREAD_UNCHANGED)
            b = cv2.imread(str(tmp_path / "serial" / f"p{i:02d}" / mask), cv2.IMREAD_UNCHANGED)
            assert (a != b).mean() < 1e-3  # a batch may differ from single photos by float rounding


def test_list_file_text_and_csv(small_photos, tmp_path, tiny_checkpoint):
    text = tmp_path / "photos.txt"
    text.write_text(f"# three photos\n{small_photos / 'p00.png'}\n\n{small_photos / 'p05.png'}\nmissing.png\n")
    assert read_list(text) == [small_photos / "p00.png", small_photos / "p05.png", tmp_path / "missing.png"]
    table = tmp_path / "photos.csv"
    table.write_text(f"id,Path\n1,{small_photos / 'p03.png'}\n2,{small_photos / 'p04.png'}\n")
    assert read_list(table) == [small_photos / "p03.png", small_photos / "p04.png"]
    bad = tmp_path / "bad.csv"
    bad.write_text("id,file_name\n1,a.png\n")
    with pytest.raises(ValueError, match=r"bad.csv: no 'path' or 'image' column \(columns: id, file_name\)"):
        read_list(bad)
    out = tmp_path / "out"
    assert _predict("--list", str(text), "--out", str(out), "--workers", "1", model=tiny_checkpoint) == 1
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert sorted({r["image"] for r in rows}) == ["p00", "p05"] and len(rows) == 8
    failures = list(csv.DictReader((out / "failures.csv").open()))
    assert failures == [{"image": str(tmp_path / "missing.png"), "error": "file not found"}]
    assert main(["predict", "--list", str(bad), "--out", str(tmp_path / "o2"), "--model", str(tiny_checkpoint)]) == 2


def test_folders_are_read_recursively_without_the_output_folder(small_photos, tmp_path):
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for rel in ["x.png", "a/y.jpg", "a/b/z.tif", ".hidden/h.png", "a/notes.txt", "out/p/EX.png"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    found = expand_inputs([root], exclude=root / "out")
    assert found == [root / "a/b/z.tif", root / "a/y.jpg", root / "x.png"]


def test_resume_skips_complete_photos_and_redoes_incomplete_ones(small_photos, tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    args = [str(small_photos), "--out", str(out), "--workers", "0", "--no-reading"]
    assert _predict(*args, model=tiny_checkpoint) == 0
    first = _outputs(out)
    stamp = {}
    for p in ("p00", "p01", "p02"):  # a time long past: a file rewritten now cannot carry it
        os.utime(out / p / "EX.png", ns=(10**18, 10**18))
        stamp[p] = (out / p / "EX.png").stat().st_mtime_ns
    (out / "p01" / "record.json").unlink()  # killed before its record: incomplete
    (out / "p02" / "overlay.png").unlink()  # a file lost: incomplete
    capsys.readouterr()
    assert _predict(*args, "--resume", model=tiny_checkpoint) == 0
    assert "6 of 6 images segmented (4 already done)" in capsys.readouterr().err
    assert (out / "p00" / "EX.png").stat().st_mtime_ns == stamp["p00"]  # skipped
    assert (out / "p01" / "EX.png").stat().st_mtime_ns != stamp["p01"]  # redone
    assert (out / "p02" / "EX.png").stat().st_mtime_ns != stamp["p02"]
    assert _outputs(out) == first
    # Other settings (a threshold) make every record stale: all are redone.
    assert _predict(*args, "--resume", "--threshold", "EX=0.2", model=tiny_checkpoint) == 0
    assert "already done" not in capsys.readouterr().err
    assert (out / "p00" / "EX.png").stat().st_mtime_ns != stamp["p00"]
    assert {r["threshold"] for r in csv.DictReader((out / "summary.csv").open()) if r["lesion"] == "EX"} == {"0.2"}


# ``python -c KILLED_AFTER_RECORDS OUT N ARGS...``: the command line ``ARGS`` SIGKILLs its whole
# process group (itself and its workers) as soon as a worker has written the N-th record.json in
# OUT: a kill on an event, wherever the run stands then, however fast or slow the machine.
KILLED_AFTER_RECORDS = """
import os, signal, sys
from pathlib import Path
import hydralanet.batch.pipeline as pipeline
from hydralanet.cli import main
out, n = Path(sys.argv[1]), int(sys.argv[2])
write = pipeline.write_photo_outputs
def write_then_die(*args, **kwargs):
    record = write(*args, **kwargs)
    if len(list(out.glob("*/record.json"))) >= n:
        os.killpg(0, signal.SIGKILL)
    return record
pipeline.write_photo_outputs = write_then_die
sys.exit(main(sys.argv[3:]))
"""


def test_sigkill_then_resume_gives_the_uninterrupted_outputs(small_photos, tmp_path, tiny_checkpoint):
    """A real run killed with SIGKILL after a few photos, then resumed: the same files and
    summary as a run that was never interrupted, each photo once."""
    photos = tmp_path / "photos"
    photos.mkdir()
    big = cv2.resize(cv2.imread(str(small_photos / "p00.png")), (384, 384))
    for i in range(6):
        cv2.imwrite(str(photos / f"q{i:02d}.png"), np.roll(big, 5 * i, axis=0))
    reference = tmp_path / "reference"
    assert _predict(str(photos), "--out", str(reference), "--workers", "0", model=tiny_checkpoint) == 0
    out = tmp_path / "out"
    command = [sys.executable, "-c", KILLED_AFTER_RECORDS, str(out), "3", "predict", str(photos), "--out", str(out)]
    command += ["--workers", "2", "--model", str(tiny_checkpoint), "--device", "cpu"]
    proc = subprocess.run(command, cwd=REPO, stderr=subprocess.DEVNULL, start_new_session=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    done_at_kill = len(list(out.glob("*/record.json")))
    assert done_at_kill in (3, 4), done_at_kill  # the 3rd; the other worker may have finished one more
    assert not (out / "summary.csv").exists()  # it died before any merge
    assert _predict(str(photos), "--out", str(out), "--resume", model=tiny_checkpoint) == 0
    assert _outputs(out) == _outputs(reference)
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(rows) == 4 * 6 and len({(r["image"], r["lesion"]) for r in rows}) == 4 * 6


def test_torchrun_two_processes_merge_the_one_process_summary(small_photos, tmp_path, tiny_checkpoint):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(5):
        (photos / f"p{i:02d}.png").write_bytes((small_photos / f"p{i:02d}.png").read_bytes())
    (photos / "p05.png").write_bytes(b"not an image")
    one = tmp_path / "one"
    assert _predict(str(photos), "--out", str(one), model=tiny_checkpoint) == 1
    two = tmp_path / "two"
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "hydralanet", "predict", str(photos),
         "--out", str(two), "--model", str(tiny_checkpoint), "--device", "cpu"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert (two / ".shards" / "rank0.jsonl").exists() and (two / ".shards" / "rank1.jsonl").exists()
    ranks = [[json.loads(line)["index"] for line in (two / ".shards" / f"rank{r}.jsonl").open()] for r in (0, 1)]
    assert ranks == [[0, 2, 4], [1, 3, 5]], result.stderr
    assert _outputs(two) == _outputs(one)
    assert "5 of 6 images segmented" in result.stderr
    failures = list(csv.DictReader((two / "failures.csv").open()))
    assert [f["image"] for f in failures] == [str(photos / "p05.png")]


def test_resume_redoes_photos_after_the_model_is_recalibrated(small_photos, tmp_path, tiny_checkpoint, capsys):
    """With every threshold given on the command line, only the calibration in config.json
    changes the probability files: a re-calibrated checkpoint must not keep the stale ones."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, model)
    out = tmp_path / "out"
    thresholds = ["--threshold", "EX=0.3", "--threshold", "HE=0.3", "--threshold", "MA=0.3", "--threshold", "SE=0.3"]
    args = [str(small_photos), "--out", str(out), "--workers", "0", "--no-reading", "--save-probabilities", *thresholds]
    assert _predict(*args, model=model) == 0
    before = (out / "p00" / "prob_EX.png").read_bytes()
    config = json.loads((model / "config.json").read_text())
    config["calibration"] = {c: [2.0, 1.0] for c in ("EX", "HE", "MA", "SE")}  # what training.calibrate writes
    (model / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert _predict(*args, "--resume", model=model) == 0
    assert "already done" not in capsys.readouterr().err
    assert (out / "p00" / "prob_EX.png").read_bytes() != before
