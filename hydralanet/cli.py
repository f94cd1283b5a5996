"""Command line: ``python -m hydralanet predict PATH... --out DIR`` and ``convert SRC --out DIR``.

Only the standard library and :mod:`hydralanet.config` are imported at start, so ``--help``
and ``--version`` answer at once; torch, OpenCV and the model load when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from . import __version__
from .config import CLAHE_MODES, CLASSES, CROP_MODES, PRECISIONS, PreprocessConfig, validate_thresholds

DESCRIPTION = "Segment the four lesions of diabetic retinopathy (EX, HE, MA, SE) in colour fundus photographs."
OUTPUT_LAYOUT = """output layout of predict (other tools rely on it):
  DIR/<stem>/EX.png HE.png MA.png SE.png   0/255 masks, original size and orientation
  DIR/<stem>/overlay.png                   the lesions over the photo
  DIR/<stem>/prob_EX.png ...               16-bit PNG, p x 65535 (--save-probabilities)
  DIR/<stem>/findings.json                 optic disc, fovea, eye, image quality, lesions by
                                           ETDRS zone and quadrant, DME risk (research indicators)
  DIR/<stem>/<stem>.pdf                    the report (--report); DIR/report.pdf all in one (--report-combined)
  DIR/summary.csv                          one row per image and lesion
  DIR/zones.csv                            one row per image, lesion and zone
  DIR/summary.json                         the same + model identity, settings, findings, failures

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
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of images")
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
    p.add_argument("--tta", action="store_true", help="average over horizontal/vertical flips (3x slower)")
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
    _add_report_arguments(p)
    p.add_argument("--allow-pickle", action="store_true", help=PICKLE_HELP)
    p.add_argument(
        "--tile",
        type=_tile_arg,
        default=None,
        metavar="SIZE",
        help="segment at native resolution in overlapping SIZE px tiles (multiple of 32; for large photos)",
    )

    c = sub.add_parser(
        "convert",
        help="write weights (e.g. the original code's best_model.pt) as a checkpoint folder, or back",
        description="Convert SRC to a checkpoint folder (safetensors + config.json + model card), or with "
        "--to original to a best_model.pt the original HydraLA-Net code loads with strict=True.",
    )
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
    return parser


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
    return 2  # pragma: no cover - argparse enforces the sub-command


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def predict_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .checkpoint import CheckpointError, load_model
    from .fast import resolve_precision
    from .inference import lesion_statistics, predict
    from .io import ImageError, photo_sources, write_atomic
    from .preprocessing import BlankImageError
    from .reading import ZONE_COLUMNS
    from .report import run_record, summary_csv, table_csv

    if not 0.0 <= args.opacity <= 1.0:
        return _fail(f"--opacity must be in [0, 1], got {args.opacity}")
    try:
        loaded = load_model(args.model, device=args.device, allow_pickle=args.allow_pickle)
        resolve_precision(args.precision, loaded.device)  # an impossible pair fails before anything is written
    except (CheckpointError, ValueError) as exc:
        return _fail(str(exc))
    thresholds = validate_thresholds({**loaded.config.thresholds, **dict(args.threshold)})
    print(f"model: {describe_model(loaded)}", file=sys.stderr)
    preprocessing: PreprocessConfig = loaded.config.preprocessing
    if args.clahe:
        preprocessing = preprocessing.replace(clahe=args.clahe)
    if args.crop:
        preprocessing = preprocessing.replace(crop=args.crop)

    paths = photo_sources(args.paths)  # a file, or each frame of a multi-frame DICOM file
    if not paths:
        return _fail("no images found in " + ", ".join(map(str, args.paths)))
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    zone_rows: list[dict[str, Any]] = []
    readings: dict[str, dict[str, Any]] = {}
    failures: list[dict[str, str]] = []
    used_names: set[str] = set()
    started = time.perf_counter()
    record = run_record(loaded, preprocessing, thresholds, tta=args.tta, precision=args.precision)
    book = _report_writer(args, record, loaded.config.provenance) if args.report_combined else None
    reports = (record, loaded.config.provenance, book)
    bar = tqdm(paths, desc="segmenting", unit="image", disable=None)
    try:
        for source in bar:
            path = source.path
            try:
                image = source.read()
                facts = _dicom_facts(path, args.keep_identifiers)
                prediction = predict(
                    loaded,
                    image,
                    clahe=preprocessing.clahe,
                    tta=args.tta,
                    precision=args.precision,
                    tile=args.tile,
                    crop=preprocessing.crop,
                )
                name = _unique_name(source.stem, used_names)
                masks = prediction.masks(thresholds)  # once: outputs, statistics and the reading share them
                _write_outputs(out / name, image, prediction, masks, args)
            except ImageError as exc:
                failures.append({"image": str(path), "error": exc.problem})
                tqdm.write(f"error: {exc}", file=sys.stderr)
                continue
            except BlankImageError as exc:
                failures.append({"image": str(path), "error": str(exc)})
                tqdm.write(f"error: {path}: {exc}", file=sys.stderr)
                continue
            except Exception as exc:  # one photo's failure must not cost the others: record it, go on
                reason = f"{type(exc).__name__}: {(str(exc).strip() or 'no message').splitlines()[0]}"
                failures.append({"image": str(path), "error": reason})
                tqdm.write(f"error: {path}: {reason}", file=sys.stderr)
                continue
            for row in lesion_statistics(masks, prediction.fov, thresholds):
                rows.append({"image": name, "source": str(path), **row})
            found = _read_and_report(
                args, out / name, (name, image, masks, rows[-len(CLASSES) :]), prediction, facts, reports, failures
            )
            if found is not None:
                zone_rows += [{"image": name, **z} for z in found["zones"]]
                readings[name] = found
    finally:  # also on Ctrl-C: the summary of what was done is written
        summary = {
            **record,
            "tile": args.tile,
            "images": len(rows) // len(CLASSES),
            "seconds": round(time.perf_counter() - started, 2),
            "results": rows,
            "findings": readings,
            "failed": failures,
        }
        write_atomic(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
        write_atomic(out / "summary.csv", summary_csv(rows).encode())
        if not args.no_reading:
            write_atomic(out / "zones.csv", table_csv(zone_rows, ZONE_COLUMNS).encode())
        if book is not None and rows:
            write_atomic(out / "report.pdf", book.to_bytes())
    done = len(rows) // len(CLASSES)
    print(f"{done} of {len(paths)} images segmented -> {out}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} file(s) failed; see {out / 'summary.json'}", file=sys.stderr)
        return 1
    return 0


def _write_outputs(folder: Path, image, prediction, masks, args) -> None:
    """One photo's masks, probability maps (if asked) and overlay."""
    import numpy as np

    from .io import save_png
    from .overlay import render_overlay

    for c, mask in zip(CLASSES, masks):
        save_png(folder / f"{c}.png", mask.astype(np.uint8) * 255)
        if args.save_probabilities:
            prob16 = np.round(prediction.probabilities[CLASSES.index(c)] * 65535.0).astype(np.uint16)
            save_png(folder / f"prob_{c}.png", prob16)
    save_png(folder / "overlay.png", render_overlay(image, masks, opacity=args.opacity))


def _dicom_facts(path: Path, keep_identifiers: bool):
    """The DICOM header facts of ``path`` (None for other images); identifiers only when kept."""
    from .dicom import is_dicom_file, read_facts

    return read_facts(path, keep_identifiers=keep_identifiers) if is_dicom_file(path) else None


def _report_writer(args: argparse.Namespace, record: dict, provenance: dict):
    from .pdf_report import ReportWriter

    return ReportWriter(record, provenance, paper=args.paper, opacity=args.opacity)


def _read_and_report(
    args, folder: Path, photo: tuple, prediction, facts, reports: tuple, failures: list
) -> dict | None:
    """One photo's reading (``findings.json``; None with --no-reading) and PDF reports (--report:
    ``<stem>.pdf``; --report-combined: pages in the ``book`` of ``reports`` = (run record,
    provenance, book or None)). ``photo``: name, image, masks and statistics rows. A report that
    fails is recorded in ``failures``; the other outputs stand."""
    from tqdm import tqdm

    from .io import write_atomic
    from .pdf_report import ReportPhoto
    from .reading import findings, read_photo

    name, image, masks, stats = photo
    record, provenance, book = reports
    reading = found = None
    if not args.no_reading:
        reading = read_photo(
            image,
            prediction.fov,
            probabilities=prediction.probabilities,
            laterality=facts.laterality if facts else None,
            mm_per_px=facts.mm_per_px if facts else None,
        )
        found = findings(reading, masks)
        if facts is not None:
            found["dicom"] = facts.to_dict()
        write_atomic(folder / "findings.json", (json.dumps(found, indent=2) + "\n").encode())
    if args.report or book is not None:
        pages = ReportPhoto(name, image, masks, stats, reading, found, facts)
        try:
            if args.report:
                write_atomic(folder / f"{name}.pdf", _report_writer(args, record, provenance).add(pages).to_bytes())
            if book is not None:
                book.add(pages)
        except Exception as exc:  # a report must not cost the batch
            failures.append({"image": name, "error": f"report: {type(exc).__name__}: {exc}"})
            tqdm.write(f"error: {name}: report not written ({type(exc).__name__}: {exc})", file=sys.stderr)
    return found


def convert_command(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointError
    from .convert import convert_to_folder, export_original
    from .original import ORIGINAL_LAYOUT

    try:
        if args.to == "original":
            if args.name or args.threshold or args.crop:
                return _fail(
                    "--name, --threshold and --crop describe a checkpoint folder; the original layout has no place for them"
                )
            out, loaded = export_original(args.source, args.out, allow_pickle=args.allow_pickle)
            arch = loaded.config.model
            print(
                f"wrote {out} ({ORIGINAL_LAYOUT}, {arch.encoder}, D = {arch.decoder_channels}) from {describe_model(loaded)}; "
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
                f"wrote {out} from {describe_model(loaded)}; its metrics are unknown until scored "
                f"(python -m training.evaluate --model {out} ...)",
                file=sys.stderr,
            )
    except (CheckpointError, ValueError, OSError) as exc:
        return _fail(str(exc))
    return 0


def describe_model(loaded) -> str:
    """One line: name, source, the file used, and whether it was converted."""
    identity = loaded.identity
    parts = [identity["source"]]
    if identity.get("revision"):
        parts.append(f"revision {identity['revision'][:12]}")
    if identity.get("file"):
        parts.append(f"file {identity['file']}")
    if identity.get("converted_from"):
        parts.append(f"converted from {identity['converted_from']}")
    return f"{identity['name']} ({', '.join(parts)})"


def _unique_name(stem: str, used: set[str]) -> str:
    """Two inputs with the same stem (from different folders) must not overwrite each other."""
    name, k = stem, 2
    while name in used:
        name, k = f"{stem}_{k}", k + 1
    used.add(name)
    return name
