"""Fit a checkpoint's per-class calibration on a manifest's validation split.

    python -m training.calibrate --model DIR --manifest M.csv [--split val] [--test-split test] \
        [--test-manifest T.csv] [--out DIR2] [--precision fp32] [--tta [--scales SPEC]] [--edge-margin SPEC]

Runs :func:`hydralanet.predict` (raw sigmoid) on the split at the photos' original resolution,
fits ``p = sigmoid(a * logit + b)`` per class (:mod:`training.calibration`), re-tunes the
thresholds for the best F1 on the calibrated probabilities (``--tta``: on the calibrated
probabilities averaged over flips, and the checkpoint then runs with flips by default), and
writes the checkpoint folder
again (in place, or to ``--out``) with ``calibration`` and the new thresholds in
``config.json``; ``model.safetensors`` is copied byte for byte. Reports the expected
calibration error before and after, on the fitting split and on ``--test-split`` when the
manifest (or ``--test-manifest``) has it. ``--split`` may name several splits (``train,val``:
a set of photos that no training stage saw, all of it for fitting). ``--edge-margin`` stores a
band along the field of view's edge where a lesion is not marked and fits with it in force.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from hydralanet import load_model
from hydralanet.checkpoints.format import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, CheckpointError
from hydralanet.config import (
    CLASSES,
    PRECISIONS,
    CheckpointConfig,
    scale_factors,
    validate_edge_margin,
    validate_scales,
)

from .calibration import calibrate_threshold, fit_platt, reliability
from .data import split_rows
from .evaluate import score_rows
from .metrics import MetricSuite, PRAccumulator
from .modelcard import calibration_section, render_model_card
from .prepare import read_manifest
from .runfolder import publish_folder


def raw_histograms(
    loaded, rows: list[dict[str, Any]], *, desc: str, precision: str, scales: dict[str, tuple[float, ...]] | None = None
) -> PRAccumulator:
    """The raw sigmoid's PR histograms on ``rows``; with ``scales`` each class pools the views
    at the input scales it averages (the calibration is applied to each view, so it is fitted
    on all of them)."""
    factors = scale_factors(scales)
    scales = scales or dict.fromkeys(CLASSES, factors)
    pooled = PRAccumulator()
    for factor in factors:
        suite = MetricSuite(sorted({r["source"] for r in rows}))
        at = "" if factor == 1.0 else f" at {factor:g} x the input size"
        scale = None if factor == 1.0 else factor
        score_rows(loaded, rows, suite, desc=desc + at, precision=precision, calibrated=False, scale=scale)
        pr = suite.overall_pr()
        for i, c in enumerate(CLASSES):
            if factor in scales[c]:
                pooled.positives[i] += pr.positives[i]
                pooled.negatives[i] += pr.negatives[i]
    return pooled


def calibrate(
    model: str | os.PathLike,
    manifest: str | os.PathLike,
    *,
    split: str = "val",
    test_split: str | None = "test",
    out: str | os.PathLike | None = None,
    precision: str = "fp32",
    test_manifest: str | os.PathLike | None = None,
    tta: bool = False,
    scales: dict[str, Any] | None = None,
    edge_margin: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit, re-tune, write; returns the record stored as ``provenance["calibration"]``.
    ``tta``: the thresholds are tuned on flip-averaged calibrated probabilities and the
    checkpoint's ``tta`` is set (the calibration itself is fitted per view, as it is applied).
    ``scales`` (with ``tta``): the input scales each class averages (``config.scales``), stored in
    the checkpoint; the calibration is fitted on all their views and the thresholds on the average.
    ``edge_margin`` (``{lesion: share}``, ``config.edge_margin``): the band along the field's edge
    where a lesion is not marked, stored in the checkpoint and in force while fitting (None: the
    checkpoint's own; a share of 0 removes a lesion's band)."""
    scales = validate_scales(scales)
    if scales and not tta:
        raise ValueError("scales apply under test-time augmentation: give --tta with --scales")
    folder = Path(model)
    if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise CheckpointError(f"{model}: not a checkpoint folder ({CONFIG_NAME} + {WEIGHTS_NAME}); convert it first")
    loaded = load_model(folder, device="cpu")
    if edge_margin is not None:
        loaded = replace(loaded, config=replace(loaded.config, edge_margin=validate_edge_margin(edge_margin)))
    rows = read_manifest(manifest)
    fit_rows = [r for name in split.split(",") for r in split_rows(rows, name.strip())]
    if not fit_rows:
        raise ValueError(f"{manifest}: no rows in split {split!r} to fit the calibration on")
    pr = raw_histograms(loaded, fit_rows, desc=f"calibrating on {split}", precision=precision, scales=scales)
    calibration = fit_platt(pr)
    raw_best = pr.best_thresholds(default=0.5)
    thresholds = {c: round(calibrate_threshold(raw_best[i], calibration[c]), 4) for i, c in enumerate(CLASSES)}
    if tta:
        thresholds = _tta_thresholds(
            loaded, fit_rows, calibration, scales, desc=f"thresholds with flips on {split}", precision=precision
        )
    record: dict[str, Any] = {
        "method": "platt (per class: p = sigmoid(a * logit + b))",
        "fitted_on": {"manifest": Path(manifest).name, "split": split, "images": len(fit_rows)},
        "ece": {split: _ece_pair(pr, calibration)},
        "thresholds_before": dict(loaded.config.thresholds),
        **({"thresholds_tuned_with": _tuned_with(scales)} if tta else {}),
        **({"edge_margin": dict(loaded.config.edge_margin)} if loaded.config.edge_margin else {}),
    }
    test_source = read_manifest(test_manifest) if test_manifest else rows
    test_rows = [r for r in test_source if r["split"] == test_split] if test_split else []
    if test_rows:
        test_pr = raw_histograms(
            loaded, test_rows, desc=f"measuring on {test_split}", precision=precision, scales=scales
        )
        record["ece"][test_split] = _ece_pair(test_pr, calibration)

    old = loaded.config
    config = CheckpointConfig(
        model=old.model,
        preprocessing=old.preprocessing,
        thresholds=thresholds,
        name=old.name,
        provenance={**old.provenance, "calibration": record},
        calibration=calibration,
        tta=tta or old.tta,
        scales=scales if tta else old.scales,
        edge_margin=old.edge_margin,
    )
    card_path = folder / CARD_NAME
    card = card_path.read_text() if card_path.exists() else ""
    _write_folder(folder, Path(out) if out else folder, config, _updated_card(card, old, config, loaded))
    return record


def _tuned_with(scales: dict[str, tuple[float, ...]] | None) -> str:
    if not scales:
        return "flip test-time augmentation"
    each = "; ".join(f"{c} {', '.join(f'{f:g}' for f in fs)}" for c, fs in scales.items())
    return f"flip test-time augmentation and input scales per lesion (x the input size: {each})"


def _tta_thresholds(
    loaded, rows: list[dict[str, Any]], calibration, scales, *, desc: str, precision: str
) -> dict[str, float]:
    """The best-F1 thresholds of the calibrated probabilities averaged over flips (and ``scales``)."""
    calibrated = replace(loaded, config=replace(loaded.config, calibration=calibration, scales=scales))
    suite = MetricSuite(sorted({r["source"] for r in rows}))
    score_rows(calibrated, rows, suite, desc=desc, tta=True, precision=precision)
    best = suite.overall_pr().best_thresholds(default=0.5)
    return {c: round(float(best[i]), 4) for i, c in enumerate(CLASSES)}


def _ece_pair(pr: PRAccumulator, calibration: dict[str, tuple[float, float]]) -> dict[str, dict[str, float]]:
    before, after = reliability(pr), reliability(pr, calibration)
    return {c: {"before": before[c]["ece"], "after": after[c]["ece"]} for c in CLASSES}


def _updated_card(card: str, old: CheckpointConfig, new: CheckpointConfig, loaded) -> str:
    """The card with the new thresholds and its *Calibration* section
    (:func:`training.modelcard.calibration_section`). A card that starts with what
    :func:`render_model_card` makes of the old config gets that part re-rendered (the rest, such
    as the bundled model's own sections, is kept); in any other card the thresholds line is
    replaced and the section put before *Use* (or at the end)."""
    parameters = loaded.identity.get("parameters")
    head_old = render_model_card(old, parameters=parameters)
    if card.startswith(head_old):
        return render_model_card(new, parameters=parameters) + card[len(head_old) :]
    if "## Calibration" in card:  # calibrated before: drop the old section
        start = card.index("## Calibration")
        end = card.find("\n## ", start + 1)
        card = card[:start] + (card[end + 1 :] if end != -1 else "")
    fresh = render_model_card(new, parameters=parameters).split("\n")
    line = next(x for x in fresh if x.startswith("- thresholds ("))
    extra = [x for x in fresh if x.startswith("- probabilities calibrated")]
    lines = []
    for x in card.split("\n"):
        if x.startswith("- probabilities calibrated"):
            continue
        lines += [line, *extra] if x.startswith("- thresholds (") else [x]
    card = "\n".join(lines)
    section = "\n".join(calibration_section(new))
    at = card.find("\n## Use")
    return card[: at + 1] + section + "\n" + card[at + 1 :] if at != -1 else card.rstrip("\n") + "\n\n" + section


def _write_folder(source: Path, out: Path, config: CheckpointConfig, card: str) -> None:
    """Copy the weights, write config and card, and swap the folder in atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shutil.copy2(source / WEIGHTS_NAME, tmp / WEIGHTS_NAME)
        (tmp / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        (tmp / CARD_NAME).write_text(card)
        os.chmod(tmp, 0o755)
        publish_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def parse_scales(spec: str) -> dict[str, list[float]]:
    """``'EX=0.667,1 HE=0.667 MA=1 SE=1'`` -> ``{"EX": [0.667, 1.0], ...}`` (checked by
    :func:`hydralanet.config.validate_scales`)."""
    out: dict[str, list[float]] = {}
    for part in spec.split():
        name, sep, values = part.partition("=")
        if not sep or name not in CLASSES:
            raise ValueError(
                f"--scales: {part!r} is not LESION=FACTOR[,FACTOR...] with a lesion of {', '.join(CLASSES)}"
            )
        try:
            out[name] = [float(v) for v in values.split(",")]
        except ValueError:
            raise ValueError(f"--scales: {part!r} has a factor that is not a number") from None
    return out


def parse_edge_margin(spec: str) -> dict[str, float]:
    """``'EX=0.012 SE=0.01'`` -> ``{"EX": 0.012, "SE": 0.01}`` (checked by
    :func:`hydralanet.config.validate_edge_margin`)."""
    out: dict[str, float] = {}
    for part in spec.split():
        name, sep, value = part.partition("=")
        if not sep or name not in CLASSES:
            raise ValueError(f"--edge-margin: {part!r} is not LESION=SHARE with a lesion of {', '.join(CLASSES)}")
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"--edge-margin: {part!r} has a share that is not a number") from None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.calibrate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint folder (config.json + model.safetensors)")
    parser.add_argument("--manifest", required=True, type=Path)
    parser.add_argument("--split", default="val", help="split(s) to fit on, comma-separated (default val)")
    parser.add_argument("--test-split", default="test", help="split to report ECE on too, if present (default test)")
    parser.add_argument(
        "--test-manifest", type=Path, default=None, help="manifest of --test-split (default: --manifest)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write here instead of updating --model in place")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument(
        "--tta", action="store_true", help="tune the thresholds with flips, and make flips the checkpoint's default"
    )
    parser.add_argument(
        "--scales",
        default=None,
        metavar="SPEC",
        help="with --tta: input scales each lesion averages, multiples of the input size, e.g. "
        "'EX=0.667,1 HE=0.667 MA=1 SE=1' (stored in the checkpoint)",
    )
    parser.add_argument(
        "--edge-margin",
        default=None,
        metavar="SPEC",
        help="lesions not marked within a band along the field of view's edge, as a share of the field's "
        "diameter, e.g. 'EX=0.012' (stored in the checkpoint; default: the checkpoint's own)",
    )
    args = parser.parse_args(argv)
    try:
        record = calibrate(
            args.model,
            args.manifest,
            split=args.split,
            test_split=args.test_split,
            out=args.out,
            precision=args.precision,
            test_manifest=args.test_manifest,
            tta=args.tta,
            scales=parse_scales(args.scales) if args.scales else None,
            edge_margin=parse_edge_margin(args.edge_margin) if args.edge_margin is not None else None,
        )
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for split, values in record["ece"].items():
        print(f"ECE on {split}: " + ", ".join(f"{c} {v['before']:.5f} -> {v['after']:.5f}" for c, v in values.items()))
    print(f"-> {args.out or args.model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
