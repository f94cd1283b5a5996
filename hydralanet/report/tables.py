"""What a prediction is written out as: the summary (CSV and JSON) and the masks (PNG, ZIP).

Shared by the CLI and the app, so a summary means the same thing wherever it comes from:
every one records which model made it (name, source, revision, sha256), the preprocessing
and the thresholds.
"""

from __future__ import annotations

import csv
import io
import zipfile
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import CLASSES, PreprocessConfig
from ..io.images import encode_png

if TYPE_CHECKING:  # checkpoint imports torch; writing a summary does not need it
    from ..inference.loaded import LoadedModel

SUMMARY_COLUMNS = ["image", "lesion", "threshold", "pixels", "coverage_pct", "count", "largest_px"]


def run_record(
    loaded: LoadedModel,
    preprocessing: PreprocessConfig,
    thresholds: dict[str, float],
    *,
    tta: bool,
    precision: str,
) -> dict[str, Any]:
    """How results were made: model identity, preprocessing, thresholds, TTA, precision, device.

    The head of ``summary.json``; callers add their results (and counts, timings, failures).
    """
    return {
        "model": dict(loaded.identity),
        "preprocessing": preprocessing.to_dict(),
        "thresholds": {c: float(thresholds[c]) for c in CLASSES},
        "tta": bool(tta),
        "precision": precision,
        "device": str(loaded.device),
    }


def record_columns(record: dict[str, Any]) -> dict[str, Any]:
    """The parts of a :func:`run_record` worth repeating on every CSV row, so a CSV read on
    its own still says which model, preprocessing and precision produced it (thresholds are
    a column already)."""
    model = record["model"]
    return {
        "model": model.get("name"),
        "model_source": model.get("source"),
        "model_revision": model.get("revision") or "",
        "model_sha256": model.get("sha256"),
        "clahe": record["preprocessing"]["clahe"],
        "crop": record["preprocessing"]["crop"],
        "input_size": record["preprocessing"]["input_size"],
        "tta": record["tta"],
        "precision": record["precision"],
    }


def summary_csv(rows: list[dict[str, Any]]) -> str:
    """CSV text with :data:`SUMMARY_COLUMNS` (extra keys such as ``source`` at the end)."""
    return table_csv(rows, SUMMARY_COLUMNS)


def table_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """CSV text with ``columns`` first, then any other keys of the first row."""
    extra = [k for k in (rows[0] if rows else {}) if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns + extra, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def masks_zip(masks: np.ndarray, *, folder: str = "") -> bytes:
    """A ZIP of ``EX.png HE.png MA.png SE.png`` (0/255, the size of ``masks``: bool
    ``4 x H x W``), under ``folder/`` when given, the layout the CLI writes to disk.

    PNGs are already compressed, so they are stored, not deflated again.
    """
    if masks.ndim != 3 or masks.shape[0] != len(CLASSES):
        raise ValueError(f"masks must be {len(CLASSES)} x H x W, got shape {masks.shape}")
    prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as archive:
        for c, mask in zip(CLASSES, masks):
            archive.writestr(f"{prefix}{c}.png", encode_png(mask.astype(np.uint8) * 255))
    return buf.getvalue()
