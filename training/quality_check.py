"""Image-quality measures and verdicts on the real photo degraded on purpose (README, "Image quality").

    python -m training.quality_check

``skimage.data.retina()`` and copies of it blurred, darkened, over-exposed, with noise, heavy
JPEG compression, a flat low-contrast wash, uneven light and crops; each with the verdict it
is expected to get. The limits in ``hydralanet/quality.py`` were set between these values.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import cv2
import numpy as np


def _gamma(image: np.ndarray, gamma: float, gain: float = 1.0) -> np.ndarray:
    lut = np.clip(255 * gain * (np.arange(256) / 255) ** gamma, 0, 255).astype(np.uint8)
    return lut[image]


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _noise(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


def _uneven(image: np.ndarray, depth: float) -> np.ndarray:
    h, w = image.shape[:2]
    ramp = np.linspace(1.0, 1.0 - depth, w, dtype=np.float32)[None, :, None]
    return np.clip(image * ramp, 0, 255).astype(np.uint8)


def degraded(image: np.ndarray) -> Iterator[tuple[str, np.ndarray, str]]:
    """``(name, image, expected verdict)`` for the clean photo and its degraded copies."""
    h, w = image.shape[:2]
    yield "clean", image, "good"
    yield "JPEG quality 50", _jpeg(image, 50), "good"
    band = round(w / 1.5)  # a 3:2 camera frame: the disc cut at top and bottom, as IDRiD's photos
    frame = np.zeros((band, round(band * 1.5), 3), np.uint8)
    frame[:, (frame.shape[1] - w) // 2 : (frame.shape[1] - w) // 2 + w] = image[
        (h - band) // 2 : (h - band) // 2 + band
    ]
    yield "3:2 camera frame", frame, "good"
    yield "blur sigma 2 px", cv2.GaussianBlur(image, (0, 0), 2), "usable"
    yield "blur sigma 5 px", cv2.GaussianBlur(image, (0, 0), 5), "ungradable"
    yield "dark (gamma 2.2, gain 0.6)", _gamma(image, 2.2, 0.6), "usable"
    yield "very dark (gamma 3, gain 0.35)", _gamma(image, 3.0, 0.35), "ungradable"
    yield "over-exposed (gain 1.6)", _gamma(image, 1.0, 1.6), "usable"
    yield "over-exposed (gain 2.5)", _gamma(image, 1.0, 2.5), "ungradable"
    yield "noise sigma 8", _noise(image, 8), "usable"
    yield "noise sigma 20", _noise(image, 20), "ungradable"
    yield "JPEG quality 5", _jpeg(image, 5), "usable"
    flat = (image.astype(np.float32) * 0.35 + 100).astype(np.uint8)
    flat[image.max(axis=2) < 15] = 0
    yield "washed out (contrast x0.35)", flat, "ungradable"
    yield "uneven light (one side 65 % darker)", _uneven(image, 0.65), "usable"
    crop = image[: h // 2]
    yield "half the field of view cut off", crop, "ungradable"
    tiny = np.zeros((h * 3, w * 3, 3), np.uint8)
    tiny[h : 2 * h, w : 2 * w] = image
    yield "field of view a small part of the frame", tiny, "ungradable"


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m training.quality_check", description=__doc__.split("\n")[0]).parse_args(
        argv
    )
    from skimage import data

    from hydralanet.quality import LIMITS, assess_quality

    names = list(LIMITS)
    print("| photo | expected | verdict | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---:|" * len(names))
    wrong = 0
    for name, picture, expected in degraded(data.retina()):
        q = assess_quality(picture)
        wrong += q.verdict != expected
        cells = " | ".join(f"{q.measures.get(n, float('nan')):.3g}" for n in names)
        print(f"| {name} | {expected} | {q.verdict}{'' if q.verdict == expected else ' (!)'} | {cells} |")
    print("limits (usable / ungradable): " + ", ".join(f"{n} {d} {u:g}/{g:g}" for n, (d, u, g, _) in LIMITS.items()))
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
