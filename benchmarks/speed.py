"""Inference speed, memory and agreement, measured side by side in one run.

    python -m benchmarks.speed [--model SOURCE] [--size 1024] [--repeats 5] [--json FILE]
        [--encoder resnet50 --decoder-channels 256] [--photo 4288x2848] [--image retina PATH ...]
        [--compile] [--no-memory] [--quick]

Two models: the published architecture (``--encoder``/``--decoder-channels``, random weights:
there are no trained ones) at ``--size``, and the checkpoint ``--model`` (default: the bundled
one) at its own input size. For each:

- baseline: the research code's way, fp32 eager ``model.eval()`` under ``torch.no_grad()``;
  fast: the project's path (``run_model`` on ``LoadedModel.inference_model("auto")``). Median
  wall time of ``--repeats`` runs after a warm-up, the two interleaved so that load from other
  processes hits both alike;
- FLOPs (``torch.utils.flop_counter``: 2 per multiply-add) and the rate achieved, against this
  machine's matmul peak measured in the same run (best median of large square ``torch.mm``);
- peak memory: ``VmHWM`` (the kernel's high-water mark of resident memory, which sees every
  allocator: torch, oneDNN, numpy) of a fresh process that builds the model and runs one image
  through that path, so one measurement cannot hide in another's freed pages. It includes the
  runtime (``import torch`` alone is ~0.7 GB resident here), reported beside it;
- agreement of the fast path with fp32 through ``predict`` on photos (``--image``, default
  ``skimage.data.retina``; Dice pooled over them): per-class Dice of the masks at the checkpoint's
  thresholds, max |delta p|, and Dice at "coverage-matched" thresholds (each class cut where
  the fp32 mask covers 2 % of the field of view). Untrained weights give near-constant
  outputs (empty masks at the thresholds), so their figures say little; the output says so;
- a 4288 x 2848 photo segmented in tiles at native resolution (time, tiles, peak memory).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.speed_report import machine_info, print_report
from hydralanet.config import CLASSES, ENCODERS, CheckpointConfig, PreprocessConfig
from hydralanet.inference.device import resolve_precision
from hydralanet.inference.fast import optimize_for_inference
from hydralanet.inference.forward import run_model
from hydralanet.inference.loaded import LoadedModel, load_model
from hydralanet.inference.segment import predict
from hydralanet.io.images import read_image
from hydralanet.model.network import HydraLANet
from hydralanet.preprocessing import preprocess

MEMORY_TIMEOUT_S = 600  # one child process of the peak-memory measurement
RETINA = "retina"  # --image name of skimage.data.retina
MATCHED_COVERAGE = 0.02  # coverage-matched thresholds: each fp32 mask covers 2 % of the FOV


# --------------------------------------------------------------------------- measuring


def matmul_peak(dtype: torch.dtype, sizes: tuple[int, ...], repeats: int) -> float:
    """GFLOP/s of square ``torch.mm`` in ``dtype``: the best over ``sizes`` of the median of
    ``repeats`` timed runs (after two warm-ups)."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        seconds = median_time(lambda a=a, b=b: torch.mm(a, b), repeats, warmup=2)
        best = max(best, 2 * n**3 / seconds / 1e9)
    return best


def median_time(fn: Callable[[], Any], repeats: int, *, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Wall times of each function, run in turn ``repeats`` times (already warmed up)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def count_gflop(model: torch.nn.Module, batch: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(batch)
    return counter.get_total_flops() / 1e9


class CpuShare:
    """CPU time used by *other* processes while measuring (from ``/proc/stat`` minus our own
    ``getrusage``), in cores: 0 on a quiet machine, up to the core count when it is saturated."""

    def __enter__(self) -> CpuShare:
        self.start = (self._busy(), self._own(), time.perf_counter())
        return self

    def __exit__(self, *exc: object) -> None:
        busy, own, wall = self._busy(), self._own(), time.perf_counter()
        b0, o0, w0 = self.start
        self.others = None if busy is None else max(0.0, ((busy - b0) - (own - o0)) / (wall - w0))

    @staticmethod
    def _busy() -> float | None:
        try:
            fields = [float(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        except OSError:
            return None
        idle = fields[3] + fields[4]  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- models


def build(spec: dict[str, Any]) -> LoadedModel:
    """A model from a picklable spec (so a child process can rebuild it)."""
    if spec["kind"] == "published":
        torch.manual_seed(0)
        model = HydraLANet(encoder=spec["encoder"], decoder_channels=spec["decoder_channels"]).eval()
        config = CheckpointConfig(
            model=model.config,
            preprocessing=PreprocessConfig(input_size=spec["size"]),
            name="published architecture",
            provenance={"trained": False},
        )
        return LoadedModel(model=model, config=config, identity={"name": config.name, "source": "random init"})
    return load_model(spec["source"], device="cpu")


def weights_label(loaded: LoadedModel) -> str:
    trained = loaded.config.provenance.get("trained")
    if loaded.identity.get("source") == "random init":
        return "random init (no trained weights exist)"
    return {True: "trained", False: "UNTRAINED (random)"}.get(trained, "provenance unknown")


def large_photo(width: int, height: int) -> np.ndarray:
    """``skimage.data.retina`` scaled to the photo's height and centred on black, the way
    IDRiD's 4288 x 2848 photos frame the eye."""
    from skimage import data

    eye = cv2.resize(data.retina(), (height, height), interpolation=cv2.INTER_CUBIC)
    photo = np.zeros((height, width, 3), np.uint8)
    left = (width - height) // 2
    photo[:, left : left + height] = eye[:, : min(height, width)]
    return photo


def _rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    """This process's resident-memory high-water mark. ``VmHWM`` belongs to the address space
    made at exec; ``ru_maxrss`` would also count the parent's RSS copied at fork."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise OSError("no VmHWM in /proc/self/status")


def _memory_child(spec: dict[str, Any], path: str, photo: tuple[int, int] | None, threads: int) -> dict[str, float]:
    """Runs in a fresh process: build the model, run one image through ``path``."""
    torch.set_num_threads(threads)
    runtime = _rss_mib()
    loaded = build(spec)
    loaded_rss = _rss_mib()
    if photo is not None:
        prediction = predict(loaded, large_photo(*photo), tile=loaded.config.preprocessing.input_size)
        del prediction
    else:
        size = loaded.config.preprocessing.input_size
        batch = torch.randn(1, 3, size, size)
        if path == "baseline":
            with torch.no_grad():
                loaded.model(batch)
        else:
            run_model(loaded.inference_model("auto"), batch, precision=resolve_precision("auto", loaded.device))
    return {"runtime_mib": runtime, "model_mib": loaded_rss, "peak_mib": _peak_mib()}


def peak_memory(spec: dict[str, Any], path: str, photo: tuple[int, int] | None = None) -> dict[str, float]:
    """Peak memory of one path, measured in a fresh interpreter (``subprocess``, not
    ``multiprocessing``: spawn re-runs the parent's ``__main__``, which under a test runner or
    a Streamlit script is not ours and may fail, and a ``Pool`` then respawns it forever)."""
    job = {"spec": spec, "path": path, "photo": photo, "threads": torch.get_num_threads()}
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    code = "from benchmarks.speed import _memory_main; _memory_main()"
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            env=env,
            timeout=MEMORY_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"peak-memory run of the {path} path took over {MEMORY_TIMEOUT_S} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"peak-memory run of the {path} path failed (exit {done.returncode}): {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _memory_main() -> None:
    """Entry point of the peak-memory child: a job as JSON on stdin, figures as JSON on stdout."""
    job = json.loads(sys.stdin.read())
    photo = tuple(job["photo"]) if job["photo"] else None
    print(json.dumps(_memory_child(job["spec"], job["path"], photo, job["threads"])))


# --------------------------------------------------------------------------- agreement


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def agreement(loaded: LoadedModel, images: dict[str, np.ndarray]) -> dict[str, Any]:
    """Masks of the fast path against fp32 over ``images``: per-class Dice pooled over the
    images (2 |A and B| / (|A| + |B|) with the sums over all of them, so a photo where a class
    covers ten pixels cannot dominate), and per image."""
    thresholds = loaded.config.thresholds
    pooled = {c: [0, 0] for c in CLASSES}  # intersection, |A| + |B|
    pooled_matched = {c: [0, 0] for c in CLASSES}
    per_image: dict[str, Any] = {}
    max_dp, precision = 0.0, "fp32"
    for name, image in images.items():
        exact = predict(loaded, image, precision="fp32")
        fast = predict(loaded, image, precision="auto")
        precision = fast.settings["precision"]
        fov = exact.fov
        exact_masks, fast_masks = exact.masks(thresholds), fast.masks(thresholds)
        matched = {
            c: float(np.quantile(exact.probabilities[i][fov], 1 - MATCHED_COVERAGE)) for i, c in enumerate(CLASSES)
        }
        exact_matched, fast_matched = exact.masks(matched), fast.masks(matched)
        for i, c in enumerate(CLASSES):
            for acc, a, b in (
                (pooled, exact_masks[i], fast_masks[i]),
                (pooled_matched, exact_matched[i], fast_matched[i]),
            ):
                acc[c][0] += int(np.logical_and(a, b).sum())
                acc[c][1] += int(a.sum()) + int(b.sum())
        dp = float(np.abs(exact.probabilities - fast.probabilities).max())
        max_dp = max(max_dp, dp)
        per_image[name] = {
            "dice": {c: dice(exact_masks[i], fast_masks[i]) for i, c in enumerate(CLASSES)},
            "coverage_pct": {c: 100.0 * float(exact_masks[i].sum()) / float(fov.sum()) for i, c in enumerate(CLASSES)},
            "prob_spread": {c: float(np.ptp(exact.probabilities[i][fov])) for i, c in enumerate(CLASSES)},
            "max_abs_dp": dp,
        }
    ratio = lambda v: 1.0 if v[1] == 0 else 2.0 * v[0] / v[1]  # noqa: E731
    first = per_image[next(iter(per_image))]
    return {
        "weights": weights_label(loaded),
        "precision": precision,
        "images": list(images),
        "dice": {c: ratio(pooled[c]) for c in CLASSES},
        "dice_matched": {c: ratio(pooled_matched[c]) for c in CLASSES},
        "mask_pixels": {c: pooled[c][1] // 2 for c in CLASSES},
        "coverage_pct": first["coverage_pct"],
        "prob_spread": first["prob_spread"],
        "max_abs_dp": max_dp,
        "per_image": per_image,
    }


# --------------------------------------------------------------------------- one model


def benchmark_model(spec: dict[str, Any], args: argparse.Namespace, images: dict[str, np.ndarray]) -> dict:
    """Times, FLOPs, agreement and memory of one model (the bounds are added by ``main``)."""
    loaded = build(spec)
    config = loaded.config.preprocessing
    size = config.input_size
    batch = preprocess(next(iter(images.values())), config).tensor[None]  # timed on the first image
    gflop = count_gflop(loaded.model, batch)
    precision = resolve_precision("auto", loaded.device)
    start = time.perf_counter()
    fast_model = loaded.inference_model("auto")
    build_s = time.perf_counter() - start

    def baseline() -> None:
        with torch.no_grad():
            loaded.model(batch)

    def fast() -> None:
        run_model(fast_model, batch, precision=precision)

    paths = {"baseline": baseline, "fast": fast}
    for fn in paths.values():
        fn()  # warm-up: oneDNN picks and caches its kernels on the first call per shape
    compile_s = None
    if args.compile:
        compiled_model = optimize_for_inference(loaded.model, loaded.device, "auto", compile=True)
        paths["compiled"] = lambda: run_model(compiled_model, batch, precision=precision)
        start = time.perf_counter()
        paths["compiled"]()
        compile_s = time.perf_counter() - start
    with CpuShare() as share:
        times = interleaved_medians(paths, args.repeats)
    baseline_s, fast_s = statistics.median(times["baseline"]), statistics.median(times["fast"])
    result: dict[str, Any] = {
        "model": loaded.identity.get("name"),
        "architecture": f"{loaded.config.model.encoder}/D={loaded.config.model.decoder_channels}",
        "input_size": size,
        "precision": precision,
        "gflop": gflop,
        "baseline_s": baseline_s,
        "fast_s": fast_s,
        "baseline_runs_s": times["baseline"],
        "fast_runs_s": times["fast"],
        "build_s": build_s,
        "speedup": baseline_s / fast_s,
        "baseline_gflops": gflop / baseline_s,
        "fast_gflops": gflop / fast_s,
        "other_processes_cores": share.others,
    }
    if compile_s is not None:
        compiled_s = statistics.median(times["compiled"])
        result.update(
            compiled_s=compiled_s,
            compiled_runs_s=times["compiled"],
            compile_s=compile_s,
            compiled_speedup=baseline_s / compiled_s,
        )
    result["agreement"] = agreement(loaded, images)
    result["dice_min"] = min(result["agreement"]["dice"].values())
    result["dice_min_matched"] = min(result["agreement"]["dice_matched"].values())
    if not args.no_memory:
        result["memory_baseline"] = peak_memory(spec, "baseline")
        result["memory_fast"] = peak_memory(spec, "fast")
    if args.photo:
        width, height = args.photo
        large = large_photo(width, height)
        start = time.perf_counter()  # no warm-up needed: the tiles have the size timed above
        tiled = predict(loaded, large, tile=size)
        result["tiled"] = {
            "photo": f"{width}x{height}",
            "input_size": tiled.settings["input_size"],
            "tile": size,
            "tiles_run": tiled.settings["tiles_run"],
            "tiles_skipped": tiled.settings["tiles_skipped"],
            "seconds": time.perf_counter() - start,
        }
        if not args.no_memory:
            result["tiled"]["memory"] = peak_memory(spec, "fast", (width, height))
    return result


# --------------------------------------------------------------------------- command line (printing: benchmark_report)


def _photo_arg(text: str) -> tuple[int, int] | None:
    if text.lower() in ("", "none", "off"):
        return None
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT (e.g. 4288x2848) or 'none', got {text!r}") from None
    if not 64 <= height <= width:
        raise argparse.ArgumentTypeError(f"need 64 <= height <= width, got {text!r}")
    return width, height


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.split("\n")[0])
    p.add_argument(
        "--model",
        default=None,
        help="checkpoint to measure besides the published architecture (default: the bundled model)",
    )
    p.add_argument("--size", type=int, default=1024, help="input size for the published architecture (default 1024)")
    p.add_argument("--encoder", choices=ENCODERS, default="resnet50", help="published architecture's encoder")
    p.add_argument("--decoder-channels", type=int, default=256, help="published architecture's D (default 256)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per path after warm-up (default 5)")
    p.add_argument(
        "--photo",
        type=_photo_arg,
        default=(4288, 2848),
        help="large photo for tiled inference, WIDTHxHEIGHT or 'none' (default 4288x2848)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time the fast path under torch.compile "
        "(inductor; needs a C++ compiler; not the default, see docs/speed.md)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny settings for a smoke test: resnet18/D=16 at 128 px, 2 repeats, a 640x426 photo, small matmuls",
    )
    p.add_argument(
        "--image",
        nargs="+",
        default=None,
        metavar="PATH",
        help="photos for the agreement with fp32 "
        f"(Dice pooled over them; the first is also timed); '{RETINA}' is skimage.data.retina, a normal "
        f"eye, the default. Photos with lesions test agreement harder.",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.encoder, args.decoder_channels, args.size, args.repeats = "resnet18", 16, 128, 2
        if args.photo == (4288, 2848):
            args.photo = (640, 426)
    if args.size < 32 or args.size % 32:
        print(f"error: --size must be a multiple of 32, got {args.size}", file=sys.stderr)
        return 2
    sizes, reps = ((512, 1024), 3) if args.quick else ((2048, 4096), 5)
    images: dict[str, np.ndarray] = {}
    for path in args.image or [RETINA]:
        if str(path) == RETINA:
            from skimage import data

            images[RETINA] = data.retina()  # a real (CC0) fundus photo, 1411 x 1411, of a normal eye
        else:
            images[str(path)] = read_image(path)
    report: dict[str, Any] = {"machine": machine_info(), "image": list(images)}
    with CpuShare() as share:
        peaks = {dt: [matmul_peak(dt, sizes, reps)] for dt in (torch.float32, torch.bfloat16)}
        specs = {
            "published": {
                "kind": "published",
                "encoder": args.encoder,
                "decoder_channels": args.decoder_channels,
                "size": args.size,
            },
            "bundled" if args.model is None else "checkpoint": {"kind": "checkpoint", "source": args.model},
        }
        results = {key: benchmark_model(spec, args, images) for key, spec in specs.items()}
        for dt in peaks:  # again at the end: load from other processes may have changed
            peaks[dt].append(matmul_peak(dt, sizes, reps))
    peak_bf16 = max(peaks[torch.bfloat16])
    for r in results.values():  # the bound from the best peak seen: the conservative ratio
        r["peak_bf16_gflops"] = peak_bf16
        r["bound_s"] = r["gflop"] / peak_bf16
        r["bound_ratio"] = r["fast_s"] / r["bound_s"]
        if "compiled_s" in r:
            r["compiled_bound_ratio"] = r["compiled_s"] / r["bound_s"]
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["machine"]["other_processes_cores"] = share.others
    report.update(
        peak_fp32_gflops=max(peaks[torch.float32]),
        peak_bf16_gflops=peak_bf16,
        peak_fp32_runs=[round(v) for v in peaks[torch.float32]],
        peak_bf16_runs=[round(v) for v in peaks[torch.bfloat16]],
        models=results,
    )
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
