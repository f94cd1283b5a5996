"""Synthetic fundus photographs with pixel-exact lesion masks, written in the DDR layout.

The data trains the bundled demonstration model, which is later scored on lesions drawn by a
different generator, so the emphasis is on the lesions themselves (DESIGN §1 sizes, shapes and
colours) and on unlabelled look-alikes the model must learn to reject: the bright optic disc,
vessel segments and crossings, dark dots at vessel ends, the foveal reflex.

One sample is built in four stages, all driven by one ``numpy.random.Generator``:

1. background: either the CC0 photo ``skimage.data.retina()`` (a normal eye) re-framed and
   re-coloured, or a procedural fundus (FOV, choroid texture, disc, macula, vessel tree);
2. photometric variation of that background (channel gains, gamma, saturation, illumination);
3. lesions, each composited in a local patch with an alpha map and a colour derived from the
   local background; its label is exactly ``alpha >= 0.5``;
4. camera effects shared by background and lesions (blur, noise, JPEG re-compression).

Command line::

    python -m training.synthetic --out DIR --n N --seed S [--size 1024]
        [--splits train=0.6,valid=0.15,test=0.25] [--workers K]

writes ``DIR/lesion_segmentation/<split>/image/<stem>.jpg`` and
``DIR/lesion_segmentation/<split>/label/{EX,HE,MA,SE}/<stem>.tif`` (uint8, 0 / 255, all four
present for every image, all-zero when the lesion is absent, as in DDR) plus
``DIR/synthetic.json``. Image ``index`` depends only on ``(seed, index)``, never on ``N`` or on
the worker count.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing
import os
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

GENERATOR_VERSION = "1.0.0"
# Channel order fixed project-wide (DESIGN §1); the same tuple as hydralanet.config.CLASSES,
# not imported because importing hydralanet loads torch (seconds per spawned worker).
LESION_IDS = ("EX", "HE", "MA", "SE")
DDR_SPLITS = ("train", "valid", "test")  # the only split folders a DDR reader looks for
DEFAULT_SPLITS = {"train": 0.6, "valid": 0.15, "test": 0.25}
REFERENCE_SIZE = 1024  # DESIGN §1 gives lesion sizes at this image width
P_NO_LESIONS = 0.15  # share of lesion-free images (the model must learn to predict nothing)
P_PHOTO_BACKGROUND = 0.5

# Landmarks of skimage.data.retina() (1411 x 1411), measured once by hand on the image:
# FOV = centroid / equivalent radius of the thresholded field; disc radius includes the
# temporal pigment crescent; fovea = darkest point of the blurred green channel.
_PHOTO_FOV_CENTRE = np.array([705.4, 701.8])
_PHOTO_FOV_RADIUS = 698.0
_PHOTO_DISC = np.array([250.0, 660.0])
_PHOTO_DISC_RADIUS = 90.0
_PHOTO_FOVEA = np.array([699.0, 698.0])

DISC_EXCLUSION = 1.35  # no lesion within this many disc radii of the disc centre
LANDMARKS_FILE = "landmarks.csv"  # image (relative path), disc_x, disc_y, disc_diameter, fovea_x, fovea_y


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


@dataclass
class _Fundus:
    """Background under construction: float32 RGB in [0, 1] plus its landmarks."""

    image: np.ndarray  # H x W x 3 float32
    fov: np.ndarray  # H x W float32 coverage in [0, 1], anti-aliased edge
    centre: np.ndarray  # FOV centre (x, y)
    radius: float  # FOV radius
    disc: np.ndarray
    disc_radius: float
    fovea: np.ndarray
    kind: str


# ----------------------------------------------------------------------------- helpers


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for image ``index`` of dataset ``seed``: independent of N and workers."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    return np.random.default_rng([seed, index])


def _as_rng(rng_or_seed: np.random.Generator | int) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(rng_or_seed)


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates as broadcastable (ys: H x 1, xs: 1 x W) float32."""
    r = np.arange(size, dtype=np.float32)
    return r[:, None], r[None, :]


def _smooth_noise(rng: np.random.Generator, grid: int, h: int, w: int | None = None, channels: int = 1) -> np.ndarray:
    """Zero-mean, unit-variance-ish noise varying on the scale of (h / grid) pixels."""
    w = h if w is None else w
    grid = max(2, int(grid))
    low = rng.standard_normal((grid, grid, channels)).astype(np.float32)
    field = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    return field.reshape(h, w, channels) if channels > 1 else field.reshape(h, w)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _patch_grid(cx: float, cy: float, half: float, size: int):
    """Clipped square patch around (cx, cy): slices and local dx (1 x w), dy (h x 1)."""
    x0, x1 = max(0, int(cx - half)), min(size, int(cx + half) + 2)
    y0, y1 = max(0, int(cy - half)), min(size, int(cy + half) + 2)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    return (slice(y0, y1), slice(x0, x1)), dx, dy


def _composite(image: np.ndarray, sl, alpha: np.ndarray, colour) -> None:
    """In place: image[sl] = image[sl] * (1 - alpha) + colour * alpha."""
    a = alpha[..., None]
    patch = image[sl]
    patch *= 1.0 - a
    patch += a * np.asarray(colour, dtype=np.float32)


def _shape_alpha(
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


# ----------------------------------------------------------------------------- vessels


def _catmull_rom(points: np.ndarray, step: float) -> np.ndarray:
    """Dense polyline (about ``step`` px apart) through the waypoints (N x 2)."""
    p = np.vstack([2 * points[0] - points[1], points, 2 * points[-1] - points[-2]])
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        n = max(2, int(np.linalg.norm(p2 - p1) / step))
        t = np.linspace(0, 1, n, endpoint=False)[:, None]
        out.append(
            0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (3 * p1 - p0 - 3 * p2 + p3) * t**3)
        )
    out.append(points[-1:])
    return np.vstack(out)


@dataclass
class _TreeContext:
    centre: np.ndarray
    radius: float
    fovea: np.ndarray
    avascular: float  # foveal avascular zone radius
    disc: np.ndarray
    disc_radius: float
    min_width: float
    step: float
    scale: float


def _random_walk(
    rng: np.random.Generator, start: np.ndarray, heading: float, length: float, ctx: _TreeContext
) -> np.ndarray:
    """Gently curving path; stops at the FOV rim or at the foveal avascular zone."""
    n = max(3, int(length / ctx.step))
    turn = rng.normal(0.0, 0.04, n) + rng.normal(0.0, 0.006)
    turn = np.convolve(turn, np.ones(3) / 3, mode="same")  # no kinks between steps
    headings = heading + np.cumsum(turn)
    steps = ctx.step * np.stack([np.cos(headings), np.sin(headings)], axis=1)
    pts = np.vstack([start, start + np.cumsum(steps, axis=0)])
    inside = (np.linalg.norm(pts - ctx.centre, axis=1) < ctx.radius * 1.02) & (
        np.linalg.norm(pts - ctx.fovea, axis=1) > ctx.avascular
    )
    stop = np.argmin(inside) if not inside.all() else len(pts)
    return pts[:stop]


def _grow_tree(
    rng: np.random.Generator, pts: np.ndarray, widths: np.ndarray, depth: int, ctx: _TreeContext, out: list, ends: list
) -> None:
    """Appends (points, widths) of this vessel and, recursively, of its side branches."""
    out.append((pts, widths))
    if len(pts) < 4:
        return
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    arclen = np.concatenate([[0.0], np.cumsum(seg)])
    from_disc = np.linalg.norm(pts - ctx.disc, axis=1)
    pos = arclen[np.argmax(from_disc > 1.4 * ctx.disc_radius)] if depth == 0 else 0.0
    pos += rng.uniform(0.3, 1.0) * (10 * widths[0] + 20 * ctx.scale)
    while depth < 3 and pos < arclen[-1] - 10 * ctx.scale:
        i = int(np.searchsorted(arclen, pos))
        w_parent = float(widths[i])
        w_child = w_parent * rng.uniform(0.4, 0.8)
        pos += rng.uniform(8, 18) * w_parent + 25 * ctx.scale
        if w_child < ctx.min_width * 1.2:
            continue
        j = min(i + 1, len(pts) - 1)
        tangent = math.atan2(pts[j, 1] - pts[i - 1, 1], pts[j, 0] - pts[i - 1, 0])
        heading = tangent + rng.choice([-1, 1]) * rng.uniform(0.45, 1.25)
        length = w_child * rng.uniform(25, 55) + 30 * ctx.scale
        child = _random_walk(rng, pts[i], heading, length, ctx)
        if len(child) < 3:
            continue
        end_w = max(ctx.min_width, w_child * rng.uniform(0.3, 0.6))
        child_w = np.linspace(w_child, end_w, len(child))
        # the parent narrows after giving off blood (Murray's law, roughly)
        widths[i:] *= math.sqrt(max(0.5, 1.0 - 0.5 * (w_child / w_parent) ** 2))
        _grow_tree(rng, child, child_w, depth + 1, ctx, out, ends)
        if end_w < 1.6 * ctx.scale and rng.random() < 0.15:
            ends.append((child[-1], end_w))


def _vessel_value(widths: np.ndarray, s: float) -> np.ndarray:
    """Canvas intensity (0-255) per vessel width: thin vessels hold less blood, so are paler."""
    return np.clip(80 + 35 * widths / max(s, 0.25), 80, 255).astype(int)


def _draw_vessels(rng: np.random.Generator, f: _Fundus) -> None:
    """Arcades, nasal vessels and their branches; veins darker and wider than arteries.

    Drawn at 2x resolution with anti-aliased lines, then area-downsampled, so widths are
    fractional and thin vessels are faint. Some thin branches end in a small dark dot
    (an unlabelled microaneurysm look-alike).
    """
    size = f.image.shape[0]
    s = size / REFERENCE_SIZE
    sup = 2  # supersampling factor
    dist_vec = f.fovea - f.disc
    dist = float(np.linalg.norm(dist_vec))
    ex = dist_vec / dist
    ey = np.array([-ex[1], ex[0]])
    ctx = _TreeContext(
        f.centre,
        f.radius,
        f.fovea,
        f.disc_radius * rng.uniform(0.6, 0.9),
        f.disc,
        f.disc_radius,
        max(0.5, 1.0 * s),
        3.0 * max(s, 0.5),
        s,
    )

    def to_image(wp: np.ndarray) -> np.ndarray:
        return f.disc + wp[:, :1] * dist * ex + wp[:, 1:] * dist * ey

    roots = []  # (points, widths, is_vein)
    for is_vein in (True, False):
        w0 = (rng.uniform(10, 13) if is_vein else rng.uniform(7, 9.5)) * s
        for sign in (-1.0, 1.0):
            arcade = np.array(
                [
                    (0.0, 0.03),
                    (0.05, 0.25),
                    (0.22, 0.5),
                    (0.55, 0.66),
                    (0.95, 0.66),
                    (1.35, 0.56),
                    (1.75, 0.44),
                    (2.2, 0.34),
                    (2.7, 0.26),
                ]
            )
            arcade[:, 1] *= rng.uniform(0.85, 1.2)
            arcade[1:] += rng.normal(0.0, 0.035, arcade[1:].shape)
            arcade[:, 1] *= sign
            nasal = np.array([(0.0, 0.03), (-0.08, 0.3), (-0.25, 0.6), (-0.45, 0.95), (-0.6, 1.3), (-0.7, 1.7)])
            rot = rng.normal(0.0, 0.3)
            c, sn = math.cos(rot), math.sin(rot)
            nasal = nasal @ np.array([[c, -sn], [sn, c]]).T
            nasal[1:] += rng.normal(0.0, 0.05, nasal[1:].shape)
            nasal[:, 1] *= sign
            for wp, w in ((arcade, w0), (nasal, w0 * rng.uniform(0.55, 0.8))):
                pts = _catmull_rom(to_image(wp), ctx.step)
                keep = np.linalg.norm(pts - f.centre, axis=1) < f.radius * 1.02
                pts = pts[: np.argmin(keep) if not keep.all() else len(pts)]
                if len(pts) > 3:
                    roots.append((pts, np.linspace(w, w * rng.uniform(0.35, 0.55), len(pts)), is_vein))
        for _ in range(rng.integers(1, 4)):  # smaller vessels leaving the disc nasally
            heading = math.atan2(-ex[1], -ex[0]) + rng.uniform(-1.3, 1.3)
            start = f.disc + rng.normal(0, 0.2 * f.disc_radius, 2)
            pts = _random_walk(rng, start, heading, rng.uniform(0.6, 1.5) * dist, ctx)
            if len(pts) > 3:
                w = w0 * rng.uniform(0.3, 0.5)
                roots.append((pts, np.linspace(w, ctx.min_width, len(pts)), is_vein))

    canvases = {True: np.zeros((size * sup, size * sup), np.uint8), False: np.zeros((size * sup, size * sup), np.uint8)}
    reflex = np.zeros((size * sup, size * sup), np.uint8)
    shift = 3
    k = sup * (1 << shift)
    for root_pts, root_w, is_vein in roots:
        tree: list = []
        ends: list = []
        _grow_tree(rng, root_pts, root_w, 0, ctx, tree, ends)
        canvas = canvases[is_vein]
        for pts, widths in tree:
            thick = np.maximum(1, np.round(widths * sup)).astype(int)
            value = _vessel_value(widths, s)
            ipts = np.round(pts * k).astype(np.int32)
            cut = np.flatnonzero(np.diff(thick) != 0) + 1
            for a, b in zip(np.concatenate([[0], cut]), np.concatenate([cut, [len(pts)]])):
                seg = ipts[max(0, a - 1) : b]
                if len(seg) >= 2:
                    cv2.polylines(
                        canvas, [seg.reshape(-1, 1, 2)], False, int(value[a]), int(thick[a]), cv2.LINE_AA, shift
                    )
            if not is_vein and widths[0] > 4.5 * s:
                wide = widths > 4.5 * s
                seg = ipts[wide]
                if len(seg) >= 2:
                    cv2.polylines(
                        reflex,
                        [seg.reshape(-1, 1, 2)],
                        False,
                        255,
                        max(1, int(round(widths[0] * sup * 0.2))),
                        cv2.LINE_AA,
                        shift,
                    )
        for end, end_w in ends:  # a bulb continuing its own vessel, never an isolated dot
            r = end_w * rng.uniform(0.9, 1.6) * sup
            value = min(255, int(_vessel_value(np.array([end_w]), s)[0] * rng.uniform(1.0, 1.3)))
            cv2.circle(
                canvas, tuple(np.round(end * k).astype(int)), int(r * (1 << shift)), value, -1, cv2.LINE_AA, shift
            )

    def down(c: np.ndarray) -> np.ndarray:
        small = cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
        # rounder cross-section: dark core, fading walls
        return cv2.GaussianBlur(small, (0, 0), 0.5 * max(s, 0.5)) / 255

    veins, arteries, shine = down(canvases[True]), down(canvases[False]), down(reflex)
    # blood absorbs green and blue far more than red: vessels are darker *red*
    k_vein = np.array([rng.uniform(0.15, 0.3), rng.uniform(0.45, 0.6), rng.uniform(0.35, 0.5)], np.float32)
    k_art = np.array([rng.uniform(0.05, 0.12), rng.uniform(0.25, 0.38), rng.uniform(0.2, 0.3)], np.float32)
    f.image *= (1.0 - veins[..., None] * k_vein) * (1.0 - arteries[..., None] * k_art)
    f.image += (shine * rng.uniform(0.03, 0.09))[..., None]


# ----------------------------------------------------------------------------- backgrounds


def _procedural_fundus(rng: np.random.Generator, size: int) -> _Fundus:
    """Black surround, circular (sometimes top/bottom-cropped) field, choroid texture,
    vignetting, macula with fovea, optic disc with cup, vessel tree."""
    s = size / REFERENCE_SIZE
    ys, xs = _grid(size)
    centre = np.full(2, size / 2.0) + rng.normal(0.0, 0.012 * size, 2)
    radius = size * 0.5 * rng.uniform(0.9, 0.99)
    r = np.sqrt((xs - np.float32(centre[0])) ** 2 + (ys - np.float32(centre[1])) ** 2)
    fov = np.clip(np.float32(radius) - r + 0.5, 0.0, 1.0)
    if rng.random() < 0.35:  # many cameras clip the circle top and bottom
        half_h = radius * rng.uniform(0.8, 0.94)
        fov *= np.clip(np.float32(half_h) - np.abs(ys - np.float32(centre[1])) + 0.5, 0.0, 1.0)

    side = 1 if rng.random() < 0.5 else -1  # +1: fovea right of the disc (a left eye)
    disc_r = radius * rng.uniform(0.11, 0.145)
    dist = 2 * disc_r * rng.uniform(2.3, 2.8)
    tilt = rng.normal(0.06, 0.05)  # the disc sits slightly above the fovea
    if rng.random() < 0.7:  # macula-centred
        fovea = centre + rng.normal(0.0, 0.05 * radius, 2)
    else:  # between macula- and disc-centred
        fovea = centre + np.array([side * rng.uniform(0.1, 0.45) * dist, rng.normal(0.0, 0.05 * radius)])
    disc = fovea + np.array([-side * dist * math.cos(tilt), -dist * math.sin(tilt)])
    excess = np.linalg.norm(disc - centre) + 1.5 * disc_r - 0.9 * radius
    if excess > 0:
        inward = (centre - disc) / np.linalg.norm(centre - disc)
        disc, fovea = disc + excess * inward, fovea + excess * inward

    pig = rng.uniform()
    light, dark = np.array([0.95, 0.45, 0.22]), np.array([0.62, 0.2, 0.07])
    base = ((light + (dark - light) * pig) * rng.uniform(0.92, 1.08, 3)).astype(np.float32)
    lum = (
        0.08 * _smooth_noise(rng, 4, size)
        + 0.035 * _smooth_noise(rng, 12, size)
        + 0.012 * _smooth_noise(rng, size // 6, size)
    )
    chroma = 0.025 * _smooth_noise(rng, 5, size, channels=3)
    # choroidal pattern: a network of lighter vessels with darker pigmented gaps,
    # more visible towards the periphery and in lightly pigmented eyes
    band = _smooth_noise(rng, int(rng.uniform(18, 30)), size)
    ridges = np.exp(-((band / 0.45) ** 2))
    tigroid = rng.uniform(0.02, 0.14) * (1.2 - pig) * (0.25 + 0.75 * (r / np.float32(radius)) ** 2)
    tex = lum[..., None] + chroma + (tigroid * (ridges - 0.45))[..., None] * np.array([0.7, 1.0, 1.0], np.float32)
    img = base * (1.0 + tex)
    vignette = rng.uniform(0.15, 0.5) * np.clip(r / np.float32(radius), 0, 1) ** rng.uniform(2, 4)
    img *= (1.0 - vignette)[..., None]

    f = _Fundus(
        img.astype(np.float32), fov.astype(np.float32), centre, float(radius), disc, float(disc_r), fovea, "procedural"
    )
    _draw_macula(rng, f, s)
    _draw_disc(rng, f, side)
    _draw_vessels(rng, f)
    f.image *= f.fov[..., None]
    return f


def _draw_macula(rng: np.random.Generator, f: _Fundus, s: float) -> None:
    size = f.image.shape[0]
    sigma = f.disc_radius * rng.uniform(0.9, 1.4)
    sl, dx, dy = _patch_grid(f.fovea[0], f.fovea[1], 4 * sigma, size)
    d2 = dx * dx + dy * dy
    dark = rng.uniform(0.08, 0.25) * np.exp(-d2 / (2 * sigma**2))
    dark += rng.uniform(0.04, 0.14) * np.exp(-d2 / (2 * (0.25 * f.disc_radius) ** 2))
    # macular pigment absorbs blue/green more than red
    f.image[sl] *= 1.0 - dark[..., None] * np.array([0.8, 1.0, 1.2], np.float32)
    if rng.random() < 0.5:  # foveal light reflex: a tiny unlabelled bright dot
        r = rng.uniform(1.0, 2.5) * max(s, 0.4)
        alpha, y0, x0 = _shape_alpha(rng, f.fovea[0], f.fovea[1], r, r, 0.0, 0.8)
        h, w = alpha.shape
        _composite(f.image, (slice(y0, y0 + h), slice(x0, x0 + w)), alpha * rng.uniform(0.2, 0.45), (1.0, 0.95, 0.85))


def _draw_disc(rng: np.random.Generator, f: _Fundus, side: int) -> None:
    """Bright yellowish disc (vertical oval) with a brighter cup offset towards the fovea."""
    size = f.image.shape[0]
    rd = f.disc_radius
    sl, dx, dy = _patch_grid(f.disc[0], f.disc[1], 1.6 * rd, size)
    aspect = rng.uniform(1.0, 1.12)
    rho = np.sqrt(dx * dx + (dy / aspect) ** 2) / rd
    patch = f.image[sl]
    local = patch.reshape(-1, 3).mean(axis=0)
    rim_col = local + (np.array([1.0, rng.uniform(0.65, 0.8), rng.uniform(0.35, 0.5)]) - local) * rng.uniform(0.6, 0.85)
    edge = rng.uniform(0.04, 0.1)
    disc_a = np.clip(0.5 + (1.0 - rho) / edge, 0.0, 1.0)
    disc_a *= 1.0 + 0.05 * _smooth_noise(rng, 6, *disc_a.shape)
    _composite(f.image, sl, np.clip(disc_a, 0, 1), rim_col)
    if rng.random() < 0.35:  # peripapillary crescent on the temporal side
        phi = np.arctan2(dy, dx) - (0.0 if side > 0 else np.pi)
        phi = (phi + np.pi) % (2 * np.pi) - np.pi
        outer = rng.uniform(1.12, 1.3)
        ring = np.clip((rho - 0.95) / 0.05, 0, 1) * np.clip((outer - rho) / 0.05, 0, 1)
        ring *= np.exp(-((phi / rng.uniform(0.5, 0.9)) ** 2))
        if rng.random() < 0.6:
            _composite(f.image, sl, ring * rng.uniform(0.3, 0.7), (0.95, 0.8, 0.62))
        else:
            f.image[sl] *= 1.0 - (ring * rng.uniform(0.3, 0.5))[..., None]
    cup_c = f.disc + np.array([side * rng.uniform(0.0, 0.25) * rd, rng.normal(0, 0.05) * rd])
    cup_r = rng.uniform(0.3, 0.55) * rd
    crho = np.sqrt((dx + np.float32(f.disc[0] - cup_c[0])) ** 2 + (dy + np.float32(f.disc[1] - cup_c[1])) ** 2) / cup_r
    cup_a = np.clip(0.5 + (1.0 - crho) / rng.uniform(0.3, 0.7), 0.0, 1.0) * rng.uniform(0.5, 0.85)
    _composite(f.image, sl, cup_a, (1.0, rng.uniform(0.86, 0.95), rng.uniform(0.68, 0.85)))


@functools.lru_cache(maxsize=1)
def _photo_reference() -> tuple[np.ndarray, np.ndarray]:
    """skimage.data.retina() as float32 RGB and its FOV coverage (loaded once per process)."""
    from skimage import data  # heavy import; only the photo background needs it

    rgb = data.retina()
    fov = (cv2.GaussianBlur(rgb.max(axis=2), (0, 0), 2) > 20).astype(np.float32)
    return rgb.astype(np.float32) / 255.0, fov


def _photo_fundus(rng: np.random.Generator, size: int) -> _Fundus:
    """The CC0 photo rotated, flipped, zoomed (the circle may be cropped) and shifted."""
    ref, ref_fov = _photo_reference()
    zoom = rng.uniform(0.92, 1.3)  # FOV diameter / image width
    scale = zoom * size / (2 * _PHOTO_FOV_RADIUS)
    pre = min(1.0, scale * 1.3)  # area-downsample first so the warp does not alias
    if pre < 1.0:
        n = int(round(ref.shape[0] * pre))
        pre = n / ref.shape[0]
        ref = cv2.resize(ref, (n, n), interpolation=cv2.INTER_AREA)
        ref_fov = cv2.resize(ref_fov, (n, n), interpolation=cv2.INTER_AREA)
    angle = math.radians(rng.uniform(-20, 20))
    flip = np.diag([-1.0 if rng.random() < 0.5 else 1.0, -1.0 if rng.random() < 0.2 else 1.0])
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    lin = (scale / pre) * rot @ flip
    slack = max(0.0, zoom - 1.0) * size / 2 + 0.02 * size
    out_c = np.full(2, (size - 1) / 2.0) + rng.uniform(-slack, slack, 2)

    def to_small(p: np.ndarray) -> np.ndarray:
        return (p + 0.5) * pre - 0.5

    src_c = to_small(_PHOTO_FOV_CENTRE)
    matrix = np.hstack([lin, (out_c - lin @ src_c)[:, None]])

    def to_out(p: np.ndarray) -> np.ndarray:
        return lin @ to_small(p) + matrix[:, 2]

    img = cv2.warpAffine(
        ref, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    fov = cv2.warpAffine(
        ref_fov, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    return _Fundus(
        img,
        fov,
        to_out(_PHOTO_FOV_CENTRE),
        _PHOTO_FOV_RADIUS * scale,
        to_out(_PHOTO_DISC),
        _PHOTO_DISC_RADIUS * scale,
        to_out(_PHOTO_FOVEA),
        "photo",
    )


def _photometric(rng: np.random.Generator, f: _Fundus) -> None:
    """Camera/eye colour and illumination variation, applied before lesions are drawn so
    that lesion colours (derived from the local background) follow it."""
    size = f.image.shape[0]
    img = f.image * rng.uniform([0.9, 0.8, 0.7], [1.1, 1.2, 1.35]).astype(np.float32)
    img = np.clip(img, 0.0, None) ** np.float32(math.exp(rng.normal(0.0, 0.18)))
    lum = img @ np.array([0.299, 0.587, 0.114], np.float32)
    img = lum[..., None] + np.float32(rng.uniform(0.75, 1.25)) * (img - lum[..., None])
    ys, xs = _grid(size)
    r = np.sqrt((xs - np.float32(f.centre[0])) ** 2 + (ys - np.float32(f.centre[1])) ** 2)
    gain = 1.0 + rng.uniform(0.04, 0.22) * _smooth_noise(rng, 3, size)
    gain *= 1.0 - rng.uniform(0.0, 0.35) * np.clip(r / np.float32(f.radius), 0, 1) ** 3
    img *= (gain * np.float32(rng.uniform(0.8, 1.15)))[..., None]
    f.image = np.clip(img, 0.0, 1.0).astype(np.float32) * f.fov[..., None]


# ----------------------------------------------------------------------------- lesions


class _Painter:
    """Places lesions: checks where they may go, composites them, records their labels."""

    def __init__(self, f: _Fundus, rng: np.random.Generator):
        self.f, self.rng = f, rng
        self.size = size = f.image.shape[0]
        self.s = size / REFERENCE_SIZE
        self.masks = np.zeros((len(LESION_IDS), size, size), np.uint8)
        margin = max(2, int(round(6 * self.s)))
        inside = (f.fov >= 0.999).astype(np.uint8)
        inside = cv2.erode(inside, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1)))
        ys, xs = _grid(size)
        on_disc = (xs - np.float32(f.disc[0])) ** 2 + (ys - np.float32(f.disc[1])) ** 2 <= np.float32(
            DISC_EXCLUSION * f.disc_radius
        ) ** 2
        self.allowed = inside.astype(bool) & ~on_disc
        # vessels = dark thin structures in green: black-hat (closing minus image)
        k = max(5, int(17 * self.s) | 1)
        green = np.clip(f.image[..., 1] * 255, 0, 255).astype(np.uint8)
        closed = cv2.morphologyEx(green, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        hat = closed.astype(np.int16) - green
        self.vessel = (hat > 0.1 * closed + 2) & inside.astype(bool)

        self.lowres = low = 128 if size >= 128 else size
        self.cell = size / low
        area = cv2.INTER_AREA
        fov_low = cv2.resize(f.fov, (low, low), interpolation=area)
        bg = cv2.resize(f.image * f.fov[..., None], (low, low), interpolation=area)
        bg = bg / np.maximum(fov_low, 1e-3)[..., None]
        # a closing removes vessels, so colours come from the retina around them
        self.bg = cv2.morphologyEx(bg, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
        self.allowed_low = cv2.resize(self.allowed.astype(np.float32), (low, low), interpolation=area) > 0.99
        vessel_low = cv2.resize(self.vessel.astype(np.float32), (low, low), interpolation=area)
        near = cv2.GaussianBlur(vessel_low, (0, 0), 2.0)
        self.near_vessel = near / max(float(near.max()), 1e-6)
        big = cv2.GaussianBlur(vessel_low, (0, 0), 5.0)
        self.arcades = big / max(float(big.max()), 1e-6)
        lr = (np.arange(low, dtype=np.float32) + 0.5) * self.cell
        self.dist_fovea = np.hypot(lr[None, :] - f.fovea[0], lr[:, None] - f.fovea[1])
        self.dist_disc = np.hypot(lr[None, :] - f.disc[0], lr[:, None] - f.disc[1])
        self.disc_fovea = float(np.linalg.norm(f.fovea - f.disc))

    def posterior(self, width: float) -> np.ndarray:
        """Weight peaking at the fovea, ``width`` in disc-fovea distances."""
        return np.exp(-0.5 * (self.dist_fovea / (width * self.disc_fovea)) ** 2)

    def pick(self, weight: np.ndarray, k: int = 1) -> np.ndarray:
        """k points (x, y) drawn from a low-res weight map restricted to allowed cells."""
        p = (weight * self.allowed_low).ravel().astype(np.float64)
        if p.sum() <= 0:
            return np.zeros((0, 2))
        idx = self.rng.choice(p.size, size=k, p=p / p.sum())
        cells = np.stack([idx % self.lowres, idx // self.lowres], axis=1)
        return (cells + self.rng.uniform(0, 1, (k, 2))) * self.cell - 0.5

    def background(self, x: float, y: float) -> np.ndarray:
        i = min(self.lowres - 1, max(0, int((y + 0.5) / self.cell)))
        j = min(self.lowres - 1, max(0, int((x + 0.5) / self.cell)))
        return self.bg[i, j]

    def place(self, lesion: int, alpha: np.ndarray, y0: int, x0: int, colour, avoid_vessels: bool = False) -> bool:
        """Composites the lesion if it fits (inside the FOV, off the disc, not over another
        lesion class); its label is alpha >= 0.5. Returns whether it was drawn."""
        h, w = alpha.shape
        if y0 < 0 or x0 < 0 or y0 + h > self.size or x0 + w > self.size:
            return False
        sl = (slice(y0, y0 + h), slice(x0, x0 + w))
        label = alpha >= 0.5
        foot = alpha > 0.02
        if not label.any() or not self.allowed[sl][foot].all():
            return False
        others = [c for c in range(len(LESION_IDS)) if c != lesion]
        if self.masks[(slice(None),) + sl][others][:, foot].any():
            return False
        if avoid_vessels and self.vessel[sl][foot].any():
            return False
        colour = np.asarray(colour, np.float32)
        _composite(self.f.image, sl, alpha, np.clip(colour, 0.0, 1.0))
        self.masks[lesion][sl] |= label
        return True


def _vessel_dots(p: _Painter) -> None:
    """Unlabelled dark dots sitting on vessels (beading, a vessel seen end-on): the model
    must learn that a dark dot continuous with a vessel is not a microaneurysm."""
    rng = p.rng
    candidates = np.argwhere(p.vessel & p.allowed)
    # the dark foveal centre also passes the vessel test; a dot there would look like an MA
    candidates = candidates[
        np.hypot(candidates[:, 1] - p.f.fovea[0], candidates[:, 0] - p.f.fovea[1]) > 0.7 * p.f.disc_radius
    ]
    if len(candidates) == 0:
        return
    for y, x in candidates[rng.integers(0, len(candidates), rng.integers(0, 7))]:
        r = max(0.75, rng.uniform(1.0, 2.5) * p.s)
        alpha, y0, x0 = _shape_alpha(rng, x, y, r, r, 0.0, 0.8)
        h, w = alpha.shape
        if y0 < 0 or x0 < 0 or y0 + h > p.size or x0 + w > p.size:
            continue
        colour = p.f.image[y, x] * rng.uniform(0.7, 0.9)
        _composite(p.f.image, (slice(y0, y0 + h), slice(x0, x0 + w)), alpha * rng.uniform(0.7, 1.0), colour)


def _ex_spot(p: _Painter, x: float, y: float, diameter: float, tone: np.ndarray, strength: float) -> bool:
    rng = p.rng
    a = max(0.75, diameter / 2)
    rough = rng.uniform(0.1, 0.35) if diameter > 6 * p.s else rng.uniform(0.0, 0.1)
    alpha, y0, x0 = _shape_alpha(
        rng, x, y, a, a * rng.uniform(0.6, 1.0), rng.uniform(0, np.pi), rng.uniform(0.5, 0.9), rough, 7
    )
    alpha *= rng.uniform(0.85, 1.0)
    bg = p.background(x, y)
    colour = bg + (tone - bg) * np.clip(strength + rng.normal(0, 0.06), 0.3, 1.0)
    # waxy, slightly uneven surface rather than a flat fill
    shade = 1.0 + 0.06 * _smooth_noise(rng, 4, *alpha.shape)
    return p.place(0, alpha, y0, x0, colour * shade[..., None])


def _draw_exudates(p: _Painter, groups: int) -> tuple[int, list]:
    """Hard exudates: sharp yellow-white spots in clusters, partial rings and singles,
    mostly at the posterior pole. Returns (spots drawn, centres of the rings)."""
    rng, s, drawn, ring_centres = p.rng, p.s, 0, []
    weight = 0.08 + p.posterior(0.9)
    for centre in p.pick(weight, groups):
        tone = np.array([1.0, rng.uniform(0.85, 0.97), rng.uniform(0.3, 0.6)]) * rng.uniform(0.95, 1.08)
        strength = rng.uniform(0.5, 0.95)
        kind = rng.choice(["cluster", "ring", "singles"], p=[0.5, 0.2, 0.3])
        if kind == "ring":  # circinate: a partial ring around a leaking centre
            ring_r = rng.uniform(25, 120) * s
            span = rng.uniform(0.5, 1.0) * 2 * np.pi
            n = max(3, int(ring_r * span / (rng.uniform(6, 14) * s)))
            phis = rng.uniform(0, 2 * np.pi) + np.sort(rng.uniform(0, span, n))
            radii = ring_r * (1 + rng.normal(0, 0.08, n))
            pts = centre + np.stack([np.cos(phis), np.sin(phis)], 1) * radii[:, None]
            sizes = [_log_uniform(rng, 2, 14) * s for _ in range(n)]
            ring_centres.append(centre)
        elif kind == "cluster":
            n = int(rng.integers(3, 26))
            pts = centre + rng.normal(0, rng.uniform(8, 50) * s, (n, 2))
            sizes = [_log_uniform(rng, 2, 25) * s for _ in range(n)]
            if rng.random() < 0.3:
                sizes[0] = rng.uniform(20, 40) * s  # a larger plaque
        else:
            n = int(rng.integers(1, 8))
            pts = p.pick(weight, n)
            sizes = [_log_uniform(rng, 2, 15) * s for _ in range(n)]
        for (x, y), d in zip(pts, sizes):
            drawn += _ex_spot(p, x, y, d, tone, strength)
    return drawn, ring_centres


def _draw_haemorrhages(p: _Painter, n: int) -> int:
    """Dark red dots, irregular blots, and flames along the nerve fibres (radial from disc)."""
    rng, s, drawn = p.rng, p.s, 0
    weight = 0.3 + p.posterior(1.2)
    flame_weight = np.exp(-p.dist_disc / (1.5 * p.disc_fovea)) * (0.2 + p.arcades)
    for _ in range(n):
        kind = rng.choice(["dot", "blot", "flame"], p=[0.35, 0.4, 0.25])
        for _attempt in range(6):
            x, y = p.pick(flame_weight if kind == "flame" else weight)[0]
            if kind == "dot":
                a = max(1.0, rng.uniform(5, 12) * s / 2)
                b, angle, edge, rough, taper = a * rng.uniform(0.85, 1), 0.0, 0.9, 0.05, 0.0
            elif kind == "blot":
                a = max(1.5, _log_uniform(rng, 10, 80) * s / 2)
                b, angle = a * rng.uniform(0.65, 1.0), rng.uniform(0, np.pi)
                edge, rough, taper = rng.uniform(1.0, 2.5), rng.uniform(0.1, 0.25), 0.0
            else:
                a = max(2.0, _log_uniform(rng, 15, 80) * s / 2)
                b = max(1.0, a * rng.uniform(0.2, 0.4))
                angle = math.atan2(y - p.f.disc[1], x - p.f.disc[0]) + rng.normal(0, 0.15)
                edge, rough, taper = rng.uniform(1.2, 2.5), 0.1, rng.uniform(-0.7, 0.7)
            feather = rng.uniform(0.05, 0.15) if kind == "flame" else 0.0
            alpha, y0, x0 = _shape_alpha(
                rng, x, y, a, b, angle, edge, rough, 12 if kind == "flame" else 6, taper, feather
            )
            if kind != "dot":
                alpha *= np.clip(1.0 + 0.12 * _smooth_noise(rng, 5, *alpha.shape), 0, 1.2)
            alpha = np.clip(alpha * rng.uniform(0.8, 1.0), 0, 1)
            bg = p.background(x, y)
            colour = bg * np.array([rng.uniform(0.55, 0.85), rng.uniform(0.25, 0.5), rng.uniform(0.3, 0.55)])
            # clotted blood is mottled, not a flat fill
            mottle = 1.0 + 0.1 * _smooth_noise(rng, 6, *alpha.shape)
            if p.place(1, alpha, y0, x0, colour * mottle[..., None]):
                drawn += 1
                break
    return drawn


def _draw_microaneurysms(p: _Painter, n: int, centres: Sequence[np.ndarray] = ()) -> int:
    """Tiny, low-contrast dark red dots near (not on) vessels, mostly at the posterior pole;
    the first ones at ``centres`` (the leaking centres of exudate rings) when given."""
    rng, s, drawn = p.rng, p.s, 0
    weight = (0.15 + p.posterior(1.0)) * (0.3 + p.near_vessel)
    for i in range(n):
        for attempt in range(6):
            if i < len(centres) and attempt == 0:
                x, y = centres[i]
            else:
                x, y = p.pick(weight)[0]
            r = max(0.75, rng.uniform(2, 6) * s / 2)
            alpha, y0, x0 = _shape_alpha(rng, x, y, r, r * rng.uniform(0.85, 1.0), 0.0, rng.uniform(0.6, 0.9), 0.03, 3)
            alpha *= rng.uniform(0.85, 1.0)
            colour = p.background(x, y) * np.array(
                [rng.uniform(0.7, 0.9), rng.uniform(0.45, 0.75), rng.uniform(0.55, 0.85)]
            )
            if p.place(2, alpha, y0, x0, colour, avoid_vessels=True):
                drawn += 1
                break
    return drawn


def _draw_soft_exudates(p: _Painter, n: int) -> int:
    """Cotton-wool spots: pale, fluffy, feather-edged patches near the vessel arcades."""
    rng, s, drawn = p.rng, p.s, 0
    weight = (0.05 + p.arcades) * p.posterior(1.4) * (1 - p.posterior(0.15))
    for _ in range(n):
        for _attempt in range(6):
            x, y = p.pick(weight)[0]
            d = _log_uniform(rng, 15, 80) * s
            a = d / 2
            angle = math.atan2(y - p.f.disc[1], x - p.f.disc[0]) + rng.normal(0, 0.4)
            edge = rng.uniform(0.12, 0.25) * d
            alpha, y0, x0 = _shape_alpha(
                rng, x, y, a, a / rng.uniform(1.0, 1.7), angle, edge, rng.uniform(0.15, 0.3), 8
            )
            fluff = 1.0 + 0.3 * _smooth_noise(rng, 5, *alpha.shape) + 0.15 * _smooth_noise(rng, 14, *alpha.shape)
            alpha = np.clip(alpha * fluff * rng.uniform(0.7, 0.95), 0.0, 1.0)
            bg = p.background(x, y)
            colour = bg + (np.array([0.97, 0.93, 0.85]) - bg) * rng.uniform(0.25, 0.55)
            if p.place(3, alpha, y0, x0, colour):
                drawn += 1
                break
    return drawn


def _draw_lesions(rng: np.random.Generator, f: _Fundus) -> tuple[np.ndarray, dict[str, int]]:
    painter = _Painter(f, rng)
    counts = dict.fromkeys(LESION_IDS, 0)
    _vessel_dots(painter)
    if rng.random() < P_NO_LESIONS:
        return painter.masks, counts
    severity = rng.uniform() ** 1.5
    present = {"EX": rng.random() < 0.6, "HE": rng.random() < 0.55, "MA": rng.random() < 0.8, "SE": rng.random() < 0.3}
    if not any(present.values()):
        present[rng.choice(["EX", "MA"])] = True
    # deepest first, so later (more superficial) lesions are rejected where they would
    # cover an earlier one's label
    if present["SE"]:
        counts["SE"] = _draw_soft_exudates(painter, 1 + rng.poisson(1.5 * severity))
    if present["HE"]:
        counts["HE"] = _draw_haemorrhages(painter, 1 + rng.poisson(12 * severity))
    ring_centres: list = []
    if present["EX"]:
        counts["EX"], ring_centres = _draw_exudates(painter, 1 + rng.poisson(0.5 + 2.5 * severity))
    if present["MA"]:
        counts["MA"] = _draw_microaneurysms(painter, 1 + rng.poisson(3 + 20 * severity), ring_centres)
    return painter.masks, counts


# ----------------------------------------------------------------------------- camera


def _camera(rng: np.random.Generator, img: np.ndarray, s: float) -> np.ndarray:
    """Optics and sensor effects shared by background and lesions; returns uint8 RGB."""
    if rng.random() < 0.75:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.9) * max(s, 0.3))
    sigma = rng.uniform(0.002, 0.012) * min(1.0, math.sqrt(s))  # smaller images average noise
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    img = img + np.float32(sigma) * (0.8 * noise[..., :1] + 0.6 * noise)  # mostly luminance
    out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.35:  # an earlier, harsher compression (camera or archive)
        q = int(rng.integers(55, 91))
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(out)


# ----------------------------------------------------------------------------- public API


def render_sample(rng_or_seed: np.random.Generator | int, size: int = REFERENCE_SIZE) -> Sample:
    """One synthetic fundus photo (``size`` x ``size``) with its masks and landmarks."""
    if size < 64:
        raise ValueError(f"size must be >= 64 pixels, got {size}")
    rng = _as_rng(rng_or_seed)
    if rng.random() < P_PHOTO_BACKGROUND:
        f = _photo_fundus(rng, size)
    else:
        f = _procedural_fundus(rng, size)
    _photometric(rng, f)
    masks, counts = _draw_lesions(rng, f)
    image = _camera(rng, f.image, size / REFERENCE_SIZE)
    return Sample(
        image=image,
        masks=masks,
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


def split_counts(n: int, splits: Mapping[str, float]) -> dict[str, int]:
    """Images per split: floor of each share, remainders to the largest fractions."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not splits or any(v < 0 for v in splits.values()):
        raise ValueError(f"splits need names with non-negative fractions, got {dict(splits)}")
    total = sum(splits.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {dict(splits)} (sum {total:g})")
    exact = {k: v * n for k, v in splits.items()}
    counts = {k: int(math.floor(v)) for k, v in exact.items()}
    order = sorted(splits, key=lambda k: exact[k] - counts[k], reverse=True)
    for k in order[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _encode(ext: str, array: np.ndarray, params: Sequence[int] = ()) -> bytes:
    ok, buf = cv2.imencode(ext, array, list(params))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {ext}")
    return buf.tobytes()


def _write_one(job: tuple[str, int, int, int, str]) -> tuple[str, dict[str, int], dict[str, Any]]:
    root, seed, index, size, split = job
    sample = render_sample(sample_rng(seed, index), size)
    stem = f"syn_s{seed}_{index:05d}"
    base = Path(root) / "lesion_segmentation" / split
    _write_atomic(
        base / "image" / f"{stem}.jpg",
        _encode(".jpg", sample.image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, sample.jpeg_quality]),
    )
    for c, lesion in enumerate(LESION_IDS):
        _write_atomic(base / "label" / lesion / f"{stem}.tif", _encode(".tif", sample.masks[c] * np.uint8(255)))
    landmarks = {
        "image": f"lesion_segmentation/{split}/image/{stem}.jpg",
        "disc_x": round(sample.disc_centre[0], 2),
        "disc_y": round(sample.disc_centre[1], 2),
        "disc_diameter": round(2 * sample.disc_radius, 2),
        "fovea_x": round(sample.fovea[0], 2),
        "fovea_y": round(sample.fovea[1], 2),
    }
    return split, {k: int(sample.masks[c].any()) for c, k in enumerate(LESION_IDS)}, landmarks


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already


def write_dataset(
    out: str | os.PathLike,
    n: int,
    seed: int,
    size: int = REFERENCE_SIZE,
    splits: Mapping[str, float] = DEFAULT_SPLITS,
    workers: int = 1,
) -> dict:
    """Writes ``n`` samples in the DDR layout under ``out``; returns what synthetic.json holds.

    Images 0 .. n-1 fill the splits in the order given (train first by default).
    """
    if size < 64:
        raise ValueError(f"size must be >= 64 pixels, got {size}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    unknown = sorted(set(splits) - set(DDR_SPLITS))
    if unknown:
        raise ValueError(f"unknown split name(s) {unknown}; DDR has {list(DDR_SPLITS)}")
    counts = split_counts(n, splits)
    root = Path(out)
    jobs = []
    index = 0
    for split, k in counts.items():
        for lesion_dir in ["image"] + [f"label/{x}" for x in LESION_IDS]:
            (root / "lesion_segmentation" / split / lesion_dir).mkdir(parents=True, exist_ok=True)
        for _ in range(k):
            jobs.append((str(root), seed, index, size, split))
            index += 1
    with_lesion = {split: dict.fromkeys(LESION_IDS, 0) for split in counts}
    bar = tqdm(total=n, desc="synthetic fundi", unit="img")
    if workers == 1:
        results = map(_write_one, jobs)
        pool = None
    else:
        # spawn, not fork: a forked child inherits OpenCV's thread pool mid-state and can hang.
        # An executor, not multiprocessing.Pool: a child that dies raises BrokenProcessPool
        # instead of being respawned forever.
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker)
        results = (f.result() for f in as_completed([pool.submit(_write_one, job) for job in jobs]))
    landmarks = []
    try:
        for split, present, where in results:
            for k, v in present.items():
                with_lesion[split][k] += v
            landmarks.append(where)
            bar.update(1)
    except BrokenProcessPool as exc:
        raise RuntimeError(f"a synthetic-data worker process died ({exc}); try --workers 1") from None
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    summary = {
        "generator": "training.synthetic",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "n": n,
        "size": size,
        "lesions": list(LESION_IDS),
        "splits": {k: float(v) for k, v in splits.items()},
        "counts": counts,
        "images_with_lesion": with_lesion,
        "stem_format": f"syn_s{seed}_{{index:05d}}",
    }
    written = {(split, f"syn_s{seed}_{index:05d}.jpg") for _, _, index, _, split in jobs}
    stale = [
        p for p in (root / "lesion_segmentation").glob("*/image/*") if (p.parent.parent.name, p.name) not in written
    ]
    if stale:
        print(
            f"warning: {len(stale)} image(s) under {root} are not part of this dataset "
            f"(e.g. {stale[0]}); a DDR reader will pick them up",
            file=sys.stderr,
        )
    # Where the generator drew each optic disc and fovea: the ground truth for landmark finding.
    landmarks.sort(key=lambda r: r["image"])
    columns = list(landmarks[0]) if landmarks else ["image"]
    text = ",".join(columns) + "\n" + "".join(",".join(str(r[c]) for c in columns) + "\n" for r in landmarks)
    _write_atomic(root / LANDMARKS_FILE, text.encode())
    _write_atomic(root / "synthetic.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def _parse_splits(text: str) -> dict[str, float]:
    splits = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            splits[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"bad split {part!r} in {text!r}; expected e.g. train=0.6,valid=0.15,test=0.25"
            ) from None
    return splits


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.synthetic", description="Write a synthetic fundus lesion dataset in the DDR layout."
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n", type=int, required=True, help="number of images")
    parser.add_argument("--seed", type=int, required=True, help="dataset seed (>= 0)")
    parser.add_argument(
        "--size", type=int, default=REFERENCE_SIZE, help="image width = height in pixels (lesion sizes scale with it)"
    )
    parser.add_argument(
        "--splits",
        type=_parse_splits,
        default=dict(DEFAULT_SPLITS),
        help="name=fraction,... (default train=0.6,valid=0.15,test=0.25)",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    args = parser.parse_args(argv)
    try:
        summary = write_dataset(args.out, args.n, args.seed, args.size, args.splits, args.workers)
    except ValueError as err:
        parser.error(str(err))
    print(json.dumps(summary["counts"]))


if __name__ == "__main__":
    main()
