"""DME risk grade with hard exudates planted near the fovea, far from it, or absent.

    python -m training.dme_check --manifest M.csv [--split test] [--n 20] [--model weights]

For photos of a manifest whose truth has no hard exudates and knows the fovea and disc (the
synthetic generator's), three copies: as they are (true grade 0), with three hard exudates
(small yellow-white spots) planted within 0.6 disc diameters (DD) of the fovea (grade 2), and
with three planted more than 2.2 DD from it (grade 1). Each copy is segmented by the model and
read (landmarks found by the reading layer, not given); prints the confusion and the accuracy.
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np

from hydralanet import load_model, predict, read_image
from hydralanet.reading import findings, read_photo

from .data import read_mask, split_rows
from .prepare import read_manifest

EXUDATE_COLOUR = (235, 215, 110)  # RGB: yellow-white, as hard exudates look


def plant(image: np.ndarray, points: list[tuple[float, float]], size: float) -> np.ndarray:
    """Small sharp-edged yellow-white ellipses (``size`` px across) at ``points``."""
    out = image.copy()
    for x, y in points:
        axes = (max(2, round(size / 2)), max(2, round(size / 3)))
        cv2.ellipse(out, (round(x), round(y)), axes, 0, 0, 360, EXUDATE_COLOUR, -1, cv2.LINE_AA)
    return out


def spots(rng: np.random.Generator, fovea: np.ndarray, dd: float, fov: np.ndarray, near: bool, k: int = 3):
    """``k`` points inside the FOV within 0.6 DD of the fovea (``near``) or 2.2-4 DD from it."""
    points = []
    for _ in range(500):
        radius = rng.uniform(0.15, 0.6) if near else rng.uniform(2.2, 4.0)
        angle = rng.uniform(0, 2 * np.pi)
        x, y = fovea + dd * radius * np.array([np.cos(angle), np.sin(angle)])
        if 0 <= round(y) < fov.shape[0] and 0 <= round(x) < fov.shape[1] and fov[round(y), round(x)]:
            points.append((x, y))
            if len(points) == k:
                return points
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.dme_check", description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, default=20, help="photos to use (each read three times)")
    parser.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    loaded = load_model(args.model, device="cpu")
    rng = np.random.default_rng(args.seed)
    rows = [
        r
        for r in split_rows(read_manifest(args.manifest), args.split)
        if r.get("fovea_x") is not None and r.get("disc_diameter") and not (r["EX"] and read_mask(r["EX"]).any())
    ]
    matrix = np.zeros((3, 4), dtype=int)
    used = 0
    for row in rows:
        if used == args.n:
            break
        image = read_image(row["image"])
        fovea, dd = np.array([row["fovea_x"], row["fovea_y"]]), float(row["disc_diameter"])
        fov = predict(loaded, image).fov
        near, far = spots(rng, fovea, dd, fov, True), spots(rng, fovea, dd, fov, False)
        if near is None or far is None:
            continue
        used += 1
        size = 0.12 * dd  # hard exudates: a few to tens of pixels at 1024 px
        for truth, picture in ((0, image), (2, plant(image, near, size)), (1, plant(image, far, size))):
            prediction = predict(loaded, picture)
            photo = read_photo(picture, prediction.fov, probabilities=prediction.probabilities)
            grade = findings(photo, prediction.masks(loaded.config.thresholds))["dme_risk"]
            matrix[truth, 3 if grade is None else grade] += 1
        print(f"{used}/{args.n}", file=sys.stderr, end="\r")
    total = int(matrix.sum())
    print(f"{used} photos x 3 copies; DME grade right in {100 * np.trace(matrix[:, :3]) / max(total, 1):.1f} %")
    print("| true \\ read | 0 | 1 | 2 | no grade |\n|---|---:|---:|---:|---:|")
    for grade, line in enumerate(matrix):
        print(f"| {grade} | " + " | ".join(str(v) for v in line) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
