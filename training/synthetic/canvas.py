"""The fundus under construction and the drawing primitives every stage uses.

All drawing happens on float32 RGB in [0, 1]; shapes are anti-aliased alpha maps whose
``alpha >= 0.5`` is the outline itself, so a lesion's label is exactly where it shows.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

REFERENCE_SIZE = 1024  # docs/architecture.md#lesion-classes gives lesion sizes at this image width


@dataclass
class Fundus:
    """Background under construction: float32 RGB in [0, 1] plus its landmarks."""

    image: np.ndarray  # H x W x 3 float32
    fov: np.ndarray  # H x W float32 coverage in [0, 1], anti-aliased edge
    centre: np.ndarray  # FOV centre (x, y)
    radius: float  # FOV radius
    disc: np.ndarray
    disc_radius: float
    fovea: np.ndarray
    kind: str


@functools.lru_cache(maxsize=4)
def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates as broadcastable (ys: H x 1, xs: 1 x W) float32."""
    r = np.arange(size, dtype=np.float32)
    return r[:, None], r[None, :]


def smooth_noise(rng: np.random.Generator, grid: int, h: int, w: int | None = None, channels: int = 1) -> np.ndarray:
    """Zero-mean, unit-variance-ish noise varying on the scale of (h / grid) pixels."""
    w = h if w is None else w
    grid = max(2, int(grid))
    low = rng.standard_normal((grid, grid, channels)).astype(np.float32)
    field = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    return field.reshape(h, w, channels) if channels > 1 else field.reshape(h, w)


def log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def patch_grid(cx: float, cy: float, half: float, size: int):
    """Clipped square patch around (cx, cy): slices and local dx (1 x w), dy (h x 1)."""
    x0, x1 = max(0, int(cx - half)), min(size, int(cx + half) + 2)
    y0, y1 = max(0, int(cy - half)), min(size, int(cy + half) + 2)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    return (slice(y0, y1), slice(x0, x1)), dx, dy


def composite(image: np.ndarray, sl, alpha: np.ndarray, colour) -> None:
    """In place: image[sl] = image[sl] * (1 - alpha) + colour * alpha."""
    a = alpha[..., None]
    patch = image[sl]
    patch *= 1.0 - a
    patch += a * np.asarray(colour, dtype=np.float32)


def shape_alpha(
    rng: np.random.Generator,
    cx: float,
    cy: float,
    a: float,
    b: float,
    angle: float,
    edge: float,
    rough: float = 0.0,
    harmonics: int = 6,
    taper: float = 0.0,
    feather: float = 0.0,
) -> tuple[np.ndarray, int, int]:
    """Anti-aliased alpha of an irregular blob (semi-axes a along ``angle``, b across).

    The outline is an ellipse whose radius is perturbed by random harmonics (``rough`` is
    the total relative amplitude) and whose width changes linearly along the major axis
    (``taper``, flame shapes). ``feather`` > 0 splits the ends into fibre-like streaks
    along the major axis (the nerve-fibre striation of flame haemorrhages). Alpha falls
    from 1 to 0 over ``edge`` pixels, so
    ``alpha >= 0.5`` is the outline itself. Returns (alpha h x w, y0, x0); the patch may
    extend outside the image (the caller checks).
    """
    ext = max(a, b) * (1.0 + rough) * (1.0 + abs(taper)) * (1.0 + feather) + 2.0 * edge + 2.0
    x0, y0 = int(math.floor(cx - ext)), int(math.floor(cy - ext))
    x1, y1 = int(math.ceil(cx + ext)) + 1, int(math.ceil(cy + ext)) + 1
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    c, s = math.cos(angle), math.sin(angle)
    u = dx * c + dy * s
    v = dy * c - dx * s
    bu = b * np.clip(1.0 + taper * u / a, 0.25, None) if taper else np.float32(b)
    if feather:
        periods = rng.uniform([3.0, 6.0], [5.0, 11.0])
        phases = rng.uniform(0, 2 * np.pi, 2)
        streaks = 0.6 * np.sin(2 * np.pi * v / periods[0] + phases[0]) + 0.4 * np.sin(
            2 * np.pi * v / periods[1] + phases[1]
        )
        un = u / (a * (1.0 + feather * streaks))
    else:
        un = u / a
    vn = v / bu
    rho = np.sqrt(un * un + vn * vn)
    boundary = np.ones_like(rho)
    if rough > 0 and harmonics >= 2:
        theta = np.arctan2(vn, un)
        ks = np.arange(2, harmonics + 1)
        amps = rng.uniform(0.2, 1.0, ks.size) / ks**0.8
        amps *= rough / amps.sum()
        phases = rng.uniform(0, 2 * np.pi, ks.size)
        for k, amp, ph in zip(ks, amps, phases):
            boundary += np.float32(amp) * np.cos(k * theta + ph)
    alpha = np.clip(0.5 + (boundary - rho) * bu / edge, 0.0, 1.0)
    return alpha.astype(np.float32), y0, x0
