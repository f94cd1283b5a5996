"""Throughput of ``predict`` over many photos: the pipeline against the serial path, side by side.

    python -m benchmarks.throughput [--photos 12] [--inputs jpeg4288 png1024] [--models bundled published]
        [--workers 0 1 2] [--rounds 2] [--old-code DIR] [--formats] [--json FILE]

For each input kind (``jpeg4288``: 4288 x 2848 JPEGs, ``skimage.data.retina`` framed as IDRiD's
photos; ``png1024``: 1024 px PNGs of it) and model (``bundled``: ``weights/``; ``published``:
ResNet-50, D = 256 at 1024 px, random weights: the speed is the architecture's), it runs
``python -m hydralanet predict`` in a fresh process per setting, interleaved round by round, and
reads photos/s from ``summary.json`` (``images / seconds``: the run, without start-up and
model loading). ``--workers 0`` is the serial path (every stage in one process, in turn);
``--old-code DIR`` adds the code before the pipeline (e.g. ``git archive <commit>`` unpacked) as
one more column. Masks of every run are compared byte for byte with the serial run's. The time
split (decode, preprocess, model, post-process, write) is measured serially in this process on
the first photo(s), stage by stage with the pipeline's own functions. ``--formats`` measures
what each output costs per photo (PNG compression levels, 1-bit masks, probability maps).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.speed import CpuShare, build, large_photo
from hydralanet.checkpoints.folder import save_checkpoint
from hydralanet.config import CLASSES
from hydralanet.inference.loaded import load_model
from hydralanet.io.system import usable_cores

KINDS = {"jpeg4288": (4288, 2848, ".jpg"), "png1024": (1024, 1024, ".png")}
REPO = Path(__file__).resolve().parent.parent


def make_inputs(folder: Path, kind: str, count: int) -> Path:
    width, height, suffix = KINDS[kind]
    folder.mkdir(parents=True, exist_ok=True)
    photo = cv2.cvtColor(large_photo(width, height), cv2.COLOR_RGB2BGR)
    options = [cv2.IMWRITE_JPEG_QUALITY, 95] if suffix == ".jpg" else []
    for i in range(count):
        cv2.imwrite(str(folder / f"{kind}_{i:03d}{suffix}"), photo, options)
    return folder


def make_model(name: str, folder: Path) -> str | None:
    """A model source for ``--model``: None for the bundled one, else a checkpoint folder."""
    if name == "bundled":
        return None
    loaded = build({"kind": "published", "encoder": "resnet50", "decoder_channels": 256, "size": 1024})
    return str(save_checkpoint(loaded.model, folder / "published", loaded.config))


def run_predict(inputs: Path, out: Path, model: str | None, workers: int | None, code: Path) -> dict[str, Any]:
    """One ``predict`` process; photos/s from its summary.json, and the other processes' CPU use."""
    command = [sys.executable, "-m", "hydralanet", "predict", str(inputs), "--out", str(out), "--device", "cpu"]
    if model:
        command += ["--model", model]
    if workers is not None:
        command += ["--workers", str(workers)]
    env = {**os.environ, "PYTHONPATH": str(code)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with CpuShare() as share:
        started = time.perf_counter()
        result = subprocess.run(command, cwd=code, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if result.returncode != 0:
        raise RuntimeError(f"predict failed ({result.returncode}): {result.stderr.strip().splitlines()[-1:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {
        "photos_per_s": summary["images"] / summary["seconds"],
        "seconds": summary["seconds"],
        "wall_s": round(wall, 2),
        # CPU seconds of the process and its workers, start-up and model loading included
        "cpu_s": round(cpu, 1),
        "other_load_cores": None if share.others is None else round(share.others, 2),
    }


def same_masks(a: Path, b: Path) -> bool:
    names = sorted(p.relative_to(a) for p in a.glob("*/*.png") if p.stem in CLASSES)
    return bool(names) and all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def time_split(inputs: Path, model: str | None, photos: int) -> dict[str, float]:
    """Seconds per photo of each stage, serially, in this process (median over ``photos``)."""
    from hydralanet.batch.outputs import OutputOptions, write_photo_outputs
    from hydralanet.batch.pipeline import Decoded, ModelStage, PhotoJob
    from hydralanet.inference import segment as inference
    from hydralanet.io.images import read_image, save_png

    loaded = load_model(model, device="cpu")
    options = OutputOptions(dict(loaded.config.thresholds))
    stage = ModelStage(loaded, {"precision": "auto"})
    times: dict[str, list[float]] = {k: [] for k in ("decode", "preprocess", "model", "post-process", "write")}
    paths = sorted(inputs.iterdir())[: photos + 1]
    with tempfile.TemporaryDirectory() as tmp:
        for k, path in enumerate(paths):  # the first is a warm-up
            t0 = time.perf_counter()
            image = read_image(path)
            t1 = time.perf_counter()
            prepared = inference.prepare_photo(loaded.config.preprocessing, image)
            t2 = time.perf_counter()
            prediction = inference.predict(loaded, image, prepared=prepared, square=True)
            job = PhotoJob(k, str(path), path.stem)
            sample = Decoded(job, image, prepared.tensor, prepared.enhanced, prepared.fov, prepared.geometry)
            output = stage.result(sample, prediction)
            t3 = time.perf_counter()
            result = output.to_result(options)
            write_photo_outputs(Path(tmp) / path.stem, result, options)
            t4 = time.perf_counter()
            writes = time_writes(Path(tmp) / "w", result, save_png)
            if k:
                for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3 - writes, writes)):
                    times[key].append(value)
    return {key: round(statistics.median(values), 3) for key, values in times.items()}


def time_writes(folder: Path, result: Any, save_png: Any) -> float:
    """Seconds to encode and write the PNGs of one photo (masks and overlay)."""
    from hydralanet.report.overlay import render_overlay

    overlay = render_overlay(result.image, result.masks)
    started = time.perf_counter()
    for i, c in enumerate(CLASSES):
        save_png(folder / f"{c}.png", result.masks[i].astype(np.uint8) * 255)
    save_png(folder / "overlay.png", overlay)
    return time.perf_counter() - started


def format_costs(kind: str) -> list[dict[str, Any]]:
    """Per photo: encode seconds and bytes of the masks (8-bit at PNG levels 1, 3, 6, 9; 1-bit),
    the overlay, and the 16-bit probability maps, on the bundled model's output."""
    from hydralanet.inference import segment as inference

    width, height, _ = KINDS[kind]
    image = large_photo(width, height)
    loaded = load_model(None, device="cpu")
    prediction = inference.predict(loaded, image)
    masks = prediction.masks(loaded.config.thresholds)
    from hydralanet.report.overlay import render_overlay

    overlay = cv2.cvtColor(render_overlay(image, masks), cv2.COLOR_RGB2BGR)
    prob16 = np.round(prediction.probabilities * 65535.0).astype(np.uint16)
    cases = [("masks 8-bit, as written (OpenCV default)", [m.astype(np.uint8) * 255 for m in masks], None, False)]
    cases += [(f"masks 8-bit, level {lv}", [m.astype(np.uint8) * 255 for m in masks], lv, False) for lv in (1, 3, 6, 9)]
    cases += [("masks 1-bit, level 1", [m.astype(np.uint8) * 255 for m in masks], 1, True)]
    cases += [(f"overlay, level {lv}", [overlay], lv, False) for lv in (1, 3, 6)]
    cases += [(f"probabilities 16-bit, level {lv}", list(prob16), lv, False) for lv in (1, 3)]
    rows = []
    for label, arrays, level, bilevel in cases:
        params = [] if level is None else [cv2.IMWRITE_PNG_COMPRESSION, level]
        params += [cv2.IMWRITE_PNG_BILEVEL, 1] if bilevel else []
        started = time.perf_counter()
        encoded = [cv2.imencode(".png", a, params)[1] for a in arrays]
        seconds = time.perf_counter() - started
        decoded_same = all(np.array_equal(cv2.imdecode(e, cv2.IMREAD_UNCHANGED), a) for e, a in zip(encoded, arrays))
        size = sum(e.size for e in encoded)
        rows.append({"output": label, "seconds": round(seconds, 3), "MB": round(size / 1e6, 2), "same": decoded_same})
    return rows


def measure(kind: str, model_name: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    inputs = make_inputs(root / kind, kind, args.photos)
    model = make_model(model_name, root)
    settings: list[tuple[str, int | None, Path]] = [(f"workers {w}", w, REPO) for w in args.workers]
    if args.old_code:
        settings.insert(0, ("old serial predict", None, args.old_code.resolve()))
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in settings}
    identical: dict[str, bool] = {}
    for round_ in range(args.rounds):
        for label, workers, code in settings:
            out = root / f"out_{kind}_{model_name}_{label.replace(' ', '_')}"
            runs[label].append(run_predict(inputs, out, model, workers, code))
            print(f"  {kind} {model_name} round {round_ + 1} {label}: {runs[label][-1]}", file=sys.stderr)
    reference = root / f"out_{kind}_{model_name}_workers_0"
    for label, _, _ in settings:
        identical[label] = same_masks(reference, root / f"out_{kind}_{model_name}_{label.replace(' ', '_')}")
    split = time_split(inputs, model, min(3, args.photos - 1))
    base = "old serial predict" if args.old_code else "workers 0"
    base_rate = statistics.median(r["photos_per_s"] for r in runs[base])
    table = {}
    for label, results in runs.items():
        rate = statistics.median(r["photos_per_s"] for r in results)
        table[label] = {
            "photos_per_s": round(rate, 3),
            "vs_serial": round(rate / base_rate, 2),
            "runs": results,
            "masks_identical_to_workers_0": identical[label],
        }
    return {"input": kind, "model": model_name, "photos": args.photos, "split_s": split, "settings": table}


def print_table(result: dict[str, Any]) -> None:
    print(f"\n{result['input']}, {result['model']} model, {result['photos']} photos")
    print("| setting | photos/s | vs serial | per-round photos/s | other load (cores) | masks = workers 0 |")
    print("|---|---:|---:|---|---|---|")
    for label, row in result["settings"].items():
        rates = ", ".join(f"{r['photos_per_s']:.3f}" for r in row["runs"])
        load = ", ".join(str(r["other_load_cores"]) for r in row["runs"])
        print(
            f"| {label} | {row['photos_per_s']:.3f} | {row['vs_serial']:.2f}x | {rates} | {load} | "
            f"{row['masks_identical_to_workers_0']} |"
        )
    split = result["split_s"]
    print(
        "time split, serial, s/photo: "
        + ", ".join(f"{k} {v}" for k, v in split.items())
        + f" (sum {sum(split.values()):.2f})"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.split("\n")[0])
    p.add_argument("--photos", type=int, default=12, help="photos per run (default 12)")
    p.add_argument("--inputs", nargs="+", choices=sorted(KINDS), default=["jpeg4288", "png1024"])
    p.add_argument("--models", nargs="+", choices=("bundled", "published"), default=["bundled", "published"])
    p.add_argument("--workers", nargs="+", type=int, default=None, help="default: 0 (serial) to the core count")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    p.add_argument("--old-code", type=Path, default=None, help="a copy of the code before the pipeline")
    p.add_argument("--formats", action="store_true", help="also measure the output formats' cost per photo")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.workers is None:
        args.workers = list(range(0, usable_cores() + 1))
    if 0 not in args.workers:
        args.workers.insert(0, 0)
    report: dict[str, Any] = {"cores": usable_cores(), "results": []}
    with tempfile.TemporaryDirectory(prefix="throughput.") as tmp:
        for kind in args.inputs:
            for model in args.models:
                result = measure(kind, model, args, Path(tmp))
                report["results"].append(result)
                print_table(result)
    if args.formats:
        report["formats"] = {kind: format_costs(kind) for kind in args.inputs}
        for kind, rows in report["formats"].items():
            print(f"\noutput cost per photo, {kind} (bundled model):")
            for row in rows:
                print(f"  {row['output']}: {row['seconds']:.3f} s, {row['MB']} MB, decodes identical: {row['same']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
