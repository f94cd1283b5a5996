"""The network in each runtime, side by side in one run: PyTorch fp32, the PyTorch fast path
(bf16 on a CPU that has it), ONNX Runtime fp32, OpenVINO fp32 and bf16, and int8 (OpenVINO with
NNCF post-training quantisation, ONNX Runtime static quantisation).

For the published architecture (random weights: there are no trained ones) and a checkpoint
(default: the bundled model), each at its own input size:

- time of one forward pass of a ``1 x 3 x S x S`` batch (median of ``--repeats`` runs after a
  warm-up, the paths interleaved so that load from other processes hits them alike), its ratio to
  the PyTorch fast path, and to the bf16 bound (the network's FLOPs at this machine's bf16
  matmul peak, measured in the same run);
- for the checkpoint: masks of each path against PyTorch fp32 through ``predict`` on photos
  (``--image``; Dice pooled over them at the checkpoint's thresholds; max |delta p|).

int8 is calibrated on ``--calibration`` photos (default: the test fixtures' three IDRiD photos;
pass training photos for a real measurement), all of the network with NNCF's defaults, or its
encoder only (stem, decoder and head in float; full bias correction, asymmetric activations). The exported and quantised folders are written
under ``--keep DIR`` when given, so that ``python -m training.evaluate --model DIR/<path>`` can
score each one's AP on a labelled set::

    .venv/bin/python tools/runtimes.py --json artifacts/runtimes.json --keep artifacts/runtimes \\
        --calibration data/idrid/A.*/1.*/a.*/IDRiD_0[1-9].jpg --image tests/fixtures/idrid/*.jpg

Needs ``hydralanet[onnx,openvino]`` and, for the OpenVINO int8 path, ``pip install nncf``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.speed import build, count_gflop, interleaved_medians, matmul_peak  # noqa: E402
from benchmarks.speed_report import machine_info  # noqa: E402
from hydralanet import load_model, predict, read_image, save_checkpoint  # noqa: E402
from hydralanet.checkpoints.format import CONFIG_NAME, ONNX_NAME, OPENVINO_NAME  # noqa: E402
from hydralanet.config import CLASSES  # noqa: E402
from hydralanet.inference.export import export_model  # noqa: E402
from hydralanet.inference.forward import run_model  # noqa: E402
from hydralanet.inference.onnx_model import INPUT_NAME  # noqa: E402
from hydralanet.inference.segment import prepare_photo  # noqa: E402
from hydralanet.io.images import write_atomic  # noqa: E402

FIXTURES = sorted((ROOT / "tests" / "fixtures" / "idrid").glob("IDRiD_*.jpg"))


def published_checkpoint(folder: Path, size: int) -> Path:
    """The published architecture with random weights (as the benchmark builds it), saved."""
    loaded = build({"kind": "published", "encoder": "resnet50", "decoder_channels": 256, "size": size})
    save_checkpoint(loaded.model, folder, loaded.config)
    return folder


def calibration_inputs(loaded, photos: list[Path]) -> list[np.ndarray]:
    return [prepare_photo(loaded.config.preprocessing, read_image(p)).tensor[None].numpy() for p in photos]


# Kept in float for the "encoder only" int8 variant (names of the exported graph's nodes): the
# decoder and head, and the encoder's stem, whose input is the photo itself. With these, NNCF's
# full bias correction and asymmetric activations (the MIXED preset) moved the bundled model's
# masks least of the recipes tried (docs/speed.md).
FLOAT_NODES = [r"/(lam|ffb|fpb)\d+/.*", r"/head.*", r"/encoder/stem/.*"]


def quantise_openvino(ir: Path, out: Path, inputs: list[np.ndarray], encoder_only: bool = False) -> Path:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(ir / OPENVINO_NAME))
    dataset, n = nncf.Dataset(inputs), len(inputs)
    if encoder_only:
        quantised = nncf.quantize(
            model,
            dataset,
            subset_size=n,
            ignored_scope=nncf.IgnoredScope(patterns=FLOAT_NODES),
            fast_bias_correction=False,
            preset=nncf.QuantizationPreset.MIXED,
        )
    else:
        quantised = nncf.quantize(model, dataset, subset_size=n)
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantised, str(out / OPENVINO_NAME), compress_to_fp16=False)
    shutil.copy(ir / CONFIG_NAME, out / CONFIG_NAME)
    return out


def quantise_onnx(onnx_dir: Path, out: Path, inputs: list[np.ndarray]) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = iter(inputs)

        def get_next(self):
            x = next(self.left, None)
            return None if x is None else {INPUT_NAME: x}

    out.mkdir(parents=True, exist_ok=True)
    pre = out / "pre.onnx"
    quant_pre_process(str(onnx_dir / ONNX_NAME), str(pre))
    quantize_static(
        str(pre),
        str(out / ONNX_NAME),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    pre.unlink()
    shutil.copy(onnx_dir / CONFIG_NAME, out / CONFIG_NAME)
    return out


def build_paths(checkpoint: Path, work: Path, inputs_from: list[Path]) -> dict[str, tuple]:
    """name -> (LoadedModel, precision, folder or None)."""
    torch_model = load_model(checkpoint, device="cpu")
    onnx_dir, _, _ = export_model(checkpoint, work / "onnx-fp32", fmt="onnx")
    ir_dir, _, _ = export_model(checkpoint, work / "openvino-fp32", fmt="openvino")
    inputs = calibration_inputs(torch_model, inputs_from)
    ov8 = quantise_openvino(ir_dir, work / "openvino-int8", inputs)
    ov8e = quantise_openvino(ir_dir, work / "openvino-int8-encoder", inputs, encoder_only=True)
    ort8 = quantise_onnx(onnx_dir, work / "onnx-int8", inputs)
    ir = load_model(str(ir_dir))
    paths = {
        "torch fp32": (torch_model, "fp32", checkpoint),
        "torch fast": (torch_model, "auto", checkpoint),
        "onnxruntime fp32": (load_model(str(onnx_dir)), "fp32", onnx_dir),
        "openvino fp32": (ir, "fp32", ir_dir),
    }
    if ir.resolve_precision("auto") == "bf16":
        paths["openvino bf16"] = (ir, "bf16", ir_dir)
    paths["openvino int8 (NNCF)"] = (load_model(str(ov8)), "fp32", ov8)
    paths["openvino int8, encoder only"] = (load_model(str(ov8e)), "fp32", ov8e)
    paths["onnxruntime int8"] = (load_model(str(ort8)), "fp32", ort8)
    return paths


def time_paths(paths: dict[str, tuple], repeats: int) -> dict[str, float]:
    torch_model = paths["torch fp32"][0]
    size = torch_model.config.preprocessing.input_size
    batch = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    fns = {}
    for name, (loaded, precision, _) in paths.items():
        resolved = loaded.resolve_precision(precision)
        model = loaded.inference_model(resolved)
        fns[name] = lambda m=model, p=resolved: run_model(m, batch, precision=p)
        fns[name]()  # warm-up: builds the fast path, compiles the OpenVINO model
    times = interleaved_medians(fns, repeats)
    return {name: float(np.median(t)) for name, t in times.items()}


def masks_agreement(paths: dict[str, tuple], photos: list[Path]) -> dict[str, dict]:
    reference_model = paths["torch fp32"][0]
    thresholds = reference_model.config.thresholds
    pooled = {name: {c: [0, 0] for c in CLASSES} for name in paths}
    max_dp = dict.fromkeys(paths, 0.0)
    for photo in photos:
        image = read_image(photo)
        exact = predict(reference_model, image, precision="fp32")
        reference = exact.masks(thresholds)
        for name, (loaded, precision, _) in paths.items():
            got = predict(loaded, image, precision=precision)
            masks = got.masks(thresholds)
            for i, c in enumerate(CLASSES):
                pooled[name][c][0] += int(np.logical_and(reference[i], masks[i]).sum())
                pooled[name][c][1] += int(reference[i].sum()) + int(masks[i].sum())
            max_dp[name] = max(max_dp[name], float(np.abs(exact.probabilities - got.probabilities).max()))
    ratio = lambda v: 1.0 if v[1] == 0 else 2.0 * v[0] / v[1]  # noqa: E731
    return {name: {"dice": {c: ratio(pooled[name][c]) for c in CLASSES}, "max_abs_dp": max_dp[name]} for name in paths}


def measure(label: str, checkpoint: Path, work: Path, args: argparse.Namespace, agree: bool) -> dict:
    print(f"{label}: exporting and quantising...", file=sys.stderr, flush=True)
    paths = build_paths(checkpoint, work, args.calibration)
    size = paths["torch fp32"][0].config.preprocessing.input_size
    gflop = count_gflop(paths["torch fp32"][0].model, torch.zeros(1, 3, size, size))
    print(f"{label}: timing {len(paths)} paths at {size} px...", file=sys.stderr, flush=True)
    seconds = time_paths(paths, args.repeats)
    result = {
        "size": size,
        "gflop": gflop,
        "seconds": seconds,
        "folders": {n: str(f) for n, (_, _, f) in paths.items()},
    }
    if agree:
        print(f"{label}: masks against fp32 on {len(args.image)} photos...", file=sys.stderr, flush=True)
        result["agreement"] = masks_agreement(paths, args.image)
    return result


def markdown(report: dict) -> str:
    peak = report["peak_bf16_gflops"]
    m = report["machine"]
    lines = [
        f"{m['cpu']}, {m['physical_cores']} cores, native bf16 {m['native_bf16']}, AMX {m['amx']}; "
        f"torch {m['torch']}, {report['threads']} threads; bf16 matmul peak (torch.mm) {peak:.0f} GFLOP/s; "
        f"load average at start {m['loadavg_start'][0]:.2f}, at end {m['loadavg_end'][0]:.2f}",
        "",
    ]
    for label, r in report["models"].items():
        bound = r["gflop"] / peak
        fast = r["seconds"]["torch fast"]
        lines += [
            f"### {label} ({r['size']} px, {r['gflop']:.0f} GFLOP)",
            "",
            "| path | s per image | x torch fast | / bf16 bound |"
            + (" Dice EX | HE | MA | SE | max dp |" if "agreement" in r else ""),
            "|---|---:|---:|---:|" + ("---:|---:|---:|---:|---:|" if "agreement" in r else ""),
        ]
        for name, s in r["seconds"].items():
            row = f"| {name} | {s:.3f} | {fast / s:.2f} | {s / bound:.2f} |"
            if "agreement" in r:
                a = r["agreement"][name]
                row += " " + " | ".join(f"{a['dice'][c]:.3f}" for c in CLASSES) + f" | {a['max_abs_dp']:.3f} |"
            lines.append(row)
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="checkpoint folder (default: the bundled model)")
    p.add_argument("--size", type=int, default=1024, help="the published architecture's input size (default 1024)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--calibration", nargs="+", type=Path, default=FIXTURES, help="photos int8 is calibrated on")
    p.add_argument("--image", nargs="+", type=Path, default=FIXTURES, help="photos for the masks' agreement")
    p.add_argument("--no-published", action="store_true", help="only the checkpoint")
    p.add_argument("--keep", type=Path, default=None, help="keep the exported and quantised folders here")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    from hydralanet.checkpoints.sources import BUNDLED_DIR

    work = Path(tempfile.mkdtemp(prefix="runtimes."))
    try:
        report: dict = {"machine": machine_info(), "threads": torch.get_num_threads(), "models": {}}
        checkpoint = Path(args.model) if args.model else BUNDLED_DIR
        keep = args.keep or work
        report["models"]["checkpoint"] = measure("checkpoint", checkpoint, keep / "checkpoint", args, agree=True)
        if not args.no_published:
            published = published_checkpoint(work / "published", args.size)
            report["models"]["published"] = measure("published", published, work / "published-paths", args, False)
        report["peak_bf16_gflops"] = matmul_peak(torch.bfloat16, (2048, 4096), 5)
        report["machine"]["loadavg_end"] = os.getloadavg()
        report["machine"]["amx"] = bool(torch.cpu.get_capabilities().get("amx_bf16"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = markdown(report)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.json, (json.dumps(report, indent=2) + "\n").encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
