"""The research indicators read from where the lesions are (:mod:`hydralanet.reading.zones`
counts them by zone): the DME risk grade (IDRiD's definition) and the evidence it counts, the
haemorrhage part of the 4-2-1 rule, a retinopathy level and lesion burden, and their rows in
``zones.csv``. Research indicators, never a diagnosis."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ..config import CLASSES

RULE_421_HAEMORRHAGES = 20  # "> 20 intraretinal haemorrhages in each of the four quadrants"
# A haemorrhage area larger than this share of the disc's area may be several touching ones.
MERGED_HE_DISC_AREA = 0.25


# The DME grade's evidence: a hard exudate counts when its most confident pixel reaches
# DME_EXUDATE_PEAK, and the photo has exudates when at least DME_EXUDATE_MIN_COUNT of those show,
# or when they cover at least DME_EXUDATE_MIN_AREA of the disc's area (the 1 DD circle). Chosen
# together on IDRiD's 413 grading training photos only (the bundled model with its default
# test-time augmentation), for the best DME accuracy (python -m training.idrid_reading grading;
# docs/reading.md).
DME_EXUDATE_PEAK = 0.95
DME_EXUDATE_MIN_COUNT = 3
DME_EXUDATE_MIN_AREA = 0.02


def exudate_cores(probability: np.ndarray) -> np.ndarray:
    """The ``cores`` of :func:`hydralanet.reading.zones.read_zones`: flat indices where the hard-exudate probability
    (``H x W``, on the grid of the masks) reaches :data:`DME_EXUDATE_PEAK`."""
    return np.flatnonzero(probability >= np.float32(DME_EXUDATE_PEAK))


def dme_grade(
    ex: tuple[int, np.ndarray], labels: np.ndarray, near: np.ndarray, total: int, cores, disc_area: float
) -> tuple[int, str]:
    """The DME risk grade (IDRiD's definition) and its reason: ``ex`` the hard exudates' (count +
    1, each exudate pixel's label), ``labels`` the label image (flat), ``near`` the labels
    reaching within 1 DD of the fovea, ``total`` the exudates in the field, ``cores`` as
    :func:`hydralanet.reading.zones.read_zones` takes them (None: every exudate counts), and
    ``disc_area`` the 1 DD circle's area in pixels of the masks' grid."""
    if total == 0:
        return 0, "no hard exudates"
    n, lab = ex
    counted = counted_exudates(n, labels, cores)
    if cores is not None:
        area, sure = int(np.bincount(lab, minlength=n)[counted].sum()), int(counted.sum())
        if sure < DME_EXUDATE_MIN_COUNT and area < DME_EXUDATE_MIN_AREA * disc_area:
            return 0, (
                f"no hard exudates counted: {_n(total, 'hard exudate')} in the mask, {sure} of them with "
                f"p >= {DME_EXUDATE_PEAK:g} (fewer than {DME_EXUDATE_MIN_COUNT}), covering "
                f"{100 * area / disc_area:.1f} % of the disc's area (under {100 * DME_EXUDATE_MIN_AREA:g} %)"
            )
    near_counted = int(counted[near].sum())
    if near_counted == 0:
        return 1, f"{_n(int(counted.sum()), 'hard exudate')}, none within 1 DD of the fovea"
    return 2, f"{_n(near_counted, 'hard exudate')} within 1 DD of the fovea"


def counted_exudates(n: int, labels: np.ndarray, cores) -> np.ndarray:
    """Which of the ``n - 1`` hard exudates (labels 1 .. n - 1 of the flat label image ``labels``;
    index 0, the background, never) count: those holding a pixel of ``cores``, or every one
    when ``cores`` is None."""
    counted = np.zeros(n, dtype=bool)
    if cores is None:
        counted[1:] = True
    else:
        counted[np.unique(labels[cores])] = True
        counted[0] = False
    return counted


def dme_without_landmarks(
    n: int, labels: np.ndarray, cores, unlocated: str = "the optic disc or the fovea was not found"
) -> tuple[int | None, str]:
    """The DME risk grade when the optic disc or the fovea was not found reliably (no zone maps):
    0 when no hard exudate counts anywhere in the photo (:func:`counted_exudates`), since then
    where the fovea lies does not matter; otherwise None (no grade), the reason ending with
    ``unlocated`` (which landmark was missed). ``n``: the hard exudates + 1; ``labels`` and
    ``cores`` as :func:`dme_grade` takes them."""
    if n <= 1:
        return 0, "no hard exudates (the fovea is not needed for that)"
    sure = int(counted_exudates(n, labels, cores).sum())
    if sure == 0:
        return 0, (
            f"no hard exudates counted: {_n(n - 1, 'hard exudate')} in the mask, none with p >= "
            f"{DME_EXUDATE_PEAK:g} (the fovea is not needed for that)"
        )
    return None, f"no grade: {_n(sure, 'hard exudate')} counted, and {unlocated}"


RETINOPATHY_LEVELS = (
    "few or no lesions",
    "microaneurysms, few other lesions",
    "many lesions beyond microaneurysms",
    "haemorrhage part of the 4-2-1 rule met within this photograph",
)
# Lesion burden (see retinopathy_estimate) at or above which a photo is flagged "referable
# retinopathy likely" (grade 2 or more). Chosen on IDRiD's 413 grading training photos only, by
# Youden's J (python -m training.idrid_reading grading; docs/reading.md).
REFERABLE_BURDEN = 32.5
# The level counts lesions beyond microaneurysms (haemorrhages, hard and soft exudates together)
# once at least RETINOPATHY_MIN_BEYOND of them show, and microaneurysms once at least
# RETINOPATHY_MIN_MA show, so that a few false specks do not lift a photo's level. Chosen on
# IDRiD's 413 grading training photos only (206 of them chose the same), for the quadratic
# kappa against the graders' grade (python -m training.idrid_reading grading; docs/reading.md).
RETINOPATHY_MIN_BEYOND = 30
RETINOPATHY_MIN_MA = 10


def count_lesions(masks: np.ndarray) -> dict[str, int]:
    """The lesions of each kind in ``masks`` (bool ``4 x H x W``): 8-connected components."""
    return {c: cv2.connectedComponents(m.astype(np.uint8), connectivity=8)[0] - 1 for c, m in zip(CLASSES, masks)}


def retinopathy_level(
    counts: dict[str, int],
    rule_421: bool | None,
    min_beyond: float = RETINOPATHY_MIN_BEYOND,
    min_ma: float = RETINOPATHY_MIN_MA,
) -> int:
    """The level of :data:`RETINOPATHY_LEVELS` that lesion ``counts`` (per kind) support, given
    the 4-2-1 haemorrhage criterion and the floors (the constants above by default)."""
    if rule_421:
        return 3
    if counts["HE"] + counts["EX"] + counts["SE"] >= min_beyond:
        return 2
    return 1 if counts["MA"] >= min_ma else 0


def retinopathy_estimate(
    masks: np.ndarray, rule_421: bool | None, counts: dict[str, int] | None = None
) -> dict[str, Any]:
    """What one photo's lesion masks (bool ``4 x H x W``) support about retinopathy, given the
    4-2-1 haemorrhage criterion (None: not assessed): a level (index into
    :data:`RETINOPATHY_LEVELS`, comparable to the graders' 0-3; new vessels, venous beading and
    IRMA are not seen by the lesion model, so proliferative retinopathy (4) is never estimated),
    and the lesion burden (haemorrhages + hard + soft exudates + half the microaneurysms, as
    counted lesions) with a research flag for referable retinopathy (burden >=
    :data:`REFERABLE_BURDEN`). ``counts``: the lesions of each kind in ``masks``, when already
    counted (8-connected)."""
    if counts is None:
        counts = count_lesions(masks)
    burden = counts["HE"] + counts["EX"] + counts["SE"] + 0.5 * counts["MA"]
    level = retinopathy_level(counts, rule_421)
    return {
        "level": level,
        "label": RETINOPATHY_LEVELS[level],
        "lesion_burden": burden,
        "referable_likely": bool(burden >= REFERABLE_BURDEN),
        "note": "research indicator from the lesion masks of one photograph, not a grade: lesions beyond "
        f"microaneurysms count from {RETINOPATHY_MIN_BEYOND}, microaneurysms from {RETINOPATHY_MIN_MA}; new "
        "vessels, venous beading and IRMA are not seen",
    }


INDICATORS = ("dme_risk", "retinopathy_level", "lesion_burden", "referable_likely", "rule_421_haemorrhages")


def indicator_rows(found: dict[str, Any]) -> list[dict[str, Any]]:
    """The research indicators of a ``findings.json`` as rows of ``zones.csv``: lesion
    ``indicator``, zone the indicator's name (:data:`INDICATORS`), count its value (a grade,
    level or burden; 1/0 for yes/no; empty when not assessed), pixels and zone_pct empty."""
    estimate = found.get("retinopathy_estimate") or {}
    values = {
        "dme_risk": found.get("dme_risk"),
        "retinopathy_level": estimate.get("level"),
        "lesion_burden": estimate.get("lesion_burden"),
        "referable_likely": estimate.get("referable_likely"),
        "rule_421_haemorrhages": found.get("rule_421_haemorrhages"),
    }
    return [
        {
            "lesion": "indicator",
            "zone": name,
            "count": int(v) if isinstance(v, bool) else v,
            "pixels": None,
            "zone_pct": None,
        }
        for name, v in values.items()
    ]


_NEAR_UNIT = {  # what the DME reason adds when 1 DD was not measured on the disc
    "disc_diameter": "",
    "pixel_spacing": " (1 DD taken as 1.5 mm from the file's pixel size: the disc could not be measured)",
    "assumed_field_fraction": " (1 DD assumed from the field's size: the disc could not be measured)",
}


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def rule_421(he: dict[str, int], sizes: np.ndarray, disc_area: float) -> tuple[bool, int, str]:
    """The haemorrhage part of the 4-2-1 rule within this photograph: whether each quadrant
    about the fovea (``he``: haemorrhages per quadrant, in order) holds more than
    :data:`RULE_421_HAEMORRHAGES`, how many haemorrhage areas (``sizes``: pixels per label, 0
    the background) are larger than :data:`MERGED_HE_DISC_AREA` of the disc's area, and why."""
    met = all(count > RULE_421_HAEMORRHAGES for count in he.values())
    large = int((sizes[1:] > MERGED_HE_DISC_AREA * disc_area).sum())
    reason = (
        f"haemorrhages per quadrant about the fovea (not the standard fields about the disc): {', '.join(f'{q} {n}' for q, n in he.items())}; "
        + (
            "more than 20 in each: the 4-2-1 haemorrhage criterion is met within this photograph"
            if met
            else "the 4-2-1 haemorrhage criterion (> 20 in each of the four) is not met within this photograph, "
            "which shows about one of the seven standard fields: it cannot rule the criterion out"
        )
        + "; venous beading and IRMA are not assessed; touching haemorrhages count as one"
        + (f" ({_n(large, 'area')} larger than a quarter of the disc may be several)" if large else "")
    )
    return met, large, reason


def near_unit(scale: str) -> str:
    """What a DME reason adds about how 1 DD was measured (``scale``: the zone maps' ``near_scale``)."""
    return _NEAR_UNIT.get(scale, "")
