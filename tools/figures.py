"""Side-by-side pictures for the README: what IDRiD's graders marked next to what a model marks.

    python tools/figures.py --model weights --manifest runs/idrid/manifest.csv \
        --photos IDRiD_55 IDRiD_61 --out docs/images [--width 1600]

For each photo of the manifest's test split named in ``--photos``: the photo with the graders'
masks drawn over it (left) and with the model's masks at its default thresholds (right), the
lesion colours of the app, scaled to ``--width`` pixels in all, as JPEG.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from hydralanet import load_model, predict, read_image
from hydralanet.config import CLASSES
from hydralanet.io.images import write_atomic
from hydralanet.report.overlay import render_overlay
from training.data import read_mask
from training.prepare import read_manifest


def side_by_side(model, row: dict, width: int) -> np.ndarray:
    image = read_image(row["image"])
    shape = image.shape[:2]
    truth = np.stack([read_mask(row[c], shape) if row.get(c) else np.zeros(shape, bool) for c in CLASSES])
    masks = predict(model, image).masks()
    # Thicker outlines survive the downscale: draw on a copy at half size first.
    half = (shape[1] // 2, shape[0] // 2)
    small = cv2.resize(image, half, interpolation=cv2.INTER_AREA)

    def shrink(m: np.ndarray) -> np.ndarray:
        return np.stack([cv2.resize(x.astype(np.uint8), half, interpolation=cv2.INTER_AREA) > 0 for x in m])

    panels = [render_overlay(small, shrink(truth), opacity=0.55), render_overlay(small, shrink(masks), opacity=0.55)]
    both = np.concatenate([panels[0], np.zeros((half[1], 8, 3), np.uint8), panels[1]], axis=1)
    height = round(both.shape[0] * width / both.shape[1])
    return cv2.resize(both, (width, height), interpolation=cv2.INTER_AREA)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="weights")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--photos", nargs="+", required=True, help="photo names without extension")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--width", type=int, default=1600)
    args = parser.parse_args(argv)
    model = load_model(args.model, device="cpu")
    rows = {Path(r["image"]).stem: r for r in read_manifest(args.manifest) if r["split"] == "test"}
    missing = [p for p in args.photos if p not in rows]
    if missing:
        parser.error(f"not in the test split of {args.manifest}: {', '.join(missing)}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.photos:
        picture = side_by_side(model, rows[name], args.width)
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise RuntimeError(f"could not encode {name}")
        write_atomic(args.out / f"{name}_graders_vs_model.jpg", data.tobytes())
        print(f"wrote {args.out / f'{name}_graders_vs_model.jpg'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
