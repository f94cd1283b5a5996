"""A second lesion generator, deliberately unlike ``training/synthetic/``, for checking that
a model trained on synthetic data learned lesions rather than one generator's artefacts.

Lesions are plain geometric shapes with textbook colours, drawn on the real CC0 normal-eye
photo (``skimage.data.retina()``, resized to 1024 px, flipped / rotated by multiples of 90
degrees, brightness varied): hard exudates as clusters of sharp yellow ellipses, haemorrhages
as dark red ellipses with a soft rim, microaneurysms as small dark red discs, soft exudates as
Gaussian-blurred whitish ellipses (label: blend weight >= 0.5). No shared code, shapes, noise,
placement rules or colour model with ``training/synthetic/``; the only common ground is the
background photo (which the training generator also uses, so the check isolates the lesions).

    python -m training.crosscheck --out data/crosscheck --n 40 --seed 7
    python -m training.prepare --synthetic data/crosscheck --out data/crosscheck.csv
    python -m training.evaluate --model weights --manifest data/crosscheck.csv --split test --out runs/crosscheck

Writes the DDR-like layout that ``training.prepare --synthetic`` reads:
``OUT/lesion_segmentation/test/image/<stem>.jpg`` and ``.../label/{EX,HE,MA,SE}/<stem>.tif``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from hydralanet.io.images import write_atomic

SIZE = 1024
LESIONS = ("EX", "HE", "MA", "SE")


def _background(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """(image float32 H x W x 3 in [0, 1], FOV bool, optic-disc centre (x, y))."""
    from skimage import data

    photo = cv2.resize(data.retina(), (SIZE, SIZE), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    photo = np.rot90(photo, int(rng.integers(0, 4)))
    if rng.random() < 0.5:
        photo = photo[:, ::-1]
    photo = np.ascontiguousarray(photo) * np.float32(rng.uniform(0.8, 1.15))
    fov = photo.max(axis=2) > 0.08
    glow = cv2.GaussianBlur(photo[..., 1], (0, 0), 20) * fov
    y, x = np.unravel_index(int(np.argmax(glow)), glow.shape)  # the disc is the brightest region
    return np.clip(photo, 0, 1), fov, (float(x), float(y))


def _ellipse(h: int, w: int, cx: float, cy: float, a: float, b: float, angle: float) -> np.ndarray:
    """Anti-aliased filled ellipse as float32 coverage in [0, 1] (h x w; drawn at 4x in a
    local patch)."""
    scale, r = 4, int(np.ceil(max(a, b))) + 2
    x0, y0 = int(np.floor(cx)) - r, int(np.floor(cy)) - r
    patch = np.zeros(((2 * r + 1) * scale, (2 * r + 1) * scale), np.uint8)
    centre = (round((cx - x0) * scale), round((cy - y0) * scale))
    cv2.ellipse(
        patch,
        centre,
        (max(1, round(a * scale)), max(1, round(b * scale))),
        float(np.degrees(angle)),
        0,
        360,
        255,
        -1,
        cv2.LINE_AA,
    )
    small = cv2.resize(patch, (2 * r + 1, 2 * r + 1), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    out = np.zeros((h, w), np.float32)
    top, bottom = max(0, y0), min(h, y0 + 2 * r + 1)
    left, right = max(0, x0), min(w, x0 + 2 * r + 1)
    if top < bottom and left < right:  # else wholly off the canvas
        out[top:bottom, left:right] = small[top - y0 : bottom - y0, left - x0 : right - x0]
    return out


class _Canvas:
    def __init__(self, image: np.ndarray, fov: np.ndarray, disc: tuple[float, float]) -> None:
        self.image, self.masks = image, np.zeros((4, SIZE, SIZE), bool)
        yy, xx = np.mgrid[:SIZE, :SIZE]
        self.allowed = cv2.erode(fov.astype(np.uint8), np.ones((41, 41), np.uint8)).astype(bool)
        self.allowed &= (xx - disc[0]) ** 2 + (yy - disc[1]) ** 2 > 120**2

    def draw(self, c: int, alpha: np.ndarray, colour: np.ndarray, label: np.ndarray) -> bool:
        taken = self.masks[[i for i in range(4) if i != c]].any(axis=0)
        if not label.any() or not self.allowed[alpha > 0.02].all() or (taken & (alpha > 0.02)).any():
            return False
        self.image[:] = self.image * (1 - alpha[..., None]) + colour * alpha[..., None]
        self.masks[c] |= label
        return True

    def point(self, rng: np.random.Generator) -> tuple[float, float]:
        ys, xs = np.nonzero(self.allowed)
        i = int(rng.integers(0, len(ys)))
        return float(xs[i]), float(ys[i])


def render(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 1024 x 1024 x 3 RGB, masks bool 4 x 1024 x 1024 in the order EX, HE, MA, SE)."""
    rng = np.random.default_rng([seed, 2718])
    image, fov, disc = _background(rng)
    canvas = _Canvas(image, fov, disc)
    local = lambda x, y: image[int(y), int(x)]  # noqa: E731

    for _ in range(int(rng.integers(0, 4))):  # soft exudates: blurred pale ellipses
        x, y = canvas.point(rng)
        a = rng.uniform(10, 32)
        shape = _ellipse(SIZE, SIZE, x, y, a, a * rng.uniform(0.5, 0.9), rng.uniform(0, np.pi))
        alpha = cv2.GaussianBlur(shape, (0, 0), a / 3) * rng.uniform(0.55, 0.8)
        alpha /= max(float(alpha.max()), 1e-6) / rng.uniform(0.6, 0.8)
        canvas.draw(3, alpha, np.array([0.93, 0.9, 0.82], np.float32), alpha >= 0.5 * alpha.max())
    for _ in range(int(rng.integers(0, 8))):  # haemorrhages: dark red ellipses, soft rim
        x, y = canvas.point(rng)
        a = rng.uniform(5, 22)
        shape = _ellipse(SIZE, SIZE, x, y, a, a * rng.uniform(0.4, 1.0), rng.uniform(0, np.pi))
        alpha = cv2.GaussianBlur(shape, (0, 0), 1.2) * rng.uniform(0.75, 0.95)
        canvas.draw(1, alpha, local(x, y) * np.array([0.55, 0.2, 0.2], np.float32), alpha >= 0.5 * alpha.max())
    for _ in range(int(rng.integers(0, 4))):  # hard exudates: clusters of sharp yellow ellipses
        cx, cy = canvas.point(rng)
        for _ in range(int(rng.integers(3, 15))):
            x, y = cx + rng.normal(0, 30), cy + rng.normal(0, 30)
            a = rng.uniform(2, 8)
            shape = _ellipse(SIZE, SIZE, x, y, a, a * rng.uniform(0.6, 1.0), rng.uniform(0, np.pi))
            alpha = shape * rng.uniform(0.7, 0.95)
            canvas.draw(0, alpha, np.array([0.98, 0.88, 0.35], np.float32), shape >= 0.5)
    for _ in range(int(rng.integers(0, 12))):  # microaneurysms: small dark red discs
        x, y = canvas.point(rng)
        r = rng.uniform(1.2, 3.0)
        shape = _ellipse(SIZE, SIZE, x, y, r, r, 0.0)
        alpha = shape * rng.uniform(0.6, 0.85)
        canvas.draw(2, alpha, local(x, y) * np.array([0.6, 0.3, 0.35], np.float32), shape >= 0.5)
    image = cv2.GaussianBlur(canvas.image, (0, 0), 0.6)
    return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8), canvas.masks


def write(out: str | os.PathLike, n: int, seed: int) -> None:
    base = Path(out) / "lesion_segmentation" / "test"
    for i in tqdm(range(n), desc="cross-check photos", unit="img"):
        image, masks = render(seed * 100_000 + i)
        stem = f"xc_s{seed}_{i:05d}"
        write_atomic(
            base / "image" / f"{stem}.jpg",
            cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes(),
        )
        for c, name in enumerate(LESIONS):
            write_atomic(
                base / "label" / name / f"{stem}.tif",
                cv2.imencode(".tif", masks[c].astype(np.uint8) * 255)[1].tobytes(),
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be >= 1, got {args.n}")
    write(args.out, args.n, args.seed)
    print(f"wrote {args.n} photos to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
