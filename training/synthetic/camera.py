"""What the eye and the camera do to the whole picture: colour and illumination before the
lesions are drawn (so lesion colours, taken from the local background, follow them), then
blur, sensor noise and an occasional harsh JPEG shared by background and lesions."""

from __future__ import annotations

import math

import cv2
import numpy as np

from .canvas import Fundus, pixel_grid, smooth_noise


def photometric(rng: np.random.Generator, f: Fundus) -> None:
    """Camera/eye colour and illumination variation, applied before lesions are drawn so
    that lesion colours (derived from the local background) follow it."""
    size = f.image.shape[0]
    img = f.image * rng.uniform([0.9, 0.8, 0.7], [1.1, 1.2, 1.35]).astype(np.float32)
    img = np.clip(img, 0.0, None) ** np.float32(math.exp(rng.normal(0.0, 0.18)))
    lum = img @ np.array([0.299, 0.587, 0.114], np.float32)
    img = lum[..., None] + np.float32(rng.uniform(0.75, 1.25)) * (img - lum[..., None])
    ys, xs = pixel_grid(size)
    r = np.sqrt((xs - np.float32(f.centre[0])) ** 2 + (ys - np.float32(f.centre[1])) ** 2)
    gain = 1.0 + rng.uniform(0.04, 0.22) * smooth_noise(rng, 3, size)
    gain *= 1.0 - rng.uniform(0.0, 0.35) * np.clip(r / np.float32(f.radius), 0, 1) ** 3
    img *= (gain * np.float32(rng.uniform(0.8, 1.15)))[..., None]
    f.image = np.clip(img, 0.0, 1.0).astype(np.float32) * f.fov[..., None]


def camera_effects(rng: np.random.Generator, img: np.ndarray, s: float) -> np.ndarray:
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
