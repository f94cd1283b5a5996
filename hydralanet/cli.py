"""Command line: ``python -m hydralanet predict PATH... --out DIR`` and ``convert SRC --out DIR``.

Only the standard library and :mod:`hydralanet.config` are imported at start, so ``--help``
and ``--version`` answer at once; torch, OpenCV and the model load when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .config import CLAHE_MODES, CLASSES, CROP_MODES, PRECISIONS

DESCRIPTION = "Segment the four lesions of diabetic retinopathy (EX, HE, MA, SE) in colour fundus photographs."
OUTPUT_LAYOUT = """output layout of predict (other tools rely on it):
  DIR/<stem>/EX.png HE.png MA.png SE.png   0/255 masks, original size and orientation
  DIR/<stem>/overlay.png                   the lesions over the photo
  DIR/<stem>/prob_EX.png ...               16-bit PNG, p x 65535 (--save-probabilities)
  DIR/<stem>/findings.json                 optic disc, fovea, eye, image quality, lesions by
                                           ETDRS zone and quadrant, DME risk (research indicators)
  DIR/<stem>/<stem>.pdf                    the report (--report); DIR/report.pdf all in one (--report-combined)
  DIR/<stem>/record.json                   written last: the photo's rows, files, and a fingerprint
                                           of model and settings (what --resume checks)
  DIR/summary.csv                          one row per image and lesion
  DIR/zones.csv                            one row per image, lesion and zone, then the image's
                                           research indicators (lesion "indicator", zone its name,
                                           count its value: dme_risk, retinopathy_level,
                                           lesion_burden, referable_likely, rule_421_haemorrhages)
  DIR/failures.csv                         one row per photo that failed, with the reason
  DIR/summary.json                         the same + model identity, settings, findings, failures
  DIR/.shards/rank<R>.jsonl                one line per photo as it finishes (merged into the above)

DICOM files (.dcm, or the DICM preamble) are read too; each frame of a multi-frame file is a
photo named <stem>_f<k> (k = 1, 2, ...). Patient and study identifiers in DICOM headers are
written nowhere unless --keep-identifiers is given.

convert SRC --out DIR writes SRC (a checkpoint folder, a weights file such as the original
code's best_model.pt, or a Hub source) as a checkpoint folder; --to original --out FILE
writes the original code's state-dict layout instead.

Research software, not a medical device."""


def _threshold_arg(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    key = key.strip().upper()
    if not sep or key not in CLASSES:
        raise argparse.ArgumentTypeError(f"expected LESION=VALUE with LESION in {', '.join(CLASSES)}, got {text!r}")
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"threshold {value!r} for {key} is not a number") from None
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"threshold for {key} must be in [0, 1], got {number}")
    return key, number


def _tile_arg(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        size = 0
    if size < 32 or size % 32:
        raise argparse.ArgumentTypeError(f"tile size must be a multiple of 32 and >= 32, got {text!r}")
    return size


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hydralanet",
        description=DESCRIPTION,
        epilog=OUTPUT_LAYOUT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hydralanet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "predict",
        help="segment fundus photos (files and folders) into lesion masks",
        description="Segment fundus photos into lesion masks, overlays and statistics.",
        epilog=OUTPUT_LAYOUT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_predict_arguments(p)
    _add_batch_arguments(p)
    _add_report_arguments(p)
    c = sub.add_parser(
        "convert",
        help="write weights (e.g. the original code's best_model.pt) as a checkpoint folder, or back",
        description="Convert SRC to a checkpoint folder (safetensors + config.json + model card), or with "
        "--to original to a best_model.pt the original HydraLA-Net code loads with strict=True.",
    )
    _add_convert_arguments(c)
    e = sub.add_parser(
        "export",
        help="write a model's network as ONNX or OpenVINO IR, for ONNX Runtime, OpenVINO, TensorRT or other languages",
        description="Export MODEL's network to DIR/model.onnx (opset 17) or, with --format openvino, DIR/model.xml + "
        "model.bin (OpenVINO IR), for any batch and any square side that is a multiple of 32, with its config.json "
        "(preprocessing, thresholds, calibration) and a card saying how to run it. load_model and "
        "`predict --model DIR` run the folder with ONNX Runtime (pip install 'hydralanet[onnx]') or OpenVINO "
        "(pip install 'hydralanet[openvino]'; bf16 where the CPU has it).",
    )
    e.add_argument(
        "model", metavar="MODEL", nargs="?", default=None, help=f"{SOURCE_HELP} (default: the bundled model)"
    )
    e.add_argument("--format", choices=("onnx", "openvino"), default="onnx", help="what to write (default onnx)")
    e.add_argument("--out", required=True, type=Path, help="folder to write")
    e.add_argument("--allow-pickle", action="store_true", help=PICKLE_HELP)
    return parser


def _add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH", help="image files or folders of images (recursive)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--model", default=None, help=f"{SOURCE_HELP} (default: the bundled model)")
    p.add_argument(
        "--threshold",
        action="append",
        type=_threshold_arg,
        default=[],
        metavar="LESION=P",
        help="per-class threshold, e.g. --threshold EX=0.4 (repeatable; default: the checkpoint's)",
    )
    p.add_argument("--clahe", choices=CLAHE_MODES, default=None, help="CLAHE mode (default: the checkpoint's)")
    p.add_argument(
        "--crop",
        choices=CROP_MODES,
        default=None,
        help="fov: the whole field of view; centre_square: the photo's centre square, as the original "
        "HydraLA-Net code trained (default: the checkpoint's)",
    )
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average over horizontal/vertical flips (about 2.5x the model's time) and the checkpoint's "
        "input scales per lesion, if it has them (default: the checkpoint's)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto: the fast path (bf16 where the hardware has it); fp32: the exact path",
    )
    p.add_argument("--save-probabilities", action="store_true", help="also write prob_<LESION>.png (16-bit)")
    p.add_argument(
        "--no-reading",
        action="store_true",
        help="skip the clinical reading (disc, fovea, zones, DME risk, quality: findings.json, zones.csv)",
    )
    p.add_argument("--opacity", type=float, default=0.5, help="overlay fill opacity in [0, 1] (default 0.5)")
    p.add_argument("--allow-pickle", action="store_true", help=PICKLE_HELP)
    p.add_argument(
        "--tile",
        type=_tile_arg,
        default=None,
        metavar="SIZE",
        help="segment at native resolution in overlapping SIZE px tiles (multiple of 32; for large photos)",
    )


def _add_batch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--list", type=Path, default=None, metavar="FILE", help=LIST_HELP)
    p.add_argument(
        "--workers",
        type=_count_arg(0),
        default=None,
        metavar="N",
        help="processes that decode and preprocess, and as many that post-process and write; "
        "0: all in this process (default: one per core, shared among torchrun's local processes)",
    )
    p.add_argument(
        "--batch-size",
        type=_count_arg(1),
        default=None,
        metavar="B",
        help="photos per model call (default 1 on a CPU, 4 on a GPU)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip photos whose outputs are complete and were made with the same model and settings",
    )


def _add_report_arguments(p: argparse.ArgumentParser) -> None:
    """predict's PDF report and DICOM identifier flags."""
    p.add_argument("--report", action="store_true", help="write a PDF report per photo: DIR/<stem>/<stem>.pdf")
    p.add_argument("--report-combined", action="store_true", help="also write all photos' reports in DIR/report.pdf")
    p.add_argument("--paper", choices=("a4", "letter"), default="a4", help="report paper size (default a4)")
    p.add_argument(
        "--keep-identifiers",
        action="store_true",
        help="write DICOM patient and study identifiers into findings.json and the reports (default: never)",
    )


def _add_convert_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("source", metavar="SRC", help=SOURCE_HELP)
    c.add_argument(
        "--out", required=True, type=Path, help="folder to write (--to hydralanet) or .pt file (--to original)"
    )
    c.add_argument(
        "--to", choices=("hydralanet", "original"), default="hydralanet", help="output layout (default hydralanet)"
    )
    c.add_argument("--allow-pickle", action="store_true", help=PICKLE_HELP)
    c.add_argument("--name", default=None, help="model name in config.json (default: the source's)")
    c.add_argument(
        "--threshold",
        action="append",
        type=_threshold_arg,
        default=[],
        metavar="LESION=P",
        help="per-class threshold to store, e.g. --threshold EX=0.4 (repeatable; default: the source's)",
    )
    c.add_argument("--crop", choices=CROP_MODES, default=None, help="crop to store (default: the source's)")


def _count_arg(least: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {least}, got {text!r}")
        return value

    return parse


LIST_HELP = (
    "a list of photos: a text file, one path a line, or a CSV with a 'path' or 'image' column "
    "(relative paths: relative to the list's folder)"
)
SOURCE_HELP = (
    "checkpoint folder, weights file (.safetensors, or .pt/.pth/.bin with --allow-pickle), or Hub source "
    "[spaces/]owner/name[@revision][:path/in/repo]"
)
PICKLE_HELP = "allow a pickled .pt/.pth/.bin state dict (read with weights_only=True; only from a source you trust)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "predict":
        return predict_command(args)
    if args.command == "convert":
        return convert_command(args)
    if args.command == "export":
        return export_command(args)
    return 2  # pragma: no cover - argparse enforces the sub-command


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def predict_command(args: argparse.Namespace) -> int:
    """The streaming pipeline (:mod:`hydralanet.batch.pipeline`), under ``torchrun`` too."""
    from .batch.runner import PredictRequest, run_predict

    return run_predict(PredictRequest.from_args(args))


def convert_command(args: argparse.Namespace) -> int:
    from .checkpoints.convert import convert_to_folder, export_original
    from .checkpoints.format import CheckpointError
    from .checkpoints.original import ORIGINAL_LAYOUT
    from .checkpoints.read import describe_identity

    try:
        if args.to == "original":
            if args.name or args.threshold or args.crop:
                return _fail(
                    "--name, --threshold and --crop describe a checkpoint folder; the original layout has no place for them"
                )
            out, loaded = export_original(args.source, args.out, allow_pickle=args.allow_pickle)
            arch = loaded.config.model
            print(
                f"wrote {out} ({ORIGINAL_LAYOUT}, {arch.encoder}, D = {arch.decoder_channels}) from {describe_identity(loaded.identity)}; "
                f"the original code thresholds at 0.35 and reads the centre square",
                file=sys.stderr,
            )
        else:
            out, loaded = convert_to_folder(
                args.source,
                args.out,
                allow_pickle=args.allow_pickle,
                name=args.name,
                thresholds=dict(args.threshold),
                crop=args.crop,
            )
            print(
                f"wrote {out} from {describe_identity(loaded.identity)}; its metrics are unknown until scored "
                f"(python -m training.evaluate --model {out} ...)",
                file=sys.stderr,
            )
    except (CheckpointError, ValueError, OSError) as exc:
        return _fail(str(exc))
    return 0


def export_command(args: argparse.Namespace) -> int:
    from .checkpoints.format import CheckpointError
    from .checkpoints.read import describe_identity
    from .inference.export import FORMATS, export_model

    print("exporting (tracing the network and checking the graph against PyTorch)...", file=sys.stderr)
    try:
        out, gap, loaded = export_model(args.model, args.out, fmt=args.format, allow_pickle=args.allow_pickle)
    except (CheckpointError, ValueError, OSError) as exc:
        return _fail(str(exc))
    side = loaded.config.preprocessing.input_size
    print(
        f"wrote {out} ({FORMATS[args.format][1]}) from {describe_identity(loaded.identity)}; largest probability difference from "
        f"PyTorch on a random "
        f"{side} px batch: {gap:.1e}",
        file=sys.stderr,
    )
    return 0
