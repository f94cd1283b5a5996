"""The batch pipeline's speed and memory checks, as figures (docs/batch.md).

    python -m training.pipeline_check [--photos 200] [--size 256] [--model tiny|bundled]
        [--memory 50 500] [--memory-jpeg4288] [--only-memory] [--out DIR]

1. **Kill and resume**: ``predict`` over ``--photos`` photos is killed with SIGKILL (the whole
   process group) once a third of the photos have their record, then rerun with ``--resume``;
   every file (masks, overlay, findings, records) and the merged summary are compared byte for
   byte with an uninterrupted run's, and the summary's rows per lesion are counted.
2. **torchrun**: ``torchrun --standalone --nproc_per_node 2 -m hydralanet predict`` over the same
   photos on the CPU against the one-process run: same merged summary and files.
3. **Memory**: peak resident memory of the whole process tree (main process and workers, summed,
   sampled every 50 ms from ``/proc``) over ``--memory`` photo counts.

Photos are ``skimage.data.retina`` at ``--size`` px, each shifted a little; ``--model tiny`` (the
default) is a random ResNet-18, D = 8, 128 px checkpoint (``training.untrained``), so 200
photos take minutes, not an hour, on two cores; the pipeline's logic is the same for any model.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent


def make_photos(folder: Path, count: int, size: int) -> Path:
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    base = cv2.cvtColor(cv2.resize(data.retina(), (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
    for i in range(count):
        cv2.imwrite(str(folder / f"photo_{i:04d}.png"), np.roll(base, i % size, axis=1))
    return folder


def predict_command(photos: Path, out: Path, model: str | None, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "hydralanet", "predict", str(photos), "--out", str(out), "--device", "cpu"]
    return command + (["--model", model] if model else []) + list(extra)


def outputs(out: Path) -> dict[str, bytes]:
    """Every file of the run but the shards, and summary.json without its run time."""
    files = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if path.is_file() and not rel.startswith(".shards") and rel != "summary.json":
            files[rel] = path.read_bytes()
    summary = json.loads((out / "summary.json").read_text())
    summary.pop("seconds")
    files["summary.json"] = json.dumps(summary).encode()
    return files


def rows_per_lesion(out: Path) -> dict[str, int]:
    import csv

    counts: dict[str, int] = {}
    for row in csv.DictReader((out / "summary.csv").open()):
        counts[row["lesion"]] = counts.get(row["lesion"], 0) + 1
    return counts


def run(command: list[str], **kwargs: Any) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:6])} ... failed: {result.stderr.strip()[-500:]}")
    return time.perf_counter() - started


def kill_and_resume(photos: Path, root: Path, model: str | None, count: int) -> dict[str, Any]:
    reference = root / "uninterrupted"
    run(predict_command(photos, reference, model))
    out = root / "killed"
    proc = subprocess.Popen(
        predict_command(photos, out, model), cwd=REPO, stderr=subprocess.DEVNULL, start_new_session=True
    )
    while len(list(out.glob("*/record.json"))) < count // 3 and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = len(list(out.glob("*/record.json")))
    leftovers = len(list(out.glob("*/.*.tmp")))
    run(predict_command(photos, out, model, "--resume"))
    a, b = outputs(out), outputs(reference)
    return {
        "photos": count,
        "records_when_killed": done_at_kill,
        "temporary_files_left_by_the_kill": leftovers,
        "temporary_files_after_resume": len(list(out.glob("*/.*.tmp"))),
        "photo_folders": sum(p.is_dir() and not p.name.startswith(".") for p in out.iterdir()),
        "files_compared": len(b),
        "identical_to_uninterrupted": a == b,
        "different_files": sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))[:10],
        "summary_rows_per_lesion": rows_per_lesion(out),
    }


def torchrun_check(photos: Path, root: Path, model: str | None) -> dict[str, Any]:
    one = root / "uninterrupted"
    two = root / "torchrun"
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    command = predict_command(photos, two, model)
    command = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", *command[2:]]
    seconds = run(command)
    shards = [sum(1 for _ in (two / ".shards" / f"rank{r}.jsonl").open()) for r in (0, 1)]
    a, b = outputs(two), outputs(one)
    return {
        "seconds": round(seconds, 1),
        "photos_per_rank": shards,
        "same_merged_summary": all(a[k] == b[k] for k in ("summary.csv", "zones.csv", "failures.csv", "summary.json")),
        "same_files": a == b,
        "summary_rows_per_lesion": rows_per_lesion(two),
    }


def tree_rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants, in KiB."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total


def peak_memory(photos: Path, out: Path, model: str | None) -> dict[str, float]:
    proc = subprocess.Popen(predict_command(photos, out, model), cwd=REPO, stderr=subprocess.DEVNULL)
    peak = 0
    started = time.perf_counter()
    while proc.poll() is None:
        peak = max(peak, tree_rss_kib(proc.pid))
        time.sleep(0.05)
    if proc.returncode != 0:
        raise RuntimeError(f"predict failed with exit code {proc.returncode}")
    return {"peak_tree_rss_mib": round(peak / 1024, 1), "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.pipeline_check", description=__doc__.split("\n")[0])
    p.add_argument("--photos", type=int, default=200)
    p.add_argument("--size", type=int, default=256, help="photo side in px (default 256)")
    p.add_argument("--model", choices=("tiny", "bundled"), default="tiny")
    p.add_argument("--memory", type=int, nargs="*", default=[50, 500], help="photo counts for peak memory")
    p.add_argument("--memory-size", type=int, default=512, help="photo side for the memory runs (default 512)")
    p.add_argument(
        "--memory-jpeg4288",
        action="store_true",
        help="memory runs on 4288 x 2848 JPEGs instead (benchmarks.throughput's)",
    )
    p.add_argument("--only-memory", action="store_true", help="skip the kill-and-resume and torchrun checks")
    p.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pipeline_check.") as tmp:
        root = args.out or Path(tmp)
        model = None
        if args.model == "tiny":
            from training.untrained import make_untrained

            model = str(make_untrained(root / "tiny", decoder_channels=8, input_size=128, seed=3))
        photos = make_photos(root / "photos", args.photos, args.size)
        report: dict[str, Any] = {"model": args.model, "size": args.size}
        if not args.only_memory:
            report["kill_and_resume"] = kill_and_resume(photos, root, model, args.photos)
            print(json.dumps({"kill_and_resume": report["kill_and_resume"]}, indent=2), flush=True)
            report["torchrun"] = torchrun_check(photos, root, model)
            print(json.dumps({"torchrun": report["torchrun"]}, indent=2), flush=True)
        report["memory"] = {}
        kind = "4288 x 2848 JPEGs" if args.memory_jpeg4288 else f"photos of {args.memory_size} px"
        for count in args.memory:
            if args.memory_jpeg4288:
                from benchmarks.throughput import make_inputs

                many = make_inputs(root / f"memory_{count}", "jpeg4288", count)
            else:
                many = make_photos(root / f"memory_{count}", count, args.memory_size)
            report["memory"][count] = peak_memory(many, root / f"memory_out_{count}", model)
            print(json.dumps({f"memory, {count} {kind}": report["memory"][count]}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
