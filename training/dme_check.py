"""DME risk grade with hard exudates planted near the fovea, far from it, or absent.

    python -m training.dme_check --manifest M.csv [--split test] [--n 20] [--model weights]

For photos of a manifest whose truth has no hard exudates and knows the fovea and disc (the
synthetic generator's), three copies: as they are (true grade 0), with three hard exudates
(small yellow-white spots) planted within 0.6 disc diameters (DD) of the fovea (grade 2), and
with three planted more than 2.2 DD from it (grade 1). Each copy is segmented by the model and
read (landmarks found by the reading layer, not given); prints the confusion and the accuracy,
and where the model's false hard exudates lie (on a drawn soft exudate, on the rim of the field
of view, at the foveal centre, elsewhere): what a better model has to stop marking.
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np

from hydralanet import load_model, predict, read_image
from hydralanet.reading.photo import findings, read_photo

from .data import read_mask, split_rows
from .mine import false_components
from .prepare import read_manifest

EXUDATE_COLOUR = (235, 215, 110)  # RGB: yellow-white, as hard exudates look


def plant(image: np.ndarray, points: list[tuple[float, float]], size: float) -> np.ndarray:
    """Small sharp-edged yellow-white ellipses (``size`` px across) at ``points``."""
    out = image.copy()
    for x, y in points:
        cv2.ellipse(out, (round(x), round(y)), _axes(size), 0, 0, 360, EXUDATE_COLOUR, -1, cv2.LINE_AA)
    return out


def _axes(size: float) -> tuple[int, int]:
    return max(2, round(size / 2)), max(2, round(size / 3))


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


def planted_mask(shape: tuple[int, int], points: list[tuple[float, float]] | None, size: float) -> np.ndarray:
    """Where :func:`plant` drew (bool ``H x W``; all False for no points)."""
    mask = np.zeros(shape, np.uint8)
    for x, y in points or []:
        cv2.ellipse(mask, (round(x), round(y)), _axes(size), 0, 0, 360, 1, -1, cv2.LINE_8)
    return cv2.dilate(mask, np.ones((3, 3), np.uint8)) > 0  # the anti-aliased rim too


CAUSES = ("on a drawn soft exudate", "on the rim of the field of view", "at the foveal centre", "elsewhere")


def false_exudates(ex: np.ndarray, real: np.ndarray, soft: np.ndarray | None, fov: np.ndarray, fovea, dd: float):
    """Each hard-exudate component of ``ex`` that touches no real (``real``: planted or drawn)
    exudate, by where it lies (:data:`CAUSES`, first that applies): on a soft exudate of the
    truth, within 0.05 DD of the field of view's edge, within 0.15 DD of the true fovea."""
    labels, false = false_components(ex, real, grow=0)
    rim = cv2.distanceTransform(fov.view(np.uint8), cv2.DIST_L2, 5) <= 0.05 * dd
    causes = []
    for k, centre, _ in sorted(false):  # in label order
        where = labels == k
        if soft is not None and soft[where].any():
            causes.append(CAUSES[0])
        elif rim[where].any():
            causes.append(CAUSES[1])
        elif np.hypot(*(np.asarray(centre) - fovea)) <= 0.15 * dd:
            causes.append(CAUSES[2])
        else:
            causes.append(CAUSES[3])
    return causes


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
    reads_with = np.zeros((3, len(CAUSES)), dtype=int)  # reads of each true grade with such a false exudate
    components = np.zeros(len(CAUSES), dtype=int)
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
        soft = read_mask(row["SE"]) if row["SE"] else None
        for truth, points in ((0, None), (2, near), (1, far)):
            picture = image if points is None else plant(image, points, size)
            prediction = predict(loaded, picture)
            photo = read_photo(picture, prediction.fov, probabilities=prediction.probabilities)
            masks = prediction.masks(loaded.config.thresholds)
            grade = findings(photo, masks)["dme_risk"]
            matrix[truth, 3 if grade is None else grade] += 1
            real = planted_mask(fov.shape, points, size)
            causes = false_exudates(masks[0], real, soft, prediction.fov, fovea, dd)
            for k, cause in enumerate(CAUSES):
                components[k] += causes.count(cause)
                reads_with[truth, k] += cause in causes
        print(f"{used}/{args.n}", file=sys.stderr, end="\r")
    total = int(matrix.sum())
    print(f"{used} photos x 3 copies; DME grade right in {100 * np.trace(matrix[:, :3]) / max(total, 1):.1f} %")
    print("| true \\ read | 0 | 1 | 2 | no grade |\n|---|---:|---:|---:|---:|")
    for grade, line in enumerate(matrix):
        print(f"| {grade} | " + " | ".join(str(v) for v in line) + " |")
    print("\nFalse hard exudates (components touching no drawn or planted exudate), by where they lie:")
    print("| where | components | reads with one: true 0 / 1 / 2 |\n|---|---:|---|")
    for k, cause in enumerate(CAUSES):
        print(f"| {cause} | {components[k]} | {' / '.join(str(v) for v in reads_with[:, k])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
