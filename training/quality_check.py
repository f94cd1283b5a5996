"""Image-quality measures and verdicts on the real photo degraded on purpose (docs/reading.md#image-quality).

    python -m training.quality_check

``skimage.data.retina()`` and copies of it blurred, darkened, over-exposed, with noise, heavy
JPEG compression, a flat low-contrast wash, uneven light and crops; each with the verdict it
is expected to get. The limits in ``hydralanet/reading/quality.py`` were set between these values.

    python -m training.quality_check --idrid IDRIDROOT [--every N]

The macula checks (focus, exposure, inside the field, about the graders' fovea) on IDRiD part
C's training photos, and on copies with the macula blurred or shaded: the limits of
``MACULA_LIMITS`` sit below the photos and above most of the copies.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm


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


def macula_variants(image: np.ndarray, x: float, y: float, dd: float) -> Iterator[tuple[str, np.ndarray, bool]]:
    """``(name, image, the macula checks should flag it)``: the photo, its macula (2.2 DD about
    the fovea ``x, y``) blurred lightly and strongly, and shaded 70 % darker at the fovea."""
    yy, xx = np.ogrid[: image.shape[0], : image.shape[1]]
    r = (np.hypot(xx - x, yy - y) / dd).astype(np.float32)
    yield "clean", image, False
    inside = (r <= 2.2)[..., None]
    for name, sigma in (("macula blurred (sigma 0.015 DD)", 0.015), ("macula blurred (sigma 0.04 DD)", 0.04)):
        yield name, np.where(inside, cv2.GaussianBlur(image, (0, 0), sigma * dd), image), True
    shade = 1 - 0.7 * np.sqrt(np.clip(1 - r / 2.5, 0, 1))
    yield "macula shaded (70 % darker at the fovea)", (image * shade[..., None]).astype(np.uint8), True


def macula_table(root: str, every: int) -> int:
    """The macula measures on IDRiD C's training photos (the graders' fovea) and their degraded
    copies: per variant, each measure's spread and the share the macula checks flag."""
    from hydralanet.io.images import read_image
    from hydralanet.preprocessing import fov_mask
    from hydralanet.reading.quality import MACULA_LIMITS, assess_quality

    from .datasets.idrid import parse_idrid_reading
    from .idrid_reading import idrid_disc_diameter

    dd = idrid_disc_diameter(Path(root))
    records = [r for r in parse_idrid_reading(root) if r.official_split == "train"][::every]
    values: dict[str, dict[str, list[float]]] = {}
    flagged: dict[str, list[bool]] = {}
    for record in tqdm(records, desc="IDRiD photos", unit="photo"):
        photo = read_image(record.image)
        small = cv2.resize(photo, None, fx=1 / 3, fy=1 / 3, interpolation=cv2.INTER_AREA)  # the checks work at 1024 px
        x, y = record.labels["fovea_x"] / 3, record.labels["fovea_y"] / 3
        for name, picture, _ in macula_variants(small, x, y, dd / 3):
            q = assess_quality(picture, fov_mask(picture), (x, y, dd / 3))
            for key in MACULA_LIMITS:
                values.setdefault(name, {}).setdefault(key, []).append(q.measures.get(key, float("nan")))
            flagged.setdefault(name, []).append(any(r.startswith("the macula") for r in q.reasons))
    print(f"{len(records)} IDRiD training photos (one in {every}), 1 DD = {dd:.0f} px")
    print(
        "| photo | flagged by the macula checks | "
        + " | ".join(f"{k} (min / median / max)" for k in MACULA_LIMITS)
        + " |"
    )
    print("|---|---:|" + "---|" * len(MACULA_LIMITS))
    for name, by_key in values.items():
        cells = " | ".join(
            f"{np.nanmin(v):.2f} / {np.nanmedian(v):.2f} / {np.nanmax(v):.2f}" for v in map(np.array, by_key.values())
        )
        print(f"| {name} | {100 * np.mean(flagged[name]):.1f} % | {cells} |")
    print("limits (usable / ungradable): " + ", ".join(f"{n} {u:g}/{g:g}" for n, (_, u, g, _) in MACULA_LIMITS.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.quality_check", description=__doc__.split("\n")[0])
    parser.add_argument("--idrid", help="the IDRiD release's folder: the macula checks on its training photos instead")
    parser.add_argument("--every", type=int, default=1, help="with --idrid: every Nth training photo (default all)")
    args = parser.parse_args(argv)
    if args.idrid:
        return macula_table(args.idrid, args.every)
    from skimage import data

    from hydralanet.reading.quality import LIMITS, assess_quality

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
