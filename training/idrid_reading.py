"""The reading measured against IDRiD's graders (docs/reading.md).

    python -m training.idrid_reading landmarks --idrid IDRIDROOT --out DIR [--figures docs/images]
    python -m training.idrid_reading grading --idrid IDRIDROOT --model weights --out DIR

``IDRIDROOT`` is the official release's folder (``A. Segmentation``, ``B. Disease Grading``,
``C. Localization``).

``landmarks``: the optic disc and fovea found by each finder of :mod:`hydralanet.reading.landmarks`
(``--finder``: the learned head beside the bundled model and image analysis; no lesion model)
on all of part C's photos (413 training, 103 test), against the graders' centres: distance in
pixels of the 4288 x 2848 photo and in disc diameters (DD). IDRiD gives no disc size with the
centres, so 1 DD is the median equivalent diameter of the optic-disc masks of part A (81 photos
of the same camera). Writes ``DIR/landmarks.csv`` (one row a photo and finder),
``DIR/landmarks.json`` and ``DIR/landmarks.md`` (per finder and split: found, mean and median
distance, share within 0.5 DD, below the confidence floor), and to ``--figures`` a histogram of
the distances and a contact sheet of the ten test photos with the largest fovea or disc
distance for the first finder.

``grading``: part B's test photos (103) through the model and the reading: the DME risk grade
against the graders' (accuracy, confusion matrix, quadratic kappa), a retinopathy estimate from
the lesions (what one photo supports) against the graders' grade 0-4, and the AUC of a
lesion-burden score for referable retinopathy (grade >= 2), with sensitivity and specificity at
a cut-off chosen on training photos (``--train-photos``: how many of the 413, spread evenly).
Writes ``DIR/grading.csv``, ``DIR/grading.json`` and ``DIR/grading.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hydralanet.io.images import read_image, write_atomic

from .datasets.idrid import parse_idrid_reading
from .idrid_grading import run_grading, write_csv
from .landmark_figures import FINDER_NAMES, FINDERS, SPLITS, TOLERANCE_DD, contact_sheet, histogram

SEGMENTATION_OD = "A. Segmentation/2. All Segmentation Groundtruths"


def idrid_disc_diameter(root: Path) -> float:
    """Median equivalent diameter (px) of the optic-disc masks of IDRiD part A."""
    files = sorted((root / SEGMENTATION_OD).glob("*/5. Optic Disc/*"))
    if not files:
        raise SystemExit(f"{root / SEGMENTATION_OD}: no '*/5. Optic Disc/*' masks (needed for the disc diameter)")
    sizes = []
    for path in files:
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if mask is None:
            raise SystemExit(f"{path}: not a readable mask")
        mask = (mask[..., 0] if mask.ndim == 3 else mask) > 0
        sizes.append(2 * np.sqrt(mask.sum() / np.pi))
    return float(np.median(sizes))


def measure_landmarks(records, dd_px: float, finders: dict[str, Any], progress: bool = True) -> list[dict[str, Any]]:
    """One row per record and finder (``finders``: name -> the ``head`` argument of
    :func:`~hydralanet.reading.landmarks.find_landmarks`): found centres, confidences, whether each
    is reliable, distances to the graders' (px and DD)."""
    from hydralanet.preprocessing import fov_mask
    from hydralanet.reading.landmarks import find_landmarks

    rows = []
    start = time.perf_counter()
    for i, record in enumerate(records):
        image = read_image(record.image)
        fov = fov_mask(image)
        for finder, head in finders.items():
            found = find_landmarks(image, fov, head=head)
            row: dict[str, Any] = {
                "image": record.image.stem,
                "split": record.official_split,
                "finder": finder,
                "eye": found.eye,
            }
            for key, got in (("disc", found.disc), ("fovea", found.fovea)):
                tx, ty = record.labels.get(f"{key}_x"), record.labels.get(f"{key}_y")
                row[f"{key}_true_x"], row[f"{key}_true_y"] = tx, ty
                row[f"{key}_x"] = got.x if got else None
                row[f"{key}_y"] = got.y if got else None
                row[f"{key}_confidence"] = got.confidence if got else None
                row[f"{key}_reliable"] = got.reliable if got else None
                error = float(np.hypot(got.x - tx, got.y - ty)) if got is not None and tx is not None else None
                row[f"{key}_error_px"] = None if error is None else round(error, 1)
                row[f"{key}_error_dd"] = None if error is None else round(error / dd_px, 3)
            row["disc_diameter_px"] = found.disc.diameter_px if found.disc else None
            row["disc_diameter_source"] = found.disc.diameter_source if found.disc else None
            rows.append(row)
        if progress and (i + 1) % 25 == 0:
            rate = (time.perf_counter() - start) / (i + 1)
            print(f"{i + 1}/{len(records)} photos, {rate:.2f} s each", file=sys.stderr, flush=True)
    return rows


def summarise(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Found, mean / median / 90th-percentile distance and share within 0.5 DD (a landmark not
    found counts as outside the tolerance, and is left out of the means), how many were found
    below their finder's confidence floor (reported as "not found reliably") and how many of
    those were over 0.5 DD off."""
    errors = np.array([r[f"{key}_error_px"] for r in rows if r[f"{key}_error_px"] is not None], dtype=float)
    dd = np.array([r[f"{key}_error_dd"] for r in rows if r[f"{key}_error_dd"] is not None], dtype=float)
    n = len(rows)
    below = [r for r in rows if r[f"{key}_reliable"] is False]
    return {
        "photos": n,
        "found": int(errors.size),
        "mean_px": round(float(errors.mean()), 1) if errors.size else None,
        "median_px": round(float(np.median(errors)), 1) if errors.size else None,
        "p90_px": round(float(np.percentile(errors, 90)), 1) if errors.size else None,
        "mean_dd": round(float(dd.mean()), 3) if dd.size else None,
        f"within_{TOLERANCE_DD}_dd": round(float((dd <= TOLERANCE_DD).sum()) / n, 4) if n else None,
        "below_floor": len(below),
        "below_floor_off": sum(1 for r in below if r[f"{key}_error_dd"] > TOLERANCE_DD),
    }


HELD_OUT = 83  # of the 413 training photos, held out from the learned head (training.landmark_head)
REPORT_SPLITS = ("train", "held_out", "test")


def held_out_names(names, seed: int = 0, count: int = HELD_OUT) -> list[str]:
    """The training photos the learned head did not learn from: ``count`` of the sorted
    ``names``, drawn by ``seed`` (the head's training and this report draw the same)."""
    names = sorted(names)
    return sorted(names[i] for i in np.random.default_rng(seed).permutation(len(names))[:count])


def landmark_report(rows: list[dict[str, Any]], dd_px: float) -> dict[str, Any]:
    """Per finder and split; ``held_out``: the training photos of :func:`held_out_names`."""
    out: dict[str, Any] = {"dd_px": round(dd_px, 1), "tolerance_dd": TOLERANCE_DD}
    held = set(held_out_names({r["image"] for r in rows if r["split"] == "train"}))
    for finder in FINDERS:
        for split in REPORT_SPLITS:
            subset = [
                r
                for r in rows
                if r["finder"] == finder
                and (r["split"] == split or split == "held_out" and r["split"] == "train" and r["image"] in held)
            ]
            if subset:
                out.setdefault(finder, {})[split] = {key: summarise(subset, key) for key in ("disc", "fovea")}
    return out


def landmark_markdown(report: dict[str, Any]) -> list[str]:
    lines = [
        f"1 DD = {report['dd_px']} px (median optic-disc mask of IDRiD part A)",
        "",
        "| finder | photos | landmark | found | mean distance | median | 90th percentile | within 0.5 DD "
        "| below the floor (over 0.5 DD off) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {"train": "train ({})", "held_out": "held out ({} of train)", "test": "**test ({})**"}
    for finder in FINDERS:
        for split in REPORT_SPLITS:
            for key, name in (("disc", "optic disc"), ("fovea", "fovea")):
                s = report.get(finder, {}).get(split, {}).get(key)
                if not s:
                    continue
                lines.append(
                    f"| {FINDER_NAMES[finder]} | {labels[split].format(s['photos'])} | {name} | {s['found']} | "
                    f"{s['mean_px']} px ({s['mean_dd']} DD) | {s['median_px']} px | {s['p90_px']} px | "
                    f"{100 * s[f'within_{TOLERANCE_DD}_dd']:.1f} % | {s['below_floor']} ({s['below_floor_off']}) |"
                )
    return lines


def landmark_finders(names: list[str], head: str | None) -> dict[str, Any]:
    """``--finder`` names -> the ``head`` argument of ``find_landmarks`` for each."""
    from hydralanet.reading.landmark_head import LandmarkHeadError, bundled_landmark_head, load_landmark_head

    finders: dict[str, Any] = {}
    for name in FINDERS:
        if name not in names:
            continue
        if name == "image":
            finders[name] = None
            continue
        try:
            loaded = load_landmark_head(head) if head else bundled_landmark_head()
        except LandmarkHeadError as exc:
            raise SystemExit(str(exc)) from None
        if loaded is None:
            raise SystemExit("no learned head beside the bundled model (weights/landmarks.*): pass --finder image")
        finders[name] = loaded
    return finders


def run_landmarks(args: argparse.Namespace) -> int:
    root = Path(args.idrid)
    records = [r for r in parse_idrid_reading(root) if r.official_split in args.split]
    records.sort(key=lambda r: (r.official_split, r.image.stem))
    if args.limit:
        records = records[: args.limit]
    finders = landmark_finders(args.finder, args.head)
    dd_px = idrid_disc_diameter(root)
    start = time.perf_counter()
    rows = measure_landmarks(records, dd_px, finders)
    seconds = time.perf_counter() - start
    out = Path(args.out)
    write_csv(out / "landmarks.csv", rows)
    report = landmark_report(rows, dd_px)
    report["seconds_per_photo"] = round(seconds / max(1, len(records)), 2)
    report["finders"] = {name: FINDER_NAMES[name] for name in finders}
    figures = Path(args.figures) if args.figures else out
    figures.mkdir(parents=True, exist_ok=True)
    histogram(rows, dd_px, figures / "idrid_landmark_errors.png")
    report["worst_test_photos"] = contact_sheet(rows, records, dd_px, figures / "idrid_landmarks_worst10.jpg")
    write_atomic(out / "landmarks.json", json.dumps(report, indent=2).encode())
    lines = landmark_markdown(report)
    write_atomic(out / "landmarks.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    print(
        f"{report['seconds_per_photo']} s a photo (all finders); worst test photos "
        f"({FINDER_NAMES[next(iter(finders))]}): {', '.join(report['worst_test_photos'])}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.idrid_reading", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    lm = sub.add_parser("landmarks", help="optic disc and fovea against IDRiD part C")
    lm.add_argument("--idrid", required=True, help="the IDRiD release's folder (A., B., C. ...)")
    lm.add_argument("--out", required=True)
    lm.add_argument("--figures", help="where the histogram and contact sheet go (default: --out)")
    lm.add_argument("--split", nargs="+", choices=SPLITS, default=list(SPLITS))
    lm.add_argument("--limit", type=int, default=0, help="only the first N photos (a quick look)")
    lm.add_argument(
        "--finder",
        nargs="+",
        choices=FINDERS,
        default=list(FINDERS),
        help="learned: the learned head; image: image analysis (default: both, each photo read once)",
    )
    lm.add_argument("--head", help="the learned head's folder or file (default: beside the bundled model)")
    gr = sub.add_parser("grading", help="DME risk and referable retinopathy against IDRiD part B")
    gr.add_argument("--idrid", required=True)
    gr.add_argument("--model", default="weights")
    gr.add_argument("--out", required=True)
    gr.add_argument("--train-photos", type=int, default=103, help="training photos to choose the cut-off on")
    gr.add_argument("--device", default="auto")
    gr.add_argument("--limit", type=int, default=0, help="only the first N photos of each split (a quick look)")
    gr.add_argument("--resume", action="store_true", help="keep the photos DIR/grading.csv already has")
    gr.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="test-time augmentation, as predict --tta (default: the checkpoint's)",
    )
    args = parser.parse_args(argv)
    if args.command == "landmarks":
        return run_landmarks(args)
    return run_grading(args)


if __name__ == "__main__":
    raise SystemExit(main(argv=None))
