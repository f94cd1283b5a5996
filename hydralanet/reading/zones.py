"""Lesions by where they are (docs/reading.md#clinical-definitions): the ETDRS grid, quadrants about the fovea, "within
1 DD of the fovea", and two research indicators read from them — the DME risk grade (IDRiD's
definition) and the haemorrhage part of the 4-2-1 rule. Research indicators, never a diagnosis.

Geometry: centred on the fovea; 1 disc diameter (DD) = 1.5 mm, so the ETDRS circles of 1, 3
and 6 mm have radii 1/3, 1 and 2 DD; nasal is towards the disc, superior the side of the
disc-fovea axis that faces the top of the photo. Rings split into superior / nasal / inferior /
temporal subfields by 90-degree sectors centred on those directions.

Counting: pixels go to the zone they lie in, so the pixels of a partition (the nine subfields
plus ``outside_grid``; the four quadrants) add up to the image's. A lesion (8-connected) that
straddles zones is counted once, in the zone holding most of its pixels, so counts add up too;
``within_1dd`` counts every lesion with at least one pixel within 1 DD of the fovea.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ..config import CLASSES
from .grading import dme_grade, dme_without_landmarks, near_unit, retinopathy_estimate, rule_421
from .landmarks import Landmarks

ETDRS_ZONES = (
    "centre",
    "inner_superior", "inner_nasal", "inner_inferior", "inner_temporal",
    "outer_superior", "outer_nasal", "outer_inferior", "outer_temporal",
    "outside_grid",
)  # fmt: skip
QUADRANTS = ("superotemporal", "superonasal", "inferonasal", "inferotemporal")
ETDRS_RADII_DD = (1 / 3, 1.0, 2.0)  # 1, 3 and 6 mm diameters at 1 DD = 1.5 mm
DD_MM = 1.5  # ETDRS convention: 1 disc diameter = 1.5 mm
ZONE_COLUMNS = ["image", "lesion", "zone", "count", "pixels", "zone_pct"]
SCALES = ("disc_diameter", "pixel_spacing", "assumed_field_fraction")


def zone_units(landmarks: Landmarks, mm_per_px: float | None = None) -> tuple[float, str, float, str] | None:
    """``(grid unit px, its source, "within 1 DD" unit px, its source)`` (sources: :data:`SCALES`),
    or None when the disc or the fovea is missing or not found reliably (then nothing is built on
    them). The grid is in mm when the pixel size is known; "within 1 DD" (the DME rule) is the
    measured disc whenever the disc could be measured, whatever the file's pixel size."""
    disc, fovea = landmarks.disc, landmarks.fovea
    if disc is None or fovea is None or disc.diameter_px <= 0 or not landmarks.reliable:
        return None
    measured = getattr(disc, "diameter_source", "measured") == "measured"
    disc_scale = "disc_diameter" if measured else "assumed_field_fraction"
    if mm_per_px:
        grid = (DD_MM / mm_per_px, "pixel_spacing")
        near = (float(disc.diameter_px), disc_scale) if measured else grid
    else:
        grid = near = (float(disc.diameter_px), disc_scale)
    return (*grid, *near)


@dataclass
class ZoneMaps:
    """Per-pixel zone indices (``int8``, -1 outside the FOV) of one photo: ``etdrs`` into
    :data:`ETDRS_ZONES`, ``quadrant`` into :data:`QUADRANTS`, and ``near`` (bool: within 1 DD of
    the fovea). ``dd`` is the grid's unit (1 DD = 1.5 mm) in pixels; ``scale`` says where it came
    from (:data:`SCALES`): ``disc_diameter`` (the disc as measured), ``pixel_spacing`` (1.5 mm at
    the file's pixel size) or ``assumed_field_fraction`` (the disc could not be measured: a
    guessed fraction of the field). ``near_dd`` and ``near_scale``: the same for "within 1 DD"
    (the DME rule), which uses the measured disc whenever there is one."""

    etdrs: np.ndarray
    quadrant: np.ndarray
    near: np.ndarray
    dd: float
    scale: str = "disc_diameter"
    near_dd: float | None = None
    near_scale: str | None = None
    _areas: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.near_dd = self.dd if self.near_dd is None else self.near_dd
        self.near_scale = self.scale if self.near_scale is None else self.near_scale

    @property
    def nbytes(self) -> int:
        return self.etdrs.nbytes + self.quadrant.nbytes + self.near.nbytes

    def areas(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Pixels per ETDRS zone, per quadrant and within 1 DD (made once: the same at every threshold)."""
        if self._areas is None:
            self._areas = _areas(self.etdrs, self.quadrant, self.near)
        return self._areas

    def packed(self) -> PackedZoneMaps:
        code = (self.etdrs + 1).astype(np.uint8)
        code |= (self.quadrant + 1).astype(np.uint8) << 4
        code |= self.near.astype(np.uint8) << 7
        return PackedZoneMaps(code, self.dd, self.scale, self.near_dd, self.near_scale)


@dataclass
class PackedZoneMaps:
    """:class:`ZoneMaps` in one byte a pixel, a third of the memory (what the web app keeps per
    photo): ``etdrs + 1`` in bits 0-3, ``quadrant + 1`` in bits 4-6, ``near`` in bit 7. The
    maps come back exactly, on each access."""

    code: np.ndarray
    dd: float
    scale: str = "disc_diameter"
    near_dd: float | None = None
    near_scale: str | None = None
    _areas: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.near_dd = self.dd if self.near_dd is None else self.near_dd
        self.near_scale = self.scale if self.near_scale is None else self.near_scale

    def areas(self) -> tuple[np.ndarray, np.ndarray, int]:
        """As :meth:`ZoneMaps.areas`."""
        if self._areas is None:
            self._areas = _areas(self.etdrs, self.quadrant, self.near)
        return self._areas

    @property
    def etdrs(self) -> np.ndarray:
        return (self.code & 15).astype(np.int8) - 1

    @property
    def quadrant(self) -> np.ndarray:
        return ((self.code >> 4) & 7).astype(np.int8) - 1

    @property
    def near(self) -> np.ndarray:
        return (self.code >> 7).astype(bool)

    @property
    def nbytes(self) -> int:
        return self.code.nbytes


def _areas(etdrs: np.ndarray, quadrant: np.ndarray, near: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    return (
        np.bincount(etdrs[etdrs >= 0], minlength=len(ETDRS_ZONES)),
        np.bincount(quadrant[quadrant >= 0], minlength=len(QUADRANTS)),
        int(near.sum()),
    )


def zone_maps(
    shape: tuple[int, int], fov: np.ndarray, landmarks: Landmarks, *, mm_per_px: float | None = None
) -> ZoneMaps | None:
    """The zone maps for an ``H x W`` photo, or None without a reliable disc and fovea. The unit
    is the measured disc diameter, or :data:`DD_MM` mm when the pixel size is known
    (``mm_per_px``, e.g. a DICOM header's PixelSpacing): then the circles are 1, 3 and 6 mm as
    measured; "within 1 DD" stays on the measured disc (:func:`zone_units`)."""
    units = zone_units(landmarks, mm_per_px)
    if units is None:
        return None
    dd, scale, near_dd, near_scale = units
    disc, fovea = landmarks.disc, landmarks.fovea
    h, w = shape
    nasal = np.array([disc.x - fovea.x, disc.y - fovea.y], dtype=np.float64)
    length = float(np.hypot(*nasal))
    nasal = nasal / length if length > 0 else np.array([1.0, 0.0])
    superior = np.array([nasal[1], -nasal[0]])  # perpendicular; pick the one facing the top
    if superior[1] > 0:
        superior = -superior
    etdrs = np.empty((h, w), dtype=np.int8)
    quadrant = np.empty((h, w), dtype=np.int8)
    near = np.empty((h, w), dtype=bool)
    ys = np.arange(h, dtype=np.float32) - np.float32(fovea.y)
    xs = (np.arange(w, dtype=np.float32) - np.float32(fovea.x))[None, :]
    # In bands of rows: every pixel is computed on its own, so the maps are the same as in one
    # pass, and the float temporaries of a 12-Mpixel photo stay a few MB instead of ~0.4 GB.
    rows = max(1, _BAND_PIXELS // max(w, 1))
    for y0 in range(0, h, rows):
        band = slice(y0, min(h, y0 + rows))
        _zone_band(
            xs,
            ys[band, None],
            nasal,
            superior,
            np.float32(dd),
            np.float32(near_dd),
            etdrs[band],
            quadrant[band],
            near[band],
        )
    etdrs[~fov] = -1
    quadrant[~fov] = -1
    near &= fov
    return ZoneMaps(etdrs, quadrant, near, dd, scale, near_dd, near_scale)


_BAND_PIXELS = 1 << 19  # pixels per band of rows in zone_maps


def _zone_band(xs, ys, nasal, superior, dd, near_dd, etdrs, quadrant, near) -> None:
    """One band of rows of :func:`zone_maps` (``xs``: ``1 x W``, ``ys``: ``rows x 1``, pixel
    offsets from the fovea), written into the bands of ``etdrs``, ``quadrant`` and ``near``."""
    a = xs * np.float32(nasal[0]) + ys * np.float32(nasal[1])  # nasal coordinate
    b = xs * np.float32(superior[0]) + ys * np.float32(superior[1])  # superior coordinate
    r = np.sqrt(a * a + b * b) / dd
    # Sector within a ring: 0 superior, 1 nasal, 2 inferior, 3 temporal (90 degrees each).
    sector = np.where(np.abs(b) > np.abs(a), np.where(b > 0, 0, 2), np.where(a >= 0, 1, 3)).astype(np.int8)
    etdrs[:] = ETDRS_ZONES.index("outside_grid")
    etdrs[r < ETDRS_RADII_DD[2]] = 5 + sector[r < ETDRS_RADII_DD[2]]
    etdrs[r < ETDRS_RADII_DD[1]] = 1 + sector[r < ETDRS_RADII_DD[1]]
    etdrs[r < ETDRS_RADII_DD[0]] = 0
    quadrant[:] = np.where(b >= 0, np.where(a < 0, 0, 1), np.where(a >= 0, 2, 3))
    near[:] = np.sqrt(a * a + b * b) <= near_dd


@dataclass
class ZoneReading:
    """Zone statistics and indicators of one photo at one set of thresholds."""

    zones: list[dict[str, Any]] = field(default_factory=list)
    quadrant_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    dme_risk: int | None = None
    dme_reason: str = ""
    rule_421_haemorrhages: bool | None = None
    rule_421_reason: str = ""
    rule_421_large_haemorrhages: int = 0  # areas that may be several touching haemorrhages
    retinopathy: dict[str, Any] = field(default_factory=dict)  # :func:`retinopathy_estimate`

    def to_dict(self) -> dict[str, Any]:
        return {
            "zones": self.zones,
            "quadrant_counts": self.quadrant_counts,
            "dme_risk": self.dme_risk,
            "dme_reason": self.dme_reason,
            "rule_421_haemorrhages": self.rule_421_haemorrhages,
            "rule_421_reason": self.rule_421_reason,
            "rule_421_large_haemorrhages": self.rule_421_large_haemorrhages,
            "retinopathy_estimate": self.retinopathy,
            "indicators_note": "research indicators from the lesion masks, not a diagnosis",
        }


def read_zones(
    masks: np.ndarray,
    maps: ZoneMaps | PackedZoneMaps | None,
    labelled: list[tuple] | None = None,
    cores: np.ndarray | None = None,
    *,
    unlocated: str = "the optic disc or the fovea was not found",
) -> ZoneReading:
    """Zone rows (lesion, zone, count, pixels, zone_pct) for ``masks`` (bool ``4 x H x W``, EX,
    HE, MA, SE), quadrant counts, the DME risk grade and the 4-2-1 haemorrhage criterion.
    ``labelled``: each class's 8-connected lesions as ``(count + 1, labels, ...)``
    (:func:`hydralanet.inference.segment.label_lesions`), when already made. ``cores``: the flat
    indices of the pixels where the hard-exudate probability reaches
    :data:`~hydralanet.reading.grading.DME_EXUDATE_PEAK`
    (:func:`~hydralanet.reading.grading.exudate_cores`); with them the DME grade counts only the hard exudates that hold
    one, and none at all while those are too few and too small
    (:func:`~hydralanet.reading.grading.dme_grade`). Without them every hard exudate
    of the mask counts. ``maps`` None (no reliable disc or fovea): no zones; the DME grade is 0
    where no hard exudate counts, else none (:func:`~hydralanet.reading.grading.dme_without_landmarks`);
    ``unlocated`` says which landmark was missed, in the reasons."""
    if maps is None:  # no zones; the DME grade only where no hard exudate counts (0)
        reading = ZoneReading(rule_421_reason=f"not assessed: {unlocated}")
        n, labels = (
            labelled[0][:2]
            if labelled is not None
            else cv2.connectedComponents(masks[0].astype(np.uint8), connectivity=8)
        )
        reading.dme_risk, reading.dme_reason = dme_without_landmarks(n, labels.reshape(-1), cores, unlocated)
        reading.retinopathy = retinopathy_estimate(masks, None)
        return reading
    reading = ZoneReading()
    etdrs, quadrant, near_map = maps.etdrs, maps.quadrant, maps.near  # read once (packed maps unpack)
    etdrs_area, quadrant_area, near_area = maps.areas()
    near_lesions: dict[str, int] = {}
    lesions: dict[str, tuple[int, np.ndarray]] = {}  # per class: components + 1, each lesion pixel's label
    for i, (c, mask) in enumerate(zip(CLASSES, masks)):
        # Lesion pixels only, by their flat index: masks are sparse, the maps are the whole photo.
        if labelled is None:
            n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        else:
            n, labels = labelled[i][:2]
        where = np.flatnonzero(mask)
        lab = labels.reshape(-1)[where]
        lesions[c] = (n, lab)
        if c == "EX":
            ex_labels = labels.reshape(-1)
        for names, index, area in ((ETDRS_ZONES, etdrs, etdrs_area), (QUADRANTS, quadrant, quadrant_area)):
            zone = index.reshape(-1)[where]
            valid = zone >= 0
            pixels = np.bincount(zone[valid], minlength=len(names))
            counts = _majority_counts(lab[valid], zone[valid], n, len(names))
            for k, name in enumerate(names):
                reading.zones.append(_row(c, name, int(counts[k]), int(pixels[k]), int(area[k])))
            if names is QUADRANTS:
                reading.quadrant_counts[c] = {name: int(counts[k]) for k, name in enumerate(names)}
        near = lab[near_map.reshape(-1)[where]]
        near_lesions[c] = int(np.unique(near).size)
        if c == "EX":
            ex_near = np.unique(near)
        reading.zones.append(_row(c, "within_1dd", near_lesions[c], int(near.size), near_area))
    reading.quadrant_counts["HE+MA"] = {
        q: reading.quadrant_counts["HE"][q] + reading.quadrant_counts["MA"][q] for q in QUADRANTS
    }
    ex_total = sum(r["count"] for r in reading.zones if r["lesion"] == "EX" and r["zone"] in ETDRS_ZONES)
    disc_area = np.pi / 4 * maps.near_dd**2
    reading.dme_risk, reading.dme_reason = dme_grade(lesions["EX"], ex_labels, ex_near, ex_total, cores, disc_area)
    reading.dme_reason += near_unit(maps.near_scale) if reading.dme_risk else ""
    sizes = np.bincount(lesions["HE"][1], minlength=lesions["HE"][0])
    met, large, reason = rule_421(reading.quadrant_counts["HE"], sizes, disc_area)
    reading.rule_421_haemorrhages, reading.rule_421_large_haemorrhages, reading.rule_421_reason = met, large, reason
    counts = {c: n - 1 for c, (n, _) in lesions.items()}
    reading.retinopathy = retinopathy_estimate(masks, reading.rule_421_haemorrhages, counts)
    return reading


def _majority_counts(labels: np.ndarray, zones: np.ndarray, n: int, k: int) -> np.ndarray:
    """Lesions per zone, each lesion in the zone holding most of its pixels (lowest index on ties)."""
    if labels.size == 0:
        return np.zeros(k, dtype=np.int64)
    table = np.bincount(labels.astype(np.int64) * k + zones, minlength=n * k).reshape(n, k)[1:]
    present = table.sum(axis=1) > 0
    return np.bincount(np.argmax(table[present], axis=1), minlength=k)


def _row(lesion: str, zone: str, count: int, pixels: int, area: int) -> dict[str, Any]:
    return {
        "lesion": lesion,
        "zone": zone,
        "count": count,
        "pixels": pixels,
        "zone_pct": round(100.0 * pixels / area, 4) if area else 0.0,
    }


def draw_grid(image: np.ndarray, landmarks: Landmarks, scale: float = 1.0, *, dd_px: float | None = None) -> np.ndarray:
    """A copy of RGB ``image`` (the photo, or a preview ``scale`` times its size) with the disc
    outline, the fovea and the ETDRS grid (1, 3, 6 mm circles and the subfield boundaries; only
    when both landmarks were found reliably).
    ``dd_px``: the unit in the photo's pixels (a :class:`ZoneMaps`'s ``dd``; default the disc's)."""
    out = image.copy()
    disc, fovea = landmarks.disc, landmarks.fovea
    thickness = max(1, round(min(image.shape[:2]) / 400))
    white, cyan = (255, 255, 255), (0, 229, 255)
    if disc is not None:
        centre = (round(disc.x * scale), round(disc.y * scale))
        cv2.circle(out, centre, max(2, round(disc.diameter_px * scale / 2)), cyan, thickness, cv2.LINE_AA)
    if disc is not None and fovea is not None and landmarks.reliable:  # no grid on a doubtful landmark
        f = np.array([fovea.x, fovea.y]) * scale
        dd = (dd_px or disc.diameter_px) * scale
        for radius in ETDRS_RADII_DD:
            cv2.circle(out, (round(f[0]), round(f[1])), max(1, round(radius * dd)), white, thickness, cv2.LINE_AA)
        nasal = np.array([disc.x - fovea.x, disc.y - fovea.y])
        nasal = nasal / (np.hypot(*nasal) or 1.0)
        for angle in (45, 135, 225, 315):  # subfield boundaries between the inner and outer circles
            t = np.radians(angle)
            d = np.array([nasal[0] * np.cos(t) - nasal[1] * np.sin(t), nasal[0] * np.sin(t) + nasal[1] * np.cos(t)])
            p0, p1 = f + d * dd * ETDRS_RADII_DD[0], f + d * dd * ETDRS_RADII_DD[2]
            cv2.line(out, (round(p0[0]), round(p0[1])), (round(p1[0]), round(p1[1])), white, thickness, cv2.LINE_AA)
    if fovea is not None:
        c = (round(fovea.x * scale), round(fovea.y * scale))
        cv2.drawMarker(out, c, cyan, cv2.MARKER_CROSS, max(6, 6 * thickness), thickness, cv2.LINE_AA)
    return out
