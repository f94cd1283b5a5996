"""Is the photo gradable? Checks a grader makes before reading (docs/reading.md#image-quality).

Each measure is taken on the field of view resized to :data:`WORK_SIDE` px (so the numbers do
not depend on the camera's resolution) and compared with two limits: past the first the photo
is ``usable`` (read it with care), past the second ``ungradable``. The verdict is the worst of
them, with a reason per failed check. The limits were set on the real photo degraded on purpose
(blur, gamma, noise, JPEG, crops): ``python -m training.quality_check`` prints the measures and
verdicts; docs/reading.md#image-quality has the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ..preprocessing import BlankImageError, fov_geometry, fov_mask

WORK_SIDE = 1024  # fine enough that blur and noise of a camera's own resolution still show
VERDICTS = ("good", "usable", "ungradable")

# measure: (direction, usable limit, ungradable limit, what it means). "min": the measure must
# stay above the limits; "max": below. Set between the clean photo's values and those of its
# degraded copies (python -m training.quality_check; docs/reading.md#image-quality).
LIMITS: dict[str, tuple[str, float, float, str]] = {
    "fov_fraction": ("min", 0.35, 0.15, "field of view covers too little of the image"),
    # A 3:2 camera frame cuts the disc at top and bottom (IDRiD: ~0.93; the 3:2 crop of the
    # sample photo: 0.78): normal. Half the disc gone (0.50) is not.
    "fov_circularity": ("min", 0.70, 0.55, "field of view cut off (not a full disc)"),
    "brightness": ("min", 25.0, 6.0, "too dark"),
    "saturated_pct": ("max", 0.5, 5.0, "over-exposed (green channel saturated)"),
    "red_saturated_pct": ("max", 50.0, 101.0, "over-exposed (red channel saturated)"),
    "sharpness": ("min", 0.33, 0.25, "out of focus (blurred)"),
    "contrast": ("min", 0.35, 0.25, "low contrast"),
    "noise": ("max", 2.0, 6.0, "noisy"),
    "blockiness": ("max", 4.0, 20.0, "heavy JPEG compression (8 x 8 blocks)"),
    "illumination_ratio": ("min", 0.45, 0.25, "uneven illumination"),
}

# The macula against the rest of the field, when the fovea is known (``macula`` of
# :func:`assess_quality`): set below IDRiD's training photos and above copies of them with the
# macula blurred or shaded (python -m training.quality_check --idrid; docs/reading.md#image-quality).
MACULA_LIMITS: dict[str, tuple[str, float, float, str]] = {
    "macula_in_field": ("min", 0.90, 0.50, "the macula is partly outside the field of view"),
    "macula_exposure": ("min", 0.65, 0.35, "the macula is in shadow"),
    "macula_sharpness": ("min", 0.55, 0.25, "the macula is out of focus"),
}
MACULA_DD = 2.0  # the macula's radius for focus, in disc diameters (exposure: 1 DD)
FOVEA_NOT_RELIABLE = "the fovea was not found reliably: the macula's focus and exposure are not checked"


@dataclass
class Quality:
    """``verdict`` (good / usable / ungradable), ``reasons`` (one line per failed check) and
    ``measures`` (name -> value)."""

    verdict: str
    reasons: list[str] = field(default_factory=list)
    measures: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            **{k: round(v, 4) for k, v in self.measures.items()},
        }


def assess_quality(
    image: np.ndarray, fov: np.ndarray | None = None, macula: tuple[float, float, float] | None | bool = False
) -> Quality:
    """Gradability of an RGB uint8 ``H x W x 3`` photo (``fov``: its FOV mask if known).
    ``macula``: ``(x, y, dd)``, the fovea and the disc diameter in the photo's pixels, adds the
    checks of :data:`MACULA_LIMITS` (is the macula inside the field, lit and in focus); None:
    the fovea was not found reliably (said, at ``usable``); False (the default): not asked."""
    try:
        fov = fov_mask(image) if fov is None else fov
    except BlankImageError:
        return Quality("ungradable", ["no field of view (blank image)"], {"fov_fraction": 0.0})
    limits = dict(LIMITS)
    verdict, reasons = 0, []
    if macula is None:
        verdict, reasons = 1, [FOVEA_NOT_RELIABLE]
    elif macula is not False:
        limits.update(MACULA_LIMITS)
    measures = measure(image, fov, macula or None)
    for name, (direction, usable, ungradable, meaning) in limits.items():
        value = measures.get(name)
        if value is None:  # a macula measure with (almost) no macula inside the field
            continue
        worse = (lambda v, t: v < t) if direction == "min" else (lambda v, t: v > t)
        level = 2 if worse(value, ungradable) else 1 if worse(value, usable) else 0
        if level:
            limit = ungradable if level == 2 else usable
            reasons.append(f"{meaning}: {name} {value:.3g} ({'<' if direction == 'min' else '>'} {limit:g})")
            verdict = max(verdict, level)
    return Quality(VERDICTS[verdict], reasons, measures)


def measure(image: np.ndarray, fov: np.ndarray, macula: tuple[float, float, float] | None = None) -> dict[str, float]:
    """The measures behind :func:`assess_quality` (see :data:`LIMITS`), inside the field of view:

    brightness: median green (0-255); saturated_pct / red_saturated_pct: % of pixels with green
    >= 245 / red >= 250; sharpness: fine detail (below 2 px) over mid-scale detail (2-8 px) of the
    green channel after a 3 x 3 median (which removes noise, not focus); contrast: (95th - 5th
    percentile) / median of green; noise: the robust standard deviation of green minus its
    3 x 3 median; blockiness: mean jump across 8-px column boundaries over the mean jump
    elsewhere, at the photo's own pixels (JPEG's blocks); illumination_ratio: 5th over 95th
    percentile of the brightness blurred at 8 % of the FOV; fov_fraction: FOV area / image area;
    fov_circularity: FOV area / area of its smallest enclosing circle.

    With ``macula`` (``(x, y, dd)`` in the photo's pixels): macula_in_field: share of the 1 DD
    circle about the fovea inside the field (less its rim); macula_exposure: median green within
    1 DD over the field's; macula_sharpness: fine detail over brightness within
    :data:`MACULA_DD` over the same for the field (so shade alone does not read as blur).
    """
    h, w = fov.shape
    geometry = fov_geometry(fov, WORK_SIDE)
    work = geometry.to_square(image)
    inside = geometry.field_to_square(fov)
    contours, _ = cv2.findContours(inside.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    (_, _), radius = cv2.minEnclosingCircle(max(contours, key=cv2.contourArea))
    diameter = 2 * np.sqrt(inside.sum() / np.pi)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * int(0.05 * diameter) + 1,) * 2)
    core = cv2.erode(inside.astype(np.uint8), kernel) > 0
    if core.sum() < 100:
        core = inside
    raw = work[..., 1].astype(np.float32)
    clean = cv2.medianBlur(work[..., 1], 3).astype(np.float32)
    b2, b8 = cv2.GaussianBlur(clean, (0, 0), 2.0), cv2.GaussianBlur(clean, (0, 0), 8.0)
    fine, mid = float(np.std((clean - b2)[core])), float(np.std((b2 - b8)[core]))
    median = float(np.median(raw[core]))
    light = _broad_blur(work.max(axis=2).astype(np.float32), 0.08 * diameter)
    measures = {} if macula is None else _macula(geometry, macula, core, raw, clean - b2)
    return measures | {
        "fov_fraction": float(fov.sum()) / float(h * w),
        "fov_circularity": float(inside.sum()) / (np.pi * radius * radius) if radius > 0 else 0.0,
        "brightness": median,
        "saturated_pct": 100.0 * float((work[..., 1][core] >= 245).mean()),
        "red_saturated_pct": 100.0 * float((work[..., 0][core] >= 250).mean()),
        "sharpness": fine / max(mid, 1e-3),
        "contrast": float(np.percentile(raw[core], 95) - np.percentile(raw[core], 5)) / max(median, 1.0),
        "noise": 1.4826 * float(np.median(np.abs(raw - clean)[core])),
        "blockiness": _blockiness(image[..., 1], fov),
        "illumination_ratio": float(np.percentile(light[core], 5) / max(np.percentile(light[core], 95), 1.0)),
    }


def _broad_blur(values: np.ndarray, sigma: float, factor: int = 4) -> np.ndarray:
    """A Gaussian blur of ``sigma`` px on a ``factor`` times smaller copy, brought back to size:
    what a blur this broad leaves is smooth at that scale (5th / 95th percentiles within 0.001
    of the full-size blur's on IDRiD photos), at about 1 % of the time."""
    h, w = values.shape
    if sigma < 4 * factor or min(h, w) < 16 * factor:
        return cv2.GaussianBlur(values, (0, 0), sigma)
    small = cv2.resize(values, (w // factor, h // factor), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / factor)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _macula(geometry, macula: tuple[float, float, float], core, raw, fine) -> dict[str, float]:
    """The macula measures of :func:`measure` on the working square (see there)."""
    scale = geometry.size / geometry.side
    x = (macula[0] - geometry.box[2] + geometry.pad_left) * scale
    y = (macula[1] - geometry.box[0] + geometry.pad_top) * scale
    yy, xx = np.ogrid[: core.shape[0], : core.shape[1]]
    r = np.hypot(xx - x, yy - y) / max(macula[2] * scale, 1e-6)
    near, macula_core = core & (r <= 1.0), core & (r <= MACULA_DD)
    if near.sum() < 20:
        return {"macula_in_field": float(near.sum()) / max(float((r <= 1.0).sum()), 1.0)}
    field_median = max(float(np.median(raw[core])), 1.0)
    detail = float(np.std(fine[macula_core])) / max(float(np.median(raw[macula_core])), 1.0)
    return {
        "macula_in_field": float(near.sum()) / max(float((r <= 1.0).sum()), 1.0),
        "macula_exposure": float(np.median(raw[near])) / field_median,
        "macula_sharpness": detail / max(float(np.std(fine[core])) / field_median, 1e-6),
    }


def _blockiness(green: np.ndarray, fov: np.ndarray) -> float:
    """Mean |jump| between horizontal neighbours across 8-px column boundaries over the mean
    elsewhere, inside the FOV: ~1 for a photo, several times that when JPEG blocks show."""
    jumps = np.abs(np.diff(green.astype(np.int16), axis=1))
    both = fov[:, 1:] & fov[:, :-1]
    boundary = (np.arange(1, green.shape[1]) % 8 == 0)[None, :]
    across, within = jumps[both & boundary], jumps[both & ~boundary]
    if across.size == 0 or within.size == 0:
        return 1.0
    return float(across.mean()) / max(float(within.mean()), 1e-3)
