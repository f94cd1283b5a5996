"""Landmark accuracy on the real photo and variants of it (docs/reading.md).

    python -m training.landmark_check

``skimage.data.retina()`` (a left eye) with its disc and fovea marked by hand, then flipped,
rotated, scaled, cropped like a 3:2 camera, darkened, brightened and JPEG-compressed; the
marks move with each change. Prints the disc and fovea errors in pixels and disc diameters.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import cv2
import numpy as np

# Marked by hand on skimage.data.retina() (1411 x 1411): the centre of the optic disc (bright
# rim and cup inside the peripapillary crescent), about 140 px across, and the centre of the
# dark macular spot.
RETINA_DISC = (240.0, 660.0)
RETINA_DISC_DIAMETER = 140.0
RETINA_FOVEA = (700.0, 703.0)


def _affine(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.warpAffine(
        image,
        matrix,
        size,
        flags=cv2.INTER_AREA if matrix[0, 0] < 1 else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def _moved(matrix: np.ndarray, point: tuple[float, float]) -> tuple[float, float]:
    x, y = point
    return (
        float(matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2]),
        float(matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2]),
    )


def variants(image: np.ndarray) -> Iterator[tuple[str, np.ndarray, tuple, tuple, float, str]]:
    """``(name, image, disc, fovea, disc diameter, eye)`` for the photo and its variants."""
    h, w = image.shape[:2]
    disc, fovea, dd = RETINA_DISC, RETINA_FOVEA, RETINA_DISC_DIAMETER
    yield "original", image, disc, fovea, dd, "left"
    yield (
        "flipped left-right",
        image[:, ::-1].copy(),
        (w - 1 - disc[0], disc[1]),
        (w - 1 - fovea[0], fovea[1]),
        dd,
        "right",
    )
    for angle in (-20, 20):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        yield f"rotated {angle:+d} deg", _affine(image, m, (w, h)), _moved(m, disc), _moved(m, fovea), dd, "left"
    for factor in (0.5, 2.0):
        m = np.array([[factor, 0, 0], [0, factor, 0]], dtype=np.float64)
        size = (round(w * factor), round(h * factor))
        yield f"scaled {factor}x", _affine(image, m, size), _moved(m, disc), _moved(m, fovea), dd * factor, "left"
    # A 3:2 camera frame: the circle cut at top and bottom (IDRiD-like), black at the sides.
    band = round(w / 1.5)
    top = (h - band) // 2
    frame = np.zeros((band, round(band * 1.5), 3), np.uint8)
    left = (frame.shape[1] - w) // 2
    frame[:, left : left + w] = image[top : top + band]
    shift = (left, -top)
    yield (
        "cropped 3:2",
        frame,
        (disc[0] + shift[0], disc[1] + shift[1]),
        (fovea[0] + shift[0], fovea[1] + shift[1]),
        dd,
        "left",
    )
    for name, gamma in (("darker (gamma 1.8)", 1.8), ("brighter (gamma 0.6)", 0.6)):
        lut = np.clip(255 * (np.arange(256) / 255) ** gamma, 0, 255).astype(np.uint8)
        yield name, lut[image], disc, fovea, dd, "left"
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 50])
    yield (
        "JPEG quality 50",
        cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB),
        disc,
        fovea,
        dd,
        "left",
    )


def measure(image: np.ndarray) -> list[dict]:
    """One row per variant: errors in pixels and in disc diameters, the eye, the confidences."""
    from hydralanet.reading.landmarks import find_landmarks

    rows = []
    for name, picture, disc, fovea, dd, eye in variants(image):
        found = find_landmarks(picture)
        row = {"variant": name, "eye": found.eye, "eye_expected": eye}
        for key, truth, got in (("disc", disc, found.disc), ("fovea", fovea, found.fovea)):
            error = float(np.hypot(got.x - truth[0], got.y - truth[1])) if got else float("nan")
            row[f"{key}_error_px"], row[f"{key}_error_dd"] = error, error / dd
            row[f"{key}_confidence"] = got.confidence if got else 0.0
        row["disc_diameter_ratio"] = found.disc.diameter_px / dd if found.disc else float("nan")
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m training.landmark_check", description=__doc__.split("\n")[0]).parse_args(
        argv
    )
    from skimage import data

    print("| variant | disc error (px / DD) | fovea error (px / DD) | disc diameter found / true | eye |")
    print("|---|---:|---:|---:|---|")
    for r in measure(data.retina()):
        print(
            f"| {r['variant']} | {r['disc_error_px']:.0f} / {r['disc_error_dd']:.2f} | {r['fovea_error_px']:.0f} / "
            f"{r['fovea_error_dd']:.2f} | {r['disc_diameter_ratio']:.2f} | {r['eye']} ({'correct' if r['eye'] == r['eye_expected'] else 'WRONG'}) |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
