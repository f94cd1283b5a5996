"""Research indicators read from a photo and its lesion masks: landmarks, quality, lesions by
zone, a DME risk estimate and the haemorrhage part of the 4-2-1 rule. Not a grading.

Two steps, so that moving a threshold never repeats the slow part:

- :func:`read_photo` (once per photo, independent of thresholds): optic disc and fovea
  (:mod:`hydralanet.reading.landmarks`), image quality (:mod:`hydralanet.reading.quality`) and the zone maps
  (:mod:`hydralanet.reading.zones`);
- :func:`findings` (per set of masks): zone statistics, DME risk grade, 4-2-1 haemorrhages,
  in the layout of ``findings.json``.

Research indicators from the lesion masks, never a diagnosis.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import CLASSES
from ..preprocessing import FovGeometry
from .grading import DME_EXUDATE_PEAK, exudate_cores
from .landmarks import DEFAULT_DISC_FRACTION, Landmarks, find_landmarks
from .quality import Quality, assess_quality
from .zones import DD_MM, ZONE_COLUMNS, PackedZoneMaps, ZoneMaps, read_zones, zone_maps, zone_units

if TYPE_CHECKING:
    from ..inference.working import WorkingPhoto

__all__ = ["PhotoReading", "ZONE_COLUMNS", "findings", "read_photo", "read_working"]


def square_exudate_cores(square: np.ndarray, geometry: FovGeometry, fov: np.ndarray) -> np.ndarray:
    """Flat indices of the photo's pixels where the hard-exudate probability of the model's
    square (``4 x S x S``) reaches :data:`~hydralanet.reading.grading.DME_EXUDATE_PEAK`: the reading's
    ``cores``, equal to :func:`~hydralanet.reading.grading.exudate_cores` of the full map, made one
    class at a time at full resolution."""
    from ..inference.segment import square_mask

    return np.flatnonzero(square_mask(square[CLASSES.index("EX")], geometry, fov, DME_EXUDATE_PEAK))


@dataclass
class PhotoReading:
    """What does not depend on thresholds: ``landmarks``, ``quality``, ``maps`` (None without
    a disc and a fovea). Landmarks are in the photo's pixels; ``maps`` are on the grid of the
    masks they are read with: the photo's own, or (``map_scale`` photo pixels per map pixel)
    the web app's working grid (:func:`read_working`)."""

    landmarks: Landmarks
    quality: Quality
    maps: ZoneMaps | PackedZoneMaps | None
    mm_per_px: float | None = None  # the file's pixel size, when it gave one
    map_scale: float = 1.0
    cores: np.ndarray | None = None  # :func:`hydralanet.reading.grading.exudate_cores` on the maps' grid

    @property
    def grid_unit_px(self) -> float | None:
        """The ETDRS grid's unit (1 DD = 1.5 mm) in the photo's pixels, None without maps."""
        return None if self.maps is None else self.maps.dd * self.map_scale

    def scale(self) -> dict[str, Any]:
        """Which scale the zones use: ``source`` ``pixel_spacing`` (the file's pixel size),
        ``disc_diameter`` (the disc as measured; 1 DD = 1.5 mm assumed) or
        ``assumed_field_fraction`` (the disc could not be measured: a guess, with a ``warning``),
        the unit in pixels and the pixel size in mm; ``dme_source`` and ``dme_dd_px``: the unit
        of "within 1 DD" (the measured disc whenever there is one)."""
        disc = self.landmarks.disc
        units = zone_units(self.landmarks, self.mm_per_px)
        measured = disc is not None and disc.diameter_source == "measured"
        if self.mm_per_px:
            dd, mm = DD_MM / self.mm_per_px, self.mm_per_px
            out = {"source": "pixel_spacing", "dd_px": round(dd, 1), "mm_per_px": round(mm, 6)}
            if measured:
                out["disc_diameter_mm"] = round(disc.diameter_px * mm, 2)  # measured, not assumed
        else:
            dd = disc.diameter_px if disc else None
            out = {
                "source": "disc_diameter" if disc is None or measured else "assumed_field_fraction",
                "dd_px": round(dd, 1) if dd else None,
                "mm_per_px": round(DD_MM / dd, 6) if dd else None,
            }
        if units is not None:
            out["dme_source"], out["dme_dd_px"] = units[3], round(units[2], 1)
        if disc is not None and not measured:
            out["warning"] = "the optic disc's size could not be measured; 1 DD is a guess from the field's size"
        return out


LESION_EXCLUSION_P = 0.5  # pixels any lesion class reaches this probability are not landmarks


def read_photo(
    image: np.ndarray,
    fov: np.ndarray,
    *,
    laterality: str | None = None,
    probabilities: np.ndarray | None = None,
    lesions: np.ndarray | None = None,
    mm_per_px: float | None = None,
    cores: np.ndarray | None = None,
) -> PhotoReading:
    """Landmarks, quality and zone maps of an RGB uint8 photo with its FOV mask (e.g. a
    :class:`hydralanet.Prediction`'s ``image`` and ``fov``). ``laterality``: the eye when the
    file says so (a DICOM header). ``probabilities`` (``4 x H x W``, the prediction's): pixels a
    lesion reaches :data:`LESION_EXCLUSION_P` in are painted over before the landmark search
    (a haemorrhage is darker than the fovea); or give that mask as ``lesions`` (``H x W`` bool).
    ``mm_per_px``: the pixel size when the file says (a DICOM header's PixelSpacing): zones are
    then measured in mm, not in disc diameters. ``cores``: where the hard-exudate probability
    reaches :data:`~hydralanet.reading.grading.DME_EXUDATE_PEAK` (flat indices,
    :func:`~hydralanet.reading.grading.exudate_cores`), what the DME grade counts exudates by; made here
    from ``probabilities`` when given. Without either, every hard exudate counts."""
    if probabilities is not None:
        lesions = probabilities.max(axis=0) >= LESION_EXCLUSION_P
        cores = exudate_cores(probabilities[CLASSES.index("EX")])
    landmarks = find_landmarks(image, fov, laterality=laterality, lesions=lesions)
    maps = zone_maps(image.shape[:2], fov, landmarks, mm_per_px=mm_per_px)
    quality = assess_quality(image, fov, macula_of(landmarks))
    return PhotoReading(landmarks, quality, maps, mm_per_px, cores=cores)


def read_working(
    work: WorkingPhoto,
    photo: np.ndarray,
    photo_fov: np.ndarray,
    *,
    lesions: np.ndarray | None = None,
    laterality: str | None = None,
    mm_per_px: float | None = None,
    cores: np.ndarray | None = None,
) -> PhotoReading:
    """:func:`read_photo` for the web app's working grid (:class:`hydralanet.inference.working.WorkingPhoto`):
    the same landmarks and quality (found on the photo, ``photo`` with ``photo_fov``, at their own
    sizes: :mod:`hydralanet.reading.landmarks` and :mod:`hydralanet.reading.quality` shrink it themselves), and
    the zone maps on the working grid instead of the photo's (read them with ``work.masks``).
    ``lesions``: ``H x W`` bool, what :func:`read_photo` paints over before the landmark search
    (pixels a lesion reaches :data:`LESION_EXCLUSION_P` in). ``mm_per_px``: the photo's pixel
    size, when the file says. ``cores``: as :func:`read_photo`'s, on the working grid (made from
    ``work.probabilities`` when not given)."""
    if cores is None:
        cores = exudate_cores(work.probabilities[CLASSES.index("EX")])
    landmarks = find_landmarks(photo, photo_fov, laterality=laterality, lesions=lesions)
    on_grid = moved_landmarks(landmarks, None, work.geometry)
    grid_mm = mm_per_px * work.scale if mm_per_px else None
    maps = zone_maps(work.fov.shape, work.fov, on_grid, mm_per_px=grid_mm)
    maps = maps.packed() if maps is not None else None  # a third of the memory, unpacked exactly when read
    quality = assess_quality(photo, photo_fov, macula_of(landmarks))
    return PhotoReading(landmarks, quality, maps, mm_per_px, work.scale, cores)


def macula_of(landmarks: Landmarks) -> tuple[float, float, float] | None:
    """The macula for :func:`~hydralanet.reading.quality.assess_quality`: the fovea and the disc's
    diameter (or the field's assumed fraction without a disc), None without a reliable fovea."""
    fovea = landmarks.fovea
    if fovea is None or not fovea.reliable:
        return None
    dd = landmarks.disc.diameter_px if landmarks.disc is not None else DEFAULT_DISC_FRACTION * landmarks.fov_diameter_px
    return fovea.x, fovea.y, dd


def moved_landmarks(landmarks: Landmarks, source: FovGeometry | None, target: FovGeometry | None) -> Landmarks:
    """Landmarks found on the square of ``source`` (None: on the photo) in the pixels of the
    square of ``target`` (None: the photo), with their sizes and the sizes the notes quote.
    Square pixel ``x`` is photo pixel ``x * side / size`` past the padding, as
    :mod:`hydralanet.reading.landmarks` maps its own square."""

    def scale(g: FovGeometry | None) -> float:
        return 1.0 if g is None else g.side / g.size

    def origin(g: FovGeometry | None) -> tuple[float, float]:
        return (0.0, 0.0) if g is None else (g.box[2] - g.pad_left, g.box[0] - g.pad_top)

    factor = scale(source) / scale(target)
    (sx, sy), (tx, ty) = origin(source), origin(target)

    def move(x: float, y: float) -> tuple[float, float]:
        return (x * scale(source) + sx - tx) / scale(target), (y * scale(source) + sy - ty) / scale(target)

    disc, fovea = landmarks.disc, landmarks.fovea
    if disc is not None:
        x, y = move(disc.x, disc.y)
        disc = dataclasses.replace(disc, x=round(x, 1), y=round(y, 1), diameter_px=round(disc.diameter_px * factor, 1))
    if fovea is not None:
        x, y = move(fovea.x, fovea.y)
        fovea = dataclasses.replace(fovea, x=round(x, 1), y=round(y, 1))
    notes = tuple(
        re.sub(r"\((\d+(?:\.\d+)?) px\)", lambda m: f"({float(m[1]) * factor:.0f} px)", note)
        for note in landmarks.notes
    )
    return dataclasses.replace(
        landmarks, disc=disc, fovea=fovea, fov_diameter_px=landmarks.fov_diameter_px * factor, notes=notes
    )


def findings(photo: PhotoReading, masks: np.ndarray, labelled: list[tuple] | None = None) -> dict[str, Any]:
    """``findings.json`` for bool masks ``4 x H x W`` (EX, HE, MA, SE) on the grid of
    ``photo.maps``: landmarks, eye, quality, DME risk with its reason, the 4-2-1 haemorrhage
    criterion, zone rows and quadrant counts. Coordinates in pixels of the photo as read (EXIF
    applied); zone pixels in the photo's pixels (scaled from a working grid's, rounded).
    ``labelled``: the masks' lesions (:func:`hydralanet.inference.segment.label_lesions`), when made."""
    landmarks = photo.landmarks
    missing = [
        f"the {name} was not found reliably (confidence {found.confidence:.2f})"
        for name, found in (("optic disc", landmarks.disc), ("fovea", landmarks.fovea))
        if found is not None and not found.reliable
    ]
    unlocated = {"unlocated": " and ".join(missing)} if missing else {}
    reading = read_zones(masks, photo.maps, labelled, photo.cores, **unlocated)
    if photo.map_scale != 1.0:
        area = photo.map_scale**2
        reading.zones = [{**row, "pixels": round(row["pixels"] * area)} for row in reading.zones]
    out = landmarks.to_dict()
    out["scale"] = photo.scale()
    out["quality"] = photo.quality.to_dict()
    out.update(reading.to_dict())
    verdict = photo.quality.verdict
    if verdict != "good":
        caveat = f" (the photo's quality is {verdict}: read with caution)"
        if out["dme_risk"] is not None:
            out["dme_reason"] += caveat
        if photo.maps is not None:
            out["rule_421_reason"] += caveat
    return out
