"""Score a checkpoint on a manifest split the way users run it.

    python -m training.evaluate --model SOURCE --manifest M.csv --split test --out DIR \
        [--tta] [--precision fp32] [--device auto]

Each image goes through :func:`hydralanet.predict` (the app's and the CLI's inference path,
with the checkpoint's preprocessing) and is compared with its masks at the ORIGINAL
resolution, binarised. Binary metrics use the checkpoint's thresholds. Writes
``DIR/metrics.json`` (per class + macro: aupr (exact average precision), aupr11 (the
literature's 11-threshold AUPR), f1, iou, precision, recall; overall and per source dataset;
expected calibration error per class), ``DIR/metrics.md``, ``DIR/pr_curves.png`` and
``DIR/reliability.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from hydralanet import load_model, predict
from hydralanet.batch.pipeline import Failed, PhotoDataset, PhotoJob, decoded, default_workers, fork_safe_opencv
from hydralanet.checkpoints.format import CheckpointError
from hydralanet.config import CLASSES, PRECISIONS, format_threshold
from hydralanet.io.images import write_atomic

from .calibration import ECE_BINS, plot_reliability, reliability
from .data import read_mask, split_rows
from .metrics import MetricSuite, PRAccumulator, bootstrap_average_precision
from .modelcard import json_safe, metrics_table
from .prepare import read_manifest
from .reading_eval import ReadingScores, has_labels
from .reading_eval import markdown as reading_markdown
from .runfolder import save_figure


def evaluate(
    model: str,
    manifest: str | os.PathLike,
    split: str,
    out: str | os.PathLike,
    *,
    tta: bool | None = None,
    precision: str = "fp32",
    device: str = "auto",
    bootstrap: int = 0,
) -> dict[str, Any]:
    """Run the evaluation and write its files; returns what ``metrics.json`` holds.
    ``bootstrap`` > 0: that many resamples of the images give a 95 % interval of each
    lesion's pooled AP (``metrics["overall"][lesion]["aupr_95"]``)."""
    out = Path(out)
    loaded = load_model(model, device=device)
    tta = loaded.resolve_tta(tta)  # None: the checkpoint's, as predict
    rows = split_rows(read_manifest(manifest), split)
    sources = sorted({r["source"] for r in rows})
    thresholds = [loaded.config.thresholds[c] for c in CLASSES]
    suite = MetricSuite(sources, thresholds=thresholds)
    reading = ReadingScores() if has_labels(rows) else None
    per_image: list[PRAccumulator] = []
    lesion_free: dict[str, dict[str, float]] = {}  # photo -> % of its field marked, per lesion

    def each(row: dict[str, Any], prediction, targets: np.ndarray) -> None:
        if reading:
            reading.update(row, prediction, targets, loaded.config.thresholds)
        if not any(row.get(c) for c in CLASSES):  # given as lesion-free: no mask at all
            marked = prediction.statistics(loaded.config.thresholds)
            lesion_free[Path(row["image"]).name] = {r["lesion"]: r["coverage_pct"] for r in marked}
        if bootstrap:
            one = PRAccumulator()
            one.update(torch.from_numpy(prediction.probabilities)[None], torch.from_numpy(targets)[None])
            per_image.append(one)

    start = time.time()
    score_rows(
        loaded,
        rows,
        suite,
        desc=f"evaluating {split}",
        tta=tta,
        precision=precision,
        each=each,
    )
    seconds = time.time() - start

    metrics = json_safe(suite.compute())
    if bootstrap:
        interval = bootstrap_average_precision(per_image, resamples=bootstrap)
        for c, (low, high) in zip(CLASSES, interval):
            finite = bool(np.isfinite(low) and np.isfinite(high))
            metrics["overall"][c]["aupr_95"] = [float(low), float(high)] if finite else None
    overall = suite.overall_pr()
    curves = reliability(overall)
    report = {
        "model": dict(loaded.identity),
        "manifest": str(manifest),
        "split": split,
        "images": {"all": len(rows), **{s: sum(r["source"] == s for r in rows) for s in sources}},
        "thresholds": dict(loaded.config.thresholds),
        "settings": _settings(loaded, tta, precision),
        "seconds": round(seconds, 2),
        "bootstrap": bootstrap,
        "metrics": metrics,
        "calibration_error": {c: json_safe(curves[c]["ece"]) for c in CLASSES},
        **({"reading": json_safe(reading.report())} if reading else {}),
        **({"lesion_free": lesion_free_summary(lesion_free)} if lesion_free else {}),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "metrics.json", (json.dumps(report, indent=2) + "\n").encode())
    write_atomic(out / "metrics.md", render_markdown(report).encode())
    plot_pr_curves(overall, thresholds, out / "pr_curves.png", title=f"{loaded.identity['name']} on {split}")
    plot_reliability(curves, out / "reliability.png", title=f"{loaded.identity['name']} on {split}")
    return report


def _settings(loaded, tta: bool, precision: str) -> dict[str, Any]:
    """How the photos were scored: the ``settings`` of ``metrics.json``."""
    return {
        "tta": tta,
        "precision": precision,
        "device": str(loaded.device),
        "resolution": "original",
        "input_size": loaded.config.preprocessing.input_size,
        "clahe": loaded.config.preprocessing.clahe,
        "crop": loaded.config.preprocessing.crop,
        "calibrated": loaded.config.calibration is not None,
    }


def score_rows(
    loaded,
    rows: list[dict[str, Any]],
    suite: MetricSuite,
    *,
    desc: str,
    tta: bool = False,
    precision: str = "fp32",
    calibrated: bool = True,
    each=None,
    workers: int | None = None,
    scale: float | None = None,
) -> None:
    """Run :func:`hydralanet.predict` on each manifest row and add it to ``suite`` at the
    image's original resolution (``calibrated=False``: the raw sigmoid, for fitting calibration).
    ``each(row, prediction, targets)`` is called for every photo when given. Photos are decoded
    and preprocessed ahead in worker processes, by ``predict``'s pipeline stage
    (:mod:`hydralanet.batch.pipeline`); ``workers`` None: one per core. ``scale``: one input
    size, that multiple of the checkpoint's (as ``predict``)."""
    jobs = [PhotoJob(i, row["image"], str(i)) for i, row in enumerate(rows)]
    dataset = PhotoDataset(jobs, loaded.config.preprocessing, {} if scale is None else {"scale": scale})
    workers = default_workers() if workers is None else workers
    with fork_safe_opencv(workers):
        for sample in tqdm(decoded(dataset, workers), total=len(rows), desc=desc, file=sys.stderr):
            if isinstance(sample, Failed):
                raise ValueError(sample.record["message"].removeprefix("error: "))
            row, image = rows[sample.job.index], sample.image.numpy()
            prediction = predict(
                loaded,
                image,
                tta=tta,
                precision=precision,
                calibrated=calibrated,
                scale=scale,
                prepared=sample.prepared(),
            )
            shape = image.shape[:2]
            targets = np.stack([read_mask(row[c], shape) if row.get(c) else np.zeros(shape, bool) for c in CLASSES])
            suite.update(
                torch.from_numpy(prediction.probabilities)[None], torch.from_numpy(targets)[None], row["source"]
            )
            if each is not None:
                each(row, prediction, targets)


LESION_FREE_AIM_PCT = 0.1  # what a lesion-free photo should show at most, per lesion (% of its field)


def lesion_free_summary(marked: dict[str, dict[str, float]]) -> dict[str, Any]:
    """What the model marks on the photos given as lesion-free (``marked``: photo -> lesion -> % of
    its field of view at the model's thresholds): per lesion the median, the largest and how
    many photos exceed :data:`LESION_FREE_AIM_PCT`, and the photos themselves."""
    summary = {}
    for c in CLASSES:
        values = np.array([m[c] for m in marked.values()], dtype=np.float64)
        summary[c] = {
            "median_pct": round(float(np.median(values)), 4),
            "max_pct": round(float(values.max()), 4),
            "photos_over_aim": int((values > LESION_FREE_AIM_PCT).sum()),
        }
    return {"photos": len(marked), "aim_pct": LESION_FREE_AIM_PCT, "coverage": summary, "per_photo": marked}


def lesion_free_lines(found: dict[str, Any]) -> list[str]:
    """The markdown table of :func:`lesion_free_summary`."""
    if not found:
        return []
    rows = [
        f"| {c} | {v['median_pct']:.3f} | {v['max_pct']:.3f} | {v['photos_over_aim']} |"
        for c, v in found["coverage"].items()
    ]
    return [
        f"## Lesion-free photos ({found['photos']})",
        "",
        "Share of the field of view marked at the model's thresholds on the photos given without any "
        f"lesion mask (the aim: at most {found['aim_pct']:g} % per lesion):",
        "",
        f"| lesion | median % | largest % | photos over {found['aim_pct']:g} % |",
        "|---|---:|---:|---:|",
        *rows,
        "",
    ]


def render_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Evaluation: {report['model']['name']} on `{report['split']}`",
        "",
        f"Model `{report['model']['source']}` (sha256 {report['model']['sha256'][:12]}), "
        f"{report['images']['all']} images at their original resolution; thresholds "
        + ", ".join(f"{c} {format_threshold(report['thresholds'][c])}" for c in CLASSES)
        + f" ({'calibrated' if report['settings'].get('calibrated') else 'raw'} probabilities)"
        + f"; TTA {'on' if report['settings']['tta'] else 'off'}, {report['settings']['precision']}.",
        "",
        AUPR_NOTE,
        "",
    ]
    for name, metrics in report["metrics"].items():
        count = report["images"]["all" if name == "overall" else name]
        lines += [f"## {name} ({count} images)", "", *metrics_table(metrics), ""]
    lines += interval_lines(report)
    if _scored_lesions(report):
        lines += literature_lines(report["metrics"]["overall"])
    lines += reading_markdown(report.get("reading") or {})
    lines += lesion_free_lines(report.get("lesion_free") or {})
    ece = report.get("calibration_error") or {}
    if ece:
        lines += [
            "## Calibration",
            "",
            f"Expected calibration error over all pixels ({ECE_BINS} equal-width probability bins; "
            "`reliability.png` shows the bins):",
            "",
            "| lesion | ECE |",
            "|---|---:|",
            *[f"| {c} | {'n/a' if ece.get(c) is None else f'{ece[c]:.5f}'} |" for c in CLASSES],
            "",
        ]
    return "\n".join(lines)


# Published pixel AUPR on IDRiD's 27 official test photos (the 11-threshold form of the
# challenge: Porwal et al., Medical Image Analysis 59:101561, 2020; HRDecoder, MICCAI 2024).
IDRID_CHALLENGE_BEST = {"EX": 0.8850, "HE": 0.6804, "MA": 0.5017, "SE": 0.6995}
IDRID_CHALLENGE_TEAMS = {"EX": "PATech", "HE": "VRT", "MA": "iFLYTEK-MIG", "SE": "VRT"}
HRDECODER_MAUPR11 = 0.7134


def interval_lines(report: dict[str, Any]) -> list[str]:
    """The bootstrap interval of each lesion's exact AP, when the run computed one."""
    overall = report["metrics"]["overall"]
    if not report.get("bootstrap") or not any(overall.get(c, {}).get("aupr_95") for c in CLASSES):
        return []
    cells = []
    for c in CLASSES:
        low, high = overall[c].get("aupr_95") or (None, None)
        cells.append(f"{c} {low:.3f}-{high:.3f}" if low is not None else f"{c} n/a")
    return [
        f"Spread: 95 % bootstrap interval of the pooled exact AP ({report['bootstrap']} resamples of the "
        f"{report['images']['all']} images): " + ", ".join(cells) + ".",
        "",
    ]


def literature_lines(overall: dict[str, Any]) -> list[str]:
    """This model's 11-threshold AUPR beside the IDRiD challenge's best per lesion and HRDecoder."""

    def cell(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    ours = [overall[c].get("aupr11") for c in CLASSES]
    mean = sum(ours) / len(ours) if all(v is not None for v in ours) else None
    best = sum(IDRID_CHALLENGE_BEST.values()) / len(CLASSES)
    return [
        "## Beside published results (IDRiD test set, 11-threshold AUPR)",
        "",
        "| lesion | this model aupr | this model aupr11 | IDRiD challenge best aupr11 (team) |",
        "|---|---:|---:|---:|",
        *[
            f"| {c} | {cell(overall[c].get('aupr'))} | {cell(overall[c].get('aupr11'))} | "
            f"{IDRID_CHALLENGE_BEST[c]:.4f} ({IDRID_CHALLENGE_TEAMS[c]}) |"
            for c in CLASSES
        ],
        f"| **mean** | {cell(overall.get('macro', {}).get('aupr'))} | {cell(mean)} | {best:.4f} "
        f"(per-lesion best of different teams); HRDecoder {HRDECODER_MAUPR11:.4f} |",
        "",
    ]


AUPR_NOTE = (
    "Two AUPRs: **aupr** is exact average precision over all pixels (every distinct score a threshold, "
    "step-wise, as scikit-learn's `average_precision_score`); **aupr11** is the 11-threshold AUPR of the "
    "IDRiD/DDR literature (the challenge, M2MRF, HRDecoder): thresholds 0, 0.1, ..., 1 (`p > t`), precision 1 "
    "where nothing is predicted, trapezoidal area. Compare aupr11 with published numbers, aupr with exact ones."
)


def plot_pr_curves(pr: PRAccumulator, thresholds: list[float], path: Path, *, title: str) -> None:
    """One precision-recall curve per class, with AP and the operating point at its threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hydralanet.report.overlay import COLOURS

    ap = pr.average_precision()
    fig, ax = plt.subplots(figsize=(6, 5))
    for c, name in enumerate(CLASSES):
        curve = pr.curve(c)
        colour = np.asarray(COLOURS[name]) / 255
        if not curve.positives:
            ax.plot([], [], color=colour, label=f"{name}: no lesion pixels")
            continue
        ax.step(curve.recall, curve.precision, where="post", color=colour, label=f"{name}: AP {ap[c]:.3f}")
        at = np.flatnonzero(curve.thresholds >= thresholds[c])
        if at.size:
            i = at[-1]
            ax.plot(curve.recall[i], curve.precision[i], "o", color=colour, markeredgecolor="black")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub repo id[@revision]")
    parser.add_argument("--manifest", required=True, type=Path)
    parser.add_argument("--split", default="test", help="manifest split to score (default test)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="test-time augmentation (flips, and the checkpoint's input sizes per lesion), as `predict --tta` "
        "(default: the checkpoint's)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32 (default) is the exact path; auto is what users get by default",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="N",
        help="N resamples of the images for a 95 %% interval of each lesion's AP (0: none; 1000 is usual; "
        "memory: 4 MB per image)",
    )
    args = parser.parse_args(argv)
    if args.bootstrap < 0:
        parser.error(f"--bootstrap must be >= 0, got {args.bootstrap}")
    try:
        report = evaluate(
            args.model,
            args.manifest,
            args.split,
            args.out,
            tta=args.tta,
            precision=args.precision,
            device=args.device,
            bootstrap=args.bootstrap,
        )
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    macro = report["metrics"]["overall"]["macro"]
    print(
        f"{report['split']}: {report['images']['all']} images, macro F1 {macro['f1']:.4f}, AUPR "
        f"{macro['aupr'] if macro['aupr'] is None else round(macro['aupr'], 4)} -> {args.out / 'metrics.json'}"
    )
    overall = report["metrics"]["overall"]
    for c in CLASSES:
        interval = overall[c].get("aupr_95")
        spread = f" (95 % interval {interval[0]:.3f}-{interval[1]:.3f})" if interval and interval[0] is not None else ""
        print(f"  {c}: aupr {_fmt(overall[c].get('aupr'))}{spread}, aupr11 {_fmt(overall[c].get('aupr11'))}")
    if _scored_lesions(report):
        print("\n".join(literature_lines(overall)[2:]))
    if report.get("lesion_free"):
        print("\n".join(lesion_free_lines(report["lesion_free"])[4:]))
    return 0


def _scored_lesions(report: dict[str, Any]) -> bool:
    """IDRiD photos with lesion masks were scored: the published results apply."""
    lesion_free = (report.get("lesion_free") or {}).get("photos", 0)
    return set(report["images"]) - {"all"} == {"idrid"} and report["images"]["all"] > lesion_free


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    raise SystemExit(main())
