"""Backgrounds: a procedural fundus (field of view, choroid texture, vignetting, macula,
optic disc, vessel tree) or the CC0 photo ``skimage.data.retina()`` re-framed.

The optic disc, the foveal reflex and the vessels are the unlabelled look-alikes every image
carries: bright like exudates, dark and thin like haemorrhages.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from .canvas import REFERENCE_SIZE, Fundus, composite, patch_grid, pixel_grid, shape_alpha, smooth_noise
from .vessels import draw_vessels

# Landmarks of skimage.data.retina() (1411 x 1411), measured once by hand on the image:
# FOV = centroid / equivalent radius of the thresholded field; disc radius includes the
# temporal pigment crescent; fovea = darkest point of the blurred green channel.
_PHOTO_FOV_CENTRE = np.array([705.4, 701.8])
_PHOTO_FOV_RADIUS = 698.0
_PHOTO_DISC = np.array([250.0, 660.0])
_PHOTO_DISC_RADIUS = 90.0
_PHOTO_FOVEA = np.array([699.0, 698.0])


def procedural_fundus(rng: np.random.Generator, size: int) -> Fundus:
    """Black surround, circular (sometimes top/bottom-cropped) field, choroid texture,
    vignetting, macula with fovea, optic disc with cup, vessel tree."""
    s = size / REFERENCE_SIZE
    ys, xs = pixel_grid(size)
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
        0.08 * smooth_noise(rng, 4, size)
        + 0.035 * smooth_noise(rng, 12, size)
        + 0.012 * smooth_noise(rng, size // 6, size)
    )
    chroma = 0.025 * smooth_noise(rng, 5, size, channels=3)
    # choroidal pattern: a network of lighter vessels with darker pigmented gaps,
    # more visible towards the periphery and in lightly pigmented eyes
    band = smooth_noise(rng, int(rng.uniform(18, 30)), size)
    ridges = np.exp(-((band / 0.45) ** 2))
    tigroid = rng.uniform(0.02, 0.14) * (1.2 - pig) * (0.25 + 0.75 * (r / np.float32(radius)) ** 2)
    tex = lum[..., None] + chroma + (tigroid * (ridges - 0.45))[..., None] * np.array([0.7, 1.0, 1.0], np.float32)
    img = base * (1.0 + tex)
    vignette = rng.uniform(0.15, 0.5) * np.clip(r / np.float32(radius), 0, 1) ** rng.uniform(2, 4)
    img *= (1.0 - vignette)[..., None]

    f = Fundus(
        img.astype(np.float32), fov.astype(np.float32), centre, float(radius), disc, float(disc_r), fovea, "procedural"
    )
    _draw_macula(rng, f, s)
    _draw_disc(rng, f, side)
    draw_vessels(rng, f)
    f.image *= f.fov[..., None]
    return f


def _draw_macula(rng: np.random.Generator, f: Fundus, s: float) -> None:
    size = f.image.shape[0]
    sigma = f.disc_radius * rng.uniform(0.9, 1.4)
    sl, dx, dy = patch_grid(f.fovea[0], f.fovea[1], 4 * sigma, size)
    d2 = dx * dx + dy * dy
    dark = rng.uniform(0.08, 0.25) * np.exp(-d2 / (2 * sigma**2))
    dark += rng.uniform(0.04, 0.14) * np.exp(-d2 / (2 * (0.25 * f.disc_radius) ** 2))
    # macular pigment absorbs blue/green more than red
    f.image[sl] *= 1.0 - dark[..., None] * np.array([0.8, 1.0, 1.2], np.float32)
    if rng.random() < 0.5:  # foveal light reflex: a tiny unlabelled bright dot
        r = rng.uniform(1.0, 2.5) * max(s, 0.4)
        alpha, y0, x0 = shape_alpha(rng, f.fovea[0], f.fovea[1], r, r, 0.0, 0.8)
        h, w = alpha.shape
        composite(f.image, (slice(y0, y0 + h), slice(x0, x0 + w)), alpha * rng.uniform(0.2, 0.45), (1.0, 0.95, 0.85))


def _draw_disc(rng: np.random.Generator, f: Fundus, side: int) -> None:
    """Bright yellowish disc (vertical oval) with a brighter cup offset towards the fovea."""
    size = f.image.shape[0]
    rd = f.disc_radius
    sl, dx, dy = patch_grid(f.disc[0], f.disc[1], 1.6 * rd, size)
    aspect = rng.uniform(1.0, 1.12)
    rho = np.sqrt(dx * dx + (dy / aspect) ** 2) / rd
    patch = f.image[sl]
    local = patch.reshape(-1, 3).mean(axis=0)
    rim_col = local + (np.array([1.0, rng.uniform(0.65, 0.8), rng.uniform(0.35, 0.5)]) - local) * rng.uniform(0.6, 0.85)
    edge = rng.uniform(0.04, 0.1)
    disc_a = np.clip(0.5 + (1.0 - rho) / edge, 0.0, 1.0)
    disc_a *= 1.0 + 0.05 * smooth_noise(rng, 6, *disc_a.shape)
    composite(f.image, sl, np.clip(disc_a, 0, 1), rim_col)
    if rng.random() < 0.35:  # peripapillary crescent on the temporal side
        phi = np.arctan2(dy, dx) - (0.0 if side > 0 else np.pi)
        phi = (phi + np.pi) % (2 * np.pi) - np.pi
        outer = rng.uniform(1.12, 1.3)
        ring = np.clip((rho - 0.95) / 0.05, 0, 1) * np.clip((outer - rho) / 0.05, 0, 1)
        ring *= np.exp(-((phi / rng.uniform(0.5, 0.9)) ** 2))
        if rng.random() < 0.6:
            composite(f.image, sl, ring * rng.uniform(0.3, 0.7), (0.95, 0.8, 0.62))
        else:
            f.image[sl] *= 1.0 - (ring * rng.uniform(0.3, 0.5))[..., None]
    cup_c = f.disc + np.array([side * rng.uniform(0.0, 0.25) * rd, rng.normal(0, 0.05) * rd])
    cup_r = rng.uniform(0.3, 0.55) * rd
    crho = np.sqrt((dx + np.float32(f.disc[0] - cup_c[0])) ** 2 + (dy + np.float32(f.disc[1] - cup_c[1])) ** 2) / cup_r
    cup_a = np.clip(0.5 + (1.0 - crho) / rng.uniform(0.3, 0.7), 0.0, 1.0) * rng.uniform(0.5, 0.85)
    composite(f.image, sl, cup_a, (1.0, rng.uniform(0.86, 0.95), rng.uniform(0.68, 0.85)))


@functools.lru_cache(maxsize=1)
def _photo_reference() -> tuple[np.ndarray, np.ndarray]:
    """skimage.data.retina() as float32 RGB and its FOV coverage (loaded once per process)."""
    from skimage import data  # heavy import; only the photo background needs it

    rgb = data.retina()
    fov = (cv2.GaussianBlur(rgb.max(axis=2), (0, 0), 2) > 20).astype(np.float32)
    return rgb.astype(np.float32) / 255.0, fov


def photo_fundus(rng: np.random.Generator, size: int) -> Fundus:
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
    return Fundus(
        img,
        fov,
        to_out(_PHOTO_FOV_CENTRE),
        _PHOTO_FOV_RADIUS * scale,
        to_out(_PHOTO_DISC),
        _PHOTO_DISC_RADIUS * scale,
        to_out(_PHOTO_FOVEA),
        "photo",
    )
