"""Scores for the reading layer in ``training.evaluate``: optic disc and fovea distance errors
(pixels and disc diameters) and DME-risk-grade accuracy with a confusion matrix.

Truth comes from the manifest's label columns (``training.prepare``): the synthetic generator's
own disc and fovea, IDRiD's localisation markups and grades. Where a photo has a fovea and a disc
diameter but no grade (synthetic photos), the true grade is read from its true hard-exudate mask
at the true landmarks, by the same rule (:mod:`hydralanet.reading.zones`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hydralanet.reading.landmarks import Fovea, Landmarks, OpticDisc
from hydralanet.reading.photo import findings, read_photo
from hydralanet.reading.zones import read_zones, zone_maps

GRADES = (0, 1, 2)
DISC_TOLERANCE_DD, FOVEA_TOLERANCE_DD = 0.25, 0.5  # the accuracy the reading aims for (docs/reading.md)


def has_labels(rows: list[dict[str, Any]]) -> bool:
    return any(r.get(k) is not None for r in rows for k in ("disc_x", "fovea_x", "dme_grade"))


class ReadingScores:
    """Collects one record per photo (:meth:`update`), summarised by :meth:`report`."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def update(self, row: dict[str, Any], prediction, targets: np.ndarray, thresholds: dict[str, float]) -> None:
        photo = read_photo(prediction.image, prediction.fov, probabilities=prediction.probabilities)
        found = photo.landmarks
        dd = row.get("disc_diameter") or (found.disc.diameter_px if found.disc else None)
        record: dict[str, Any] = {"image": str(row["image"]), "dd": dd}
        for key, got in (("disc", found.disc), ("fovea", found.fovea)):
            x, y = row.get(f"{key}_x"), row.get(f"{key}_y")
            if x is None or y is None:
                continue
            error = float(np.hypot(got.x - x, got.y - y)) if got is not None else None
            record[f"{key}_error_px"] = error
            record[f"{key}_error_dd"] = error / dd if error is not None and dd else None
        truth = row.get("dme_grade")
        if truth is None and row.get("fovea_x") is not None and row.get("disc_x") is not None and dd:
            true_landmarks = Landmarks(
                OpticDisc(row["disc_x"], row["disc_y"], dd, 1.0),
                Fovea(row["fovea_x"], row["fovea_y"], 1.0),
                None,
                None,
                0.0,
            )
            truth = read_zones(targets, zone_maps(targets.shape[1:], prediction.fov, true_landmarks)).dme_risk
        if truth is not None:
            record["dme_true"] = int(truth)
            record["dme_predicted"] = findings(photo, prediction.masks(thresholds))["dme_risk"]
        self.records.append(record)

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"images": len(self.records)}
        for key, tolerance in (("disc", DISC_TOLERANCE_DD), ("fovea", FOVEA_TOLERANCE_DD)):
            labelled = [r for r in self.records if f"{key}_error_px" in r]
            if not labelled:
                continue
            found = [r for r in labelled if r[f"{key}_error_px"] is not None]
            px = np.array([r[f"{key}_error_px"] for r in found], dtype=float)
            dd = np.array([r[f"{key}_error_dd"] for r in found if r[f"{key}_error_dd"] is not None], dtype=float)
            out[key] = {
                "labelled": len(labelled),
                "found": len(found),
                "median_error_px": float(np.median(px)) if px.size else None,
                "median_error_dd": float(np.median(dd)) if dd.size else None,
                "p90_error_dd": float(np.percentile(dd, 90)) if dd.size else None,
                f"within_{tolerance}_dd": float(np.mean(dd <= tolerance)) * len(dd) / len(labelled) if dd.size else 0.0,
            }
        graded = [r for r in self.records if "dme_true" in r]
        if graded:
            matrix = np.zeros((3, 4), dtype=int)  # true grade x predicted grade (last column: no grade)
            for r in graded:
                matrix[r["dme_true"], 3 if r["dme_predicted"] is None else r["dme_predicted"]] += 1
            out["dme"] = {
                "graded": len(graded),
                "accuracy": float(np.trace(matrix[:, :3]) / len(graded)),
                "confusion": {
                    "rows": "true grade 0, 1, 2",
                    "columns": "predicted 0, 1, 2, no grade",
                    "matrix": matrix.tolist(),
                },
            }
        return out


def markdown(report: dict[str, Any]) -> list[str]:
    """The ``metrics.md`` section for :meth:`ReadingScores.report`."""
    if not report or report.get("images", 0) == 0:
        return []
    lines = ["## Reading: landmarks and DME risk", ""]
    for key, name, tolerance in (
        ("disc", "optic disc centre", DISC_TOLERANCE_DD),
        ("fovea", "fovea", FOVEA_TOLERANCE_DD),
    ):
        r = report.get(key)
        if r:
            median = (
                "n/a"
                if r["median_error_px"] is None
                else f"{r['median_error_px']:.1f} px ({r['median_error_dd']:.2f} DD)"
            )
            lines.append(
                f"- {name}: found on {r['found']} of {r['labelled']} photos; median error {median}; "
                f"within {tolerance} DD: {100 * r[f'within_{tolerance}_dd']:.1f} %"
            )
    dme = report.get("dme")
    if dme:
        lines += [
            f"- DME risk grade (research indicator): {100 * dme['accuracy']:.1f} % right on {dme['graded']} photos",
            "",
            "| true \\ predicted | 0 | 1 | 2 | no grade |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {g} | " + " | ".join(str(v) for v in row) + " |" for g, row in zip(GRADES, dme["confusion"]["matrix"])
        ]
    return lines + [""]
