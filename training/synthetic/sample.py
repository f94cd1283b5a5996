"""One sample: the four stages (background, photometric variation, look-alikes and lesions,
camera effects) driven by one ``numpy.random.Generator``, in a fixed order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera import camera_effects, photometric
from .canvas import REFERENCE_SIZE
from .fundus import photo_fundus, procedural_fundus
from .lesions import Painter, draw_lesions
from .lookalikes import vessel_dots

P_PHOTO_BACKGROUND = 0.5  # share of samples on the CC0 photo; the others are procedural


@dataclass
class Sample:
    """One synthetic fundus photo and its ground truth.

    image: H x W x 3 uint8 RGB (before the final JPEG encoding, quality ``jpeg_quality``).
    masks: 4 x H x W uint8 in {0, 1}, EX, HE, MA, SE.
    fov: H x W bool field of view. Points are (x, y) pixels; radii in pixels.
    lesion_counts: number of lesion objects drawn per class (EX spots counted one by one).
    """

    image: np.ndarray
    masks: np.ndarray
    fov: np.ndarray
    disc_centre: tuple[float, float]
    disc_radius: float
    fovea: tuple[float, float]
    lesion_counts: dict[str, int]
    background: str
    jpeg_quality: int


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for image ``index`` of dataset ``seed``: independent of N and workers."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    return np.random.default_rng([seed, index])


def _as_rng(rng_or_seed: np.random.Generator | int) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(rng_or_seed)


def render_sample(rng_or_seed: np.random.Generator | int, size: int = REFERENCE_SIZE) -> Sample:
    """One synthetic fundus photo (``size`` x ``size``) with its masks and landmarks."""
    if size < 64:
        raise ValueError(f"size must be >= 64 pixels, got {size}")
    rng = _as_rng(rng_or_seed)
    if rng.random() < P_PHOTO_BACKGROUND:
        f = photo_fundus(rng, size)
    else:
        f = procedural_fundus(rng, size)
    photometric(rng, f)
    painter = Painter(f, rng)
    vessel_dots(painter)
    counts = draw_lesions(painter)
    image = camera_effects(rng, f.image, size / REFERENCE_SIZE)
    return Sample(
        image=image,
        masks=painter.masks,
        fov=f.fov >= 0.5,
        disc_centre=(float(f.disc[0]), float(f.disc[1])),
        disc_radius=float(f.disc_radius),
        fovea=(float(f.fovea[0]), float(f.fovea[1])),
        lesion_counts=counts,
        background=f.kind,
        jpeg_quality=int(rng.integers(90, 96)),
    )


def generate_sample(
    rng_or_seed: np.random.Generator | int, size: int = REFERENCE_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """(image H x W x 3 uint8 RGB, masks 4 x H x W uint8 in {0, 1}, order EX, HE, MA, SE)."""
    sample = render_sample(rng_or_seed, size)
    return sample.image, sample.masks
