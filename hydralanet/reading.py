"""Read a photo as a grader does: landmarks, quality, lesions by zone, indicators (DESIGN §11).

Two steps, so that moving a threshold never repeats the slow part:

- :func:`read_photo` (once per photo, independent of thresholds): optic disc and fovea
  (:mod:`hydralanet.landmarks`), image quality (:mod:`hydralanet.quality`) and the zone maps
  (:mod:`hydralanet.zones`);
- :func:`findings` (per set of masks): zone statistics, DME risk grade, 4-2-1 haemorrhages,
  in the layout of ``findings.json``.

Research indicators from the lesion masks, never a diagnosis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .landmarks import Landmarks, find_landmarks
from .quality import Quality, assess_quality
from .zones import ZONE_COLUMNS, ZoneMaps, read_zones, zone_maps

__all__ = ["PhotoReading", "ZONE_COLUMNS", "findings", "read_photo"]


@dataclass
class PhotoReading:
    """What does not depend on thresholds: ``landmarks``, ``quality``, ``maps`` (None without
    a disc and a fovea)."""

    landmarks: Landmarks
    quality: Quality
    maps: ZoneMaps | None


LESION_EXCLUSION_P = 0.5  # pixels any lesion class reaches this probability are not landmarks


def read_photo(
    image: np.ndarray,
    fov: np.ndarray,
    *,
    laterality: str | None = None,
    probabilities: np.ndarray | None = None,
    lesions: np.ndarray | None = None,
) -> PhotoReading:
    """Landmarks, quality and zone maps of an RGB uint8 photo with its FOV mask (e.g. a
    :class:`hydralanet.Prediction`'s ``image`` and ``fov``). ``laterality``: the eye when the
    file says so (a DICOM header). ``probabilities`` (``4 x H x W``, the prediction's): pixels a
    lesion reaches :data:`LESION_EXCLUSION_P` in are painted over before the landmark search
    (a haemorrhage is darker than the fovea); or give that mask as ``lesions`` (``H x W`` bool)."""
    if probabilities is not None:
        lesions = probabilities.max(axis=0) >= LESION_EXCLUSION_P
    landmarks = find_landmarks(image, fov, laterality=laterality, lesions=lesions)
    return PhotoReading(landmarks, assess_quality(image, fov), zone_maps(image.shape[:2], fov, landmarks))


def findings(photo: PhotoReading, masks: np.ndarray) -> dict[str, Any]:
    """``findings.json`` for bool masks ``4 x H x W`` (EX, HE, MA, SE): landmarks, eye, quality,
    DME risk with its reason, the 4-2-1 haemorrhage criterion, zone rows and quadrant counts.
    Coordinates in pixels of the photo as read (EXIF applied)."""
    reading = read_zones(masks, photo.maps)
    out = photo.landmarks.to_dict()
    out["quality"] = photo.quality.to_dict()
    out.update(reading.to_dict())
    if photo.quality.verdict == "ungradable":
        out["dme_reason"] += " (the photo is ungradable: read with caution)"
    return out
