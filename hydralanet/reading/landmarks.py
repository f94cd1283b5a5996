"""Optic disc and fovea (docs/reading.md#clinical-definitions), for any photo and any checkpoint.

Two finders. The **learned head** (:mod:`hydralanet.reading.landmark_head`, ``weights/landmarks.*``,
trained on IDRiD's graders' centres) places both when its files are there; the disc's diameter
is then still measured here, at the head's disc. **Image analysis**, the fallback (no head
files, or ``head=None``): the disc is the bright blob the vessels converge on; the fovea the
darkest, vessel-free spot about 2.5 disc diameters (DD) from it, roughly level with it. Both are
found on a copy of the field of view resized to :data:`WORK_SIDE` px, on the green channel with
the vessels closed over (a morphological closing removes dark structures thinner than the
kernel), so neither the vessels nor the lesion model play a part.

Coordinates are in pixels of the image as given (EXIF already applied by ``read_image``).
Accuracy, measured on IDRiD and on the real photo and its variants, is in docs/reading.md.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import NamedTuple

import cv2
import numpy as np

from ..preprocessing import FovGeometry, fov_geometry, fov_mask
from .landmark_head import HeadAnswer, LandmarkHead, bundled_landmark_head, load_landmark_head, photo_to_square

WORK_SIDE = 512  # the FOV square is analysed at this size: the disc is ~50 px across there
# The disc is 1/6-1/8 of a 45-degree field (docs/reading.md#clinical-definitions): its diameter is searched in this range
# of the FOV's diameter, and assumed at the middle when it cannot be measured.
DISC_FRACTION = (0.06, 0.3)  # up to 0.3: a 30-35 degree camera's disc is over 0.2 of its field
DEFAULT_DISC_FRACTION = 0.11
FOVEA_DD = (1.8, 3.6)  # the fovea is about 2.5 DD from the disc centre; searched in this annulus
FOVEA_PREFERRED_DD = 2.5  # ... and preferred near this distance (in DD as measured here)
FOVEA_BLUR_DD, FOVEA_SURROUND_DD = 0.12, 1.5  # the fovea: darker at this scale than around it at that
DISC_VESSEL_WEIGHT = 0.5  # the disc score: blob contrast + this x vessel density (z-scores)
DISC_OPEN_FRACTION = 0.03  # radius (x the field's diameter) of the opening that removes small bright specks
# Disc candidates weighed with their fovea (see _disc_and_fovea); 3 candidates at weight 1.5 or
# 3 did no better on IDRiD's training photos than the best disc score alone.
DISC_CANDIDATES = 1
DISC_FOVEA_WEIGHT = 0.0
DISC_NASAL_SHIFT_DD = 0.18  # the brightest part of the disc lies temporal of its centre: moved back by this
DISC_BLOB_FRACTION = 0.14  # the blob filter's disc size (x the field's diameter)
FOVEA_MAX_ANGLE = 30.0  # degrees from the horizontal through the disc (photos are taken level)
MIN_FOV_PX = 128  # a field of view narrower than this (in the photo's pixels) is not searched
# A landmark that stands out less than this is reported as not found (on synthetic test photos
# the disc's confidence was under 0.05 only where it was found elsewhere than drawn).
MIN_DISC_CONFIDENCE = 0.05
MIN_FOVEA_CONFIDENCE = 0.1
# Below these a landmark is reported, but as "not found reliably": no grade, no ETDRS grid and
# no macula picture are built on it. Chosen on IDRiD's 413 training photos
# (``python -m training.idrid_reading landmarks``; docs/reading.md).
RELIABLE_DISC_CONFIDENCE = 0.15
RELIABLE_FOVEA_CONFIDENCE = 0.35
IMAGE_ANALYSIS, LEARNED_HEAD = "image analysis", "learned head"
BUNDLED = "bundled"  # find_landmarks' default head: the one beside the bundled model, if any
_SIDE = {"left": 1, "right": -1}  # where the fovea lies from the disc in the photo, by eye


@dataclass(frozen=True)
class OpticDisc:
    """``diameter_source``: ``measured`` (the bright region's size) or ``assumed`` (it could
    not be measured: :data:`DEFAULT_DISC_FRACTION` of the field's diameter, a guess)."""

    x: float
    y: float
    diameter_px: float
    confidence: float
    diameter_source: str = "measured"
    found_by: str = IMAGE_ANALYSIS  # or LEARNED_HEAD
    confidence_floor: float = RELIABLE_DISC_CONFIDENCE  # the finder's: under it, not reliable

    @property
    def reliable(self) -> bool:
        return self.confidence >= self.confidence_floor


@dataclass(frozen=True)
class Fovea:
    x: float
    y: float
    confidence: float
    found_by: str = IMAGE_ANALYSIS
    confidence_floor: float = RELIABLE_FOVEA_CONFIDENCE

    @property
    def reliable(self) -> bool:
        return self.confidence >= self.confidence_floor


@dataclass(frozen=True)
class Landmarks:
    """``disc`` and ``fovea`` (None when not found), ``eye`` (``left``/``right``/None; the disc
    is nasal to the fovea: a left eye has its disc on the left of the photo), ``eye_source``
    (``image`` or ``header`` when the file said so), the FOV diameter in pixels, and
    ``notes``: what the reader should know (a header's eye that the image contradicts or that
    is not left/right, a landmark not found reliably, a disc size assumed)."""

    disc: OpticDisc | None
    fovea: Fovea | None
    eye: str | None
    eye_source: str | None
    fov_diameter_px: float
    notes: tuple[str, ...] = ()

    @property
    def reliable(self) -> bool:
        """Both landmarks found, each at or above its confidence floor: zones can be built."""
        return self.disc is not None and self.fovea is not None and self.disc.reliable and self.fovea.reliable

    def to_dict(self) -> dict:
        disc = fovea = None
        if self.disc:
            disc = {**asdict(self.disc), "reliable": self.disc.reliable}
        if self.fovea:
            fovea = {**asdict(self.fovea), "reliable": self.fovea.reliable}
        return {
            "optic_disc": disc,
            "fovea": fovea,
            "eye": self.eye,
            "eye_source": self.eye_source,
            "fov_diameter_px": round(self.fov_diameter_px, 1),
            "landmark_notes": list(self.notes),
        }


class _Disc(NamedTuple):
    """A disc in work pixels; ``measured`` False: the diameter is :data:`DEFAULT_DISC_FRACTION`
    of the field's; ``score``: its rank among candidates."""

    x: float
    y: float
    diameter: float
    confidence: float
    measured: bool
    score: float = 0.0


class _Fovea(NamedTuple):  # in work pixels
    x: float
    y: float
    confidence: float


@dataclass(frozen=True)
class _Work:
    """The field of view at :data:`WORK_SIDE` px, as the image analysis reads it: ``closed``
    (green, vessels closed over, lesions painted over), ``vessels`` (what the closing filled),
    ``core`` (the FOV eroded), ``inside`` (the FOV), ``diameter`` (the FOV's, work px) and
    ``scale`` (photo px per work px)."""

    geometry: FovGeometry
    closed: np.ndarray
    vessels: np.ndarray
    core: np.ndarray
    inside: np.ndarray
    diameter: float
    scale: float


def find_landmarks(
    image: np.ndarray,
    fov: np.ndarray | None = None,
    *,
    laterality: str | None = None,
    lesions: np.ndarray | None = None,
    head: LandmarkHead | str | os.PathLike | None = BUNDLED,
) -> Landmarks:
    """Optic disc (centre, diameter), fovea and eye of an RGB uint8 ``H x W x 3`` fundus photo.

    ``fov``: its field-of-view mask if already known. ``laterality`` (``left``/``right``, e.g. a
    DICOM header's) overrides the eye read from the image and puts the fovea search on the
    temporal side of the disc. ``lesions``: bool ``H x W``, pixels a lesion model marked; they
    are painted over from their surroundings first, so a dark haemorrhage is not taken for the
    fovea nor a bright exudate cluster for the disc (image analysis and the disc's size).
    ``head``: the learned head to place disc and fovea (:data:`BUNDLED`: the one beside the
    bundled model when its files are there; a folder: the head there, see
    :func:`~hydralanet.reading.landmark_head.load_landmark_head`; ``None``: image analysis only).
    Confidences are in [0, 1]; each landmark carries its finder and that finder's floor.
    """
    fov = fov_mask(image) if fov is None else fov
    work = _work(image, fov, lesions)
    header = _eye(laterality)
    notes: list[str] = []
    if laterality is not None and str(laterality).strip() and header is None:
        notes.append(
            f"the file's laterality {str(laterality).strip()!r} is not left or right: the eye is read from the image"
        )
    fov_px = work.diameter * work.scale
    if work.core.sum() < 100 or fov_px < MIN_FOV_PX:
        return Landmarks(None, None, header, "header" if header else None, fov_px, tuple(notes))
    if isinstance(head, str | os.PathLike):
        head = bundled_landmark_head() if head == BUNDLED else load_landmark_head(head)
    if isinstance(head, LandmarkHead):
        disc_out, fovea_out = _learned(head.locate(image, fov, work.geometry), head, work, header, notes)
    else:
        disc, fovea = _image_analysis(work, header, notes)
        disc_out, fovea_out = _in_the_photo(disc, fovea, work.geometry, work.scale, notes)
    if header:
        eye, source = header, "header"
    elif disc_out and fovea_out:
        eye, source = ("left" if disc_out.x < fovea_out.x else "right"), "image"
    else:
        eye, source = None, None
    return Landmarks(disc_out, fovea_out, eye, source, fov_px, tuple(notes))


def _work(image: np.ndarray, fov: np.ndarray, lesions: np.ndarray | None) -> _Work:
    geometry = fov_geometry(fov, WORK_SIDE)
    work = geometry.to_square(image)
    inside = geometry.field_to_square(fov)
    diameter = float(2 * np.sqrt(inside.sum() / np.pi))  # of the FOV, in work pixels
    green_u8 = np.ascontiguousarray(work[..., 1])
    if lesions is not None and lesions.any():
        marked = (
            geometry.to_square(
                lesions.astype(np.uint8),
                interpolation=cv2.INTER_AREA if geometry.side > WORK_SIDE else cv2.INTER_NEAREST,
            )
            > 0
        )
        marked = cv2.dilate(marked.astype(np.uint8), _disk(2))
        green_u8 = cv2.inpaint(green_u8, marked, 5, cv2.INPAINT_TELEA)
    green = green_u8.astype(np.float32)
    closed = _close_vessels(green, diameter)
    vessels = np.clip(closed - green, 0, None)
    core = cv2.erode(inside.astype(np.uint8), _disk(max(3, int(0.04 * diameter)))) > 0
    return _Work(geometry, closed, vessels, core, inside, diameter, geometry.side / WORK_SIDE)


def _image_analysis(work: _Work, header: str | None, notes: list[str]):
    """The disc and the fovea in work pixels (each None when not found)."""
    closed, vessels, core, diameter = work.closed, work.vessels, work.core, work.diameter
    # Bright specks smaller than the disc (exudates, reflexes) are opened away for the disc search.
    bright = (
        cv2.morphologyEx(closed, cv2.MORPH_OPEN, _disk(max(1, int(DISC_OPEN_FRACTION * diameter))))
        if DISC_OPEN_FRACTION
        else closed
    )
    disc, fovea = _disc_and_fovea(bright, closed, vessels, core, diameter, work.inside)
    if fovea is not None and fovea.confidence < MIN_FOVEA_CONFIDENCE:
        fovea = None
    if header is not None and disc is not None:
        fovea = _fovea_on_the_header_side(closed, vessels, core, disc, fovea, diameter, header, notes)
    if disc is not None and fovea is not None and DISC_NASAL_SHIFT_DD:
        away = np.array([disc.x - fovea.x, disc.y - fovea.y])
        away = away / max(float(np.hypot(*away)), 1e-6) * DISC_NASAL_SHIFT_DD * disc.diameter
        disc = disc._replace(x=disc.x + away[0], y=disc.y + away[1])
    return disc, fovea


def _learned(answer: HeadAnswer, head: LandmarkHead, work: _Work, header: str | None, notes: list[str]):
    """The head's disc and fovea as :class:`OpticDisc` / :class:`Fovea`; the disc's diameter
    measured at the head's disc (:func:`_disc_diameter`). A file's eye that the head
    contradicts: noted, and the fovea searched by image analysis on the file's side."""
    geometry, scale = work.geometry, work.scale
    dx, dy = photo_to_square(geometry, *answer.disc)
    size = _disc_diameter(work.closed, round(dx), round(dy), work.diameter, reach=0.5)
    measured = size is not None
    size = size if measured else DEFAULT_DISC_FRACTION * work.diameter
    config = head.config
    disc = OpticDisc(
        round(answer.disc[0], 1),
        round(answer.disc[1], 1),
        round(size * scale, 1),
        round(answer.disc_confidence, 3),
        "measured" if measured else "assumed",
        LEARNED_HEAD,
        config.reliable_disc_confidence,
    )
    fovea = Fovea(
        round(answer.fovea[0], 1),
        round(answer.fovea[1], 1),
        round(answer.fovea_confidence, 3),
        LEARNED_HEAD,
        config.reliable_fovea_confidence,
    )
    image_eye = "left" if disc.x < fovea.x else "right"
    if header is not None and image_eye != header:
        at = _Disc(dx, dy, size, answer.disc_confidence, measured)
        found = _find_fovea(work.closed, work.vessels, work.core, at, work.diameter, _SIDE[header])
        found = found if found is not None and found.confidence >= MIN_FOVEA_CONFIDENCE else None
        notes.append(
            f"the file says {header} eye but the image's disc and fovea say {image_eye} eye (learned head): check "
            f"the file; the fovea was searched by image analysis on the {header} eye's temporal side"
            + ("" if found is not None else " and not found there")
        )
        fovea = _in_the_photo(None, found, geometry, scale, [])[1]
    if not measured:
        notes.append(
            f"the optic disc's size could not be measured: 1 DD is assumed to be {DEFAULT_DISC_FRACTION:g} of the "
            f"field's diameter ({disc.diameter_px:.0f} px)"
        )
    for name, found in (("optic disc", disc), ("fovea", fovea)):
        if found is not None and not found.reliable:
            notes.append(f"{name} not found reliably (confidence {found.confidence:.2f})")
    return disc, fovea


def _fovea_on_the_header_side(closed, vessels, core, disc, fovea, diameter, header: str, notes: list[str]):
    """The fovea searched on the temporal side of the disc for the file's eye (right of the
    disc in a left eye); a note when the image's own disc and fovea (``fovea``) say otherwise."""
    image_eye = None if fovea is None else ("left" if disc.x < fovea.x else "right")
    found = _find_fovea(closed, vessels, core, disc, diameter, _SIDE[header])
    if found is not None and found.confidence < MIN_FOVEA_CONFIDENCE:
        found = None
    if image_eye is not None and image_eye != header:
        notes.append(
            f"the file says {header} eye but the image's disc and fovea say {image_eye} eye: check the file; "
            f"the fovea was searched on the {header} eye's temporal side"
            + ("" if found is not None else " and not found there")
        )
    return found


def _in_the_photo(
    disc: _Disc | None, fovea: _Fovea | None, geometry, scale: float, notes: list[str]
) -> tuple[OpticDisc | None, Fovea | None]:
    """The work-pixel disc and fovea as :class:`OpticDisc` / :class:`Fovea` in the photo's
    pixels, with a note for an assumed disc size and for each landmark below its floor."""

    def to_original(x: float, y: float) -> tuple[float, float]:
        y0, _, x0, _ = geometry.box
        return (x * scale - geometry.pad_left + x0, y * scale - geometry.pad_top + y0)

    disc_out = fovea_out = None
    if disc is not None:
        x, y = to_original(disc.x, disc.y)
        source = "measured" if disc.measured else "assumed"
        disc_out = OpticDisc(
            round(x, 1), round(y, 1), round(disc.diameter * scale, 1), round(disc.confidence, 3), source
        )
        if not disc.measured:
            notes.append(
                f"the optic disc's size could not be measured: 1 DD is assumed to be {DEFAULT_DISC_FRACTION:g} of the "
                f"field's diameter ({disc_out.diameter_px:.0f} px)"
            )
        if not disc_out.reliable:
            notes.append(f"optic disc not found reliably (confidence {disc_out.confidence:.2f})")
    if fovea is not None:
        x, y = to_original(fovea.x, fovea.y)
        fovea_out = Fovea(round(x, 1), round(y, 1), round(fovea.confidence, 3))
        if not fovea_out.reliable:
            notes.append(f"fovea not found reliably (confidence {fovea_out.confidence:.2f})")
    return disc_out, fovea_out


def _disc_and_fovea(bright, closed, vessels, core, diameter, inside):
    """The disc and the fovea found from it: of the
    :data:`DISC_CANDIDATES` best disc candidates, the one whose disc score plus
    :data:`DISC_FOVEA_WEIGHT` x its fovea's confidence is highest (an exudate cluster can
    outshine the disc, but has no fovea where the disc's would be)."""
    candidates = _disc_candidates(bright, vessels, core, diameter, inside, DISC_CANDIDATES, closed)
    best = None
    for candidate in candidates:
        fovea = _find_fovea(closed, vessels, core, candidate, diameter)
        total = candidate.score + DISC_FOVEA_WEIGHT * (fovea.confidence if fovea is not None else 0.0)
        if best is None or total > best[0]:
            best = (total, candidate, fovea)
    if best is None:
        return None, None
    disc, fovea = best[1], best[2]
    if best[1] is not candidates[0]:  # confidence: how far it beat the first by the combined score
        first = candidates[0]
        first_fovea = _find_fovea(closed, vessels, core, first, diameter)
        lead = best[0] - first.score - DISC_FOVEA_WEIGHT * (first_fovea.confidence if first_fovea is not None else 0.0)
        disc = disc._replace(confidence=float(np.clip(lead / 1.5, 0, 1)))
    if disc.confidence < MIN_DISC_CONFIDENCE:
        return None, None
    return disc, fovea


def _eye(laterality: str | None) -> str | None:
    if not laterality:
        return None
    value = str(laterality).strip().lower()
    return {"l": "left", "left": "left", "os": "left", "r": "right", "right": "right", "od": "right"}.get(value)


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _close_vessels(green: np.ndarray, diameter: float) -> np.ndarray:
    """The green channel with vessels (dark, up to ~2 % of the FOV wide) filled in."""
    return cv2.morphologyEx(green, cv2.MORPH_CLOSE, _disk(max(2, int(0.022 * diameter))))


def _zscore(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    inside = values[where]
    spread = float(np.percentile(inside, 90) - np.percentile(inside, 10)) or 1.0
    return (values - float(np.median(inside))) / spread


def _disc_candidates(
    closed: np.ndarray,
    vessels: np.ndarray,
    core: np.ndarray,
    diameter: float,
    inside: np.ndarray,
    k: int,
    sized: np.ndarray | None = None,
) -> list[_Disc]:
    """Up to ``k`` disc candidates, best first, each at least 2 disc diameters from the others;
    the diameter is measured on ``sized`` (default ``closed``)."""
    r = DISC_BLOB_FRACTION * diameter / 2
    weight = inside.astype(np.float32)
    blob = _mean_inside(closed, weight, r * 0.6) - _mean_inside(closed, weight, r * 3)
    density = _mean_inside(vessels, weight, r * 1.2)
    score = _zscore(blob, core) + DISC_VESSEL_WEIGHT * _zscore(density, core)
    score[~core] = -np.inf
    yy, xx = np.mgrid[: score.shape[0], : score.shape[1]]
    peaks = []
    left = score.copy()
    for _ in range(k + 1):  # one more: the runner-up of the last
        if not np.isfinite(left).any():
            break
        y, x = np.unravel_index(int(np.argmax(left)), left.shape)
        peaks.append((int(x), int(y), float(left[y, x])))
        left[(yy - y) ** 2 + (xx - x) ** 2 <= (4 * r) ** 2] = -np.inf
    out = []
    for x, y, peak in peaks[:k]:
        # Stand-out: the peak against the best score at least 2 disc diameters away.
        far = core & ((yy - y) ** 2 + (xx - x) ** 2 > (4 * r) ** 2)
        runner_up = float(score[far].max()) if far.any() else 0.0
        confidence = float(np.clip((peak - runner_up) / 1.5, 0, 1))
        size = _disc_diameter(closed if sized is None else sized, x, y, diameter)
        if size is None:
            out.append(_Disc(float(x), float(y), DEFAULT_DISC_FRACTION * diameter, confidence * 0.7, False, peak))
        else:
            out.append(_Disc(float(x), float(y), size, confidence, True, peak))
    return out


def _mean_inside(values: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian mean of ``values`` over the field of view only (normalised convolution): near
    its edge, the black outside would otherwise pull every average down."""
    total = cv2.GaussianBlur(weight, (0, 0), sigma)
    return cv2.GaussianBlur(values * weight, (0, 0), sigma) / np.maximum(total, 1e-3)


def _disc_diameter(closed: np.ndarray, x: int, y: int, diameter: float, reach: float = 0.0) -> float | None:
    """Equivalent diameter of the bright region around (x, y): brighter than halfway between
    its peak and the surrounding ring. None when that region is implausibly small or large.
    ``reach``: when (x, y) itself is not in it, the bright region nearest within ``reach`` x
    the smallest disc size is taken (a disc centre given from elsewhere may sit on its rim)."""
    lo, hi = DISC_FRACTION[0] * diameter, DISC_FRACTION[1] * diameter
    h, w = closed.shape
    x, y = min(max(x, 0), w - 1), min(max(y, 0), h - 1)
    smooth = cv2.GaussianBlur(closed, (0, 0), 0.01 * diameter + 1)
    yy, xx = np.mgrid[:h, :w]
    dist = np.sqrt((yy - y) ** 2 + (xx - x) ** 2)
    ring = (dist > 0.6 * hi) & (dist < hi) & (closed > 0)
    if not ring.any():
        return None
    peak = float(np.percentile(smooth[dist < lo / 2], 90))
    level = 0.5 * (peak + float(np.median(smooth[ring])))
    region = ((smooth >= level) & (dist < hi)).astype(np.uint8)
    n, labels = cv2.connectedComponents(region)
    label = labels[y, x]
    if label == 0 and reach:
        near = (labels > 0) & (dist <= reach * lo)
        label = labels[near][np.argmin(dist[near])] if near.any() else 0
    if label == 0:
        return None
    size = float(2 * np.sqrt((labels == label).sum() / np.pi))
    return size if lo <= size <= hi else None


def _find_fovea(
    closed: np.ndarray, vessels: np.ndarray, core: np.ndarray, disc: _Disc, diameter: float, side: int | None = None
) -> _Fovea | None:
    """The fovea in work pixels, or None: the darkest spot (relative to its
    surroundings) in the annulus :data:`FOVEA_DD` around the disc, near the horizontal, away
    from vessels (the fovea is avascular) and preferably about 2.5 DD from the disc. ``side``
    (+1 right of the disc, -1 left; from a known eye) replaces the guess from the field's centre."""
    dx0, dy0, dd = disc.x, disc.y, disc.diameter
    blur = cv2.GaussianBlur(closed, (0, 0), FOVEA_BLUR_DD * dd)
    local = cv2.GaussianBlur(closed, (0, 0), FOVEA_SURROUND_DD * dd)
    darkness = local - blur  # positive where darker than the surroundings
    yy, xx = np.mgrid[: closed.shape[0], : closed.shape[1]]
    dist = np.sqrt((yy - dy0) ** 2 + (xx - dx0) ** 2) / dd
    angle = np.degrees(np.arctan2(np.abs(yy - dy0), np.abs(xx - dx0)))
    search = core & (dist >= FOVEA_DD[0]) & (dist <= FOVEA_DD[1]) & (angle <= FOVEA_MAX_ANGLE)
    # Photos are centred on the macula or between it and the disc: when the disc is off centre,
    # the fovea lies on the centre's side of it (the other side is the dim rim of the field).
    ys, xs = np.nonzero(core)
    centre_x = float(xs.mean())
    if side is not None:
        search &= side * (xx - dx0) > 0
    elif abs(centre_x - dx0) > 0.1 * diameter:
        search &= np.sign(centre_x - dx0) * (xx - dx0) > 0
    if search.sum() < 10:
        return None
    density = cv2.GaussianBlur(vessels, (0, 0), 0.5 * dd)
    dark_z, vessel_z = _zscore(darkness, core), _zscore(density, core)
    score = np.where(search, dark_z - 0.5 * vessel_z - 0.3 * np.abs(dist - FOVEA_PREFERRED_DD), -np.inf)
    y, x = np.unravel_index(int(np.argmax(score)), score.shape)
    confidence = float(np.clip(dark_z[y, x] / 1.5, 0, 1))
    return _Fovea(float(x), float(y), confidence)
