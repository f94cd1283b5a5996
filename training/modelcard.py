"""The model card (``README.md`` of a checkpoint folder), written from its ``config.json``.

Everything on the card comes from the checkpoint's provenance (what ``training.train`` and
``training.evaluate`` recorded), so the card cannot drift from the weights it describes.
"""

from __future__ import annotations

import math
from typing import Any

from hydralanet.config import CLASS_NAMES, CLASSES, CheckpointConfig, format_threshold

METRIC_COLUMNS = ("f1", "iou", "precision", "recall", "aupr", "aupr11")


def render_model_card(config: CheckpointConfig, *, parameters: int | None = None) -> str:
    """Markdown with Hub front matter: what the model is, the data, split sizes, metrics,
    thresholds, how to reproduce it, intended use and limits."""
    prov = config.provenance
    m, p = config.model, config.preprocessing
    size = f", {parameters / 1e6:.1f} M parameters" if parameters else ""
    lines = [
        "---",
        "library_name: hydralanet",
        "pipeline_tag: image-segmentation",
        "tags: [image-segmentation, medical-imaging, diabetic-retinopathy, fundus, hydralanet]",
        "---",
        f"# {config.name}",
        "",
        "HydraLA-Net segments four diabetic-retinopathy lesions in colour fundus photographs: "
        + ", ".join(f"**{c}** {CLASS_NAMES[c]}" for c in CLASSES)
        + ". Each pixel gets an independent probability per lesion.",
        "",
        "> **Research software, not a medical device.** Not for diagnosis, screening or any clinical decision.",
        "",
        "## Model",
        "",
        f"- LA-Net decoder with a per-lesion Hydra head: {m.encoder} encoder, {m.decoder_channels} decoder channels{size}",
        f"- input: field of view cropped, padded to a square, resized to {p.input_size} x {p.input_size}; "
        f"CLAHE `{p.clahe}` (clip {p.clip_limit}, {p.tile_grid}x{p.tile_grid} tiles); ImageNet normalisation",
        "- thresholds ("
        + ("tuned per lesion for the best F1 on validation" if prov.get("thresholds_tuned") else "defaults")
        + "): "
        + ", ".join(f"{c} {format_threshold(config.thresholds[c])}" for c in CLASSES),
        *_inference_lines(config),
        "",
    ]
    if not prov.get("trained", False):
        lines += ["**Untrained: random weights.** Its masks are meaningless.", ""]
    lines += _data_section(prov)
    lines += calibration_section(config)
    for title, key in (("Validation metrics", "val"), ("Test metrics", "test")):
        metrics = (prov.get("metrics") or {}).get(key)
        if metrics:
            note = prov.get("metrics_note", {}).get(key, "")
            lines += [f"## {title}", "", *([note, ""] if note else []), *metrics_table(metrics), ""]
    lines += [
        "## Use",
        "",
        "```python",
        "from hydralanet import load_model, predict, read_image",
        "",
        'model = load_model("<this folder or owner/repo>")',
        'prediction = predict(model, read_image("fundus.jpg"))  # probabilities 4 x H x W, original size',
        "masks = prediction.masks()  # this checkpoint's thresholds",
        "```",
        "",
        "Intended use: research on automated lesion segmentation, and teaching. Out of scope: any use on "
        "patients. Expect errors on cameras, fields of view and populations unlike the training data; "
        "microaneurysms (a few pixels) are the hardest class.",
        "",
    ]
    if prov.get("command"):
        lines += ["## Reproduce", "", "```bash", str(prov["command"]), "```", ""]
        if prov.get("code_version"):
            lines += [f"Code version: `{prov['code_version']}`.", ""]
    return "\n".join(lines)


def _inference_lines(config: CheckpointConfig) -> list[str]:
    """The model section's lines on calibration and test-time augmentation."""
    lines = []
    if config.calibration:
        lines.append(
            "- probabilities calibrated per lesion on validation, `sigmoid(a * logit + b)` (Platt scaling: the "
            "ranking of pixels unchanged); thresholds are on calibrated probabilities"
        )
    if config.tta:
        lines.append(
            "- flip test-time augmentation by default: the plain, left-right and up-down flipped photo, "
            "averaged (thresholds tuned that way; `--no-tta` or `tta=False` turns it off)"
        )
    if config.tta and config.scales:
        sizes = ", ".join(f"{c} {' and '.join(f'{f:g}' for f in config.scales[c])}" for c in CLASSES)
        lines.append(
            "- with it, each lesion takes the geometric mean over these input sizes (multiples of the input "
            f"size, each with flips): {sizes}"
        )
    if config.edge_margin:
        bands = ", ".join(f"{c} {100 * share:g} %" for c, share in config.edge_margin.items())
        lines.append(
            "- a band along the field of view's edge is never marked, as a share of the field's diameter "
            f"(the bright rim that the model otherwise takes for lesions): {bands}"
        )
    return lines


def calibration_section(config: CheckpointConfig) -> list[str]:
    """What ``training.calibrate`` fitted (``provenance["calibration"]``): a and b, thresholds
    before and after, ECE before and after per split. Empty when it has not run."""
    record = config.provenance.get("calibration")
    if not config.calibration or not isinstance(record, dict) or "ece" not in record:
        return []
    lines = [
        "## Calibration",
        "",
        "Probabilities are calibrated per lesion, `p = sigmoid(a * logit + b)` (Platt scaling; monotone, so the "
        "ranking of pixels is unchanged, except that raw float32 probabilities tie at exactly 1.0 above a logit of "
        "about 16.6 and calibrated ones do not), fitted on the "
        f"`{record['fitted_on']['split']}` split "
        f"({record['fitted_on']['images']} photos) by `python -m training.calibrate`; the thresholds above are "
        "on calibrated probabilities (tuned for the best F1 there; validation metrics recorded during training "
        "are at the thresholds before). Expected calibration error (ECE) over all pixels, 15 equal-width bins:",
        "",
        "| lesion | a | b | threshold before | threshold now | "
        + " | ".join(f"ECE {split} before / after" for split in record["ece"])
        + " |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(record["ece"]),
    ]
    for c in CLASSES:
        a, b = config.calibration[c]
        ece = " | ".join(f"{e[c]['before']:.5f} / {e[c]['after']:.5f}" for e in record["ece"].values())
        lines.append(
            f"| {c} | {a:.4f} | {b:.4f} | {format_threshold(record['thresholds_before'][c])} | "
            f"{format_threshold(config.thresholds[c])} | {ece} |"
        )
    return lines + [""]


def _data_section(prov: dict[str, Any]) -> list[str]:
    datasets = prov.get("datasets") or {}
    if not datasets:
        return []
    splits = sorted({s for counts in datasets.values() for s in counts}, key=_split_order)
    lines = ["## Data", "", "| dataset | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for source, counts in sorted(datasets.items()):
        lines.append(f"| {source} | " + " | ".join(str(counts.get(s, 0)) for s in splits) + " |")
    totals = prov.get("split_sizes") or {}
    if totals:
        lines.append("| **all** | " + " | ".join(str(totals.get(s, 0)) for s in splits) + " |")
    return lines + [""]


def _split_order(split: str) -> tuple[int, str]:
    return ({"train": 0, "val": 1, "test": 2}.get(split, 3), split)


def metrics_table(metrics: dict[str, Any]) -> list[str]:
    """``{"EX": {"f1": ..}, .., "macro": {..}}`` (or with an ``"overall"`` level) as a markdown table."""
    metrics = metrics.get("overall", metrics)
    rows = [c for c in (*CLASSES, "macro") if c in metrics]
    # Only the measures recorded (validation during training has no aupr11, for one).
    columns = [k for k in METRIC_COLUMNS if any(k in metrics[row] for row in rows)]
    lines = ["| lesion | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for row in rows:
        values = [metrics[row].get(k) for k in columns]
        cells = ["n/a" if json_safe(v) is None else f"{v:.3f}" for v in values]  # no lesion pixels: no AUPR
        lines.append(f"| {'**macro**' if row == 'macro' else row} | " + " | ".join(cells) + " |")
    return lines


def json_safe(data: Any) -> Any:
    """NaN (the AUPR of a class without lesion pixels) -> ``None``, so files are strict JSON."""
    if isinstance(data, dict):
        return {k: json_safe(v) for k, v in data.items()}
    return None if isinstance(data, float) and not math.isfinite(data) else data
