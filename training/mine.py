"""Hard negatives: where a model marks lesions that are not there, for training to look at.

    python -m training.mine --manifest M.csv --out negatives.json [--model weights]
        [--split train] [--classes EX SE] [--per-image 20]

Each photo of the split is segmented by the model (at its thresholds) and compared with the
truth in the model's square: a connected component of a class's mask that touches none of that
class's true pixels (within 2 px) is a false positive, and its centre (x, y in the square) is a
hard negative. ``training.train --set hard_negatives=negatives.json --set hard_negative_p=0.3``
then centres that share of the crops of each image with some on one of them (``crop_size``
runs), so the loss sees the look-alikes the model confuses: the rim of the field of view, the
foveal reflex, a cotton-wool spot taken for a hard exudate (``training.dme_check`` names them).
The file is written atomically: ``{"input_size", "model", "classes", "images": {path: [[x, y],
...]}}``, paths as the manifest resolves them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hydralanet import load_model, predict, read_image
from hydralanet.config import CLASSES
from hydralanet.io.images import write_atomic

from .data import load_square, split_rows
from .prepare import read_manifest


def false_components(predicted: np.ndarray, truth: np.ndarray, grow: int = 2) -> tuple[np.ndarray, list[tuple]]:
    """The components of bool ``predicted`` that touch no pixel of bool ``truth`` grown by
    ``grow`` px: the label image and, per such component, ``(label, (x, y) centre, area)``,
    the largest first."""
    near = cv2.dilate(truth.view(np.uint8), np.ones((2 * grow + 1,) * 2, np.uint8)) > 0 if grow else truth
    n, labels, stats, centres = cv2.connectedComponentsWithStats(predicted.view(np.uint8), connectivity=8)
    hits = np.zeros(n, dtype=bool)
    hits[np.unique(labels[near & predicted])] = True
    false = [(k, (float(centres[k][0]), float(centres[k][1])), int(stats[k, cv2.CC_STAT_AREA])) for k in range(1, n)]
    return labels, sorted((f for f in false if not hits[f[0]]), key=lambda f: -f[2])


def false_centres(predicted: np.ndarray, truth: np.ndarray, limit: int) -> list[list[float]]:
    """Centres (x, y) of :func:`false_components` (2 px), the largest ``limit`` first."""
    _, false = false_components(predicted, truth)
    return [[round(x, 1), round(y, 1)] for _, (x, y), _ in false[:limit]]


def mine(rows: list[dict[str, Any]], loaded: Any, classes: list[str], per_image: int) -> dict[str, list]:
    """``{image path: [[x, y], ...]}`` over ``rows`` (photos without any are left out)."""
    from tqdm import tqdm

    thresholds = loaded.config.thresholds
    found: dict[str, list] = {}
    for row in tqdm(rows, desc="mining", unit="photo"):
        prediction = predict(loaded, read_image(row["image"]), square=True)
        truth = load_square(row, loaded.config.preprocessing)["masks"] > 0
        points: list[list[float]] = []
        for c in classes:
            i = CLASSES.index(c)
            predicted = prediction.square[i] >= np.float32(thresholds[c])
            points += false_centres(predicted, np.ascontiguousarray(truth[..., i]), per_image)
        if points:
            found[str(row["image"])] = points[:per_image]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.mine", description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--out", type=Path, required=True, help="the hard-negatives file (JSON)")
    parser.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--classes", nargs="+", default=list(CLASSES), choices=CLASSES)
    parser.add_argument("--per-image", type=int, default=20, help="at most this many points a photo (largest first)")
    args = parser.parse_args(argv)
    loaded = load_model(args.model, device="cpu")
    rows = split_rows(read_manifest(args.manifest), args.split)
    found = mine(rows, loaded, args.classes, args.per_image)
    data = {
        "input_size": loaded.config.preprocessing.input_size,
        "model": loaded.identity.get("name") or str(args.model),
        "classes": args.classes,
        "images": found,
    }
    write_atomic(args.out, (json.dumps(data) + "\n").encode())
    total = sum(len(v) for v in found.values())
    print(f"{total} hard negatives on {len(found)} of {len(rows)} photos -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
