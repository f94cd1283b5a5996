"""How clearing a band along the field of view's edge changes each lesion's average precision,
and what healthy eyes have marked: one model pass per photo, every band width scored from it
(``config.json``'s ``"edge_margin"`` applied at the model's square, as ``predict`` applies it).

    .venv/bin/python tools/edge_sweep.py --manifest data/idrid/manifest_normals.csv --split val
    .venv/bin/python tools/edge_sweep.py --model DIR --manifest M.csv --split val --shares 0,0.01,0.02

Each row clears that share of the field's diameter for every lesion at once; read each lesion's
column on its own. Photos with lesion masks give the exact AP (all pixels pooled); photos given
without any mask (lesion-free ones) the median share of their field marked at the checkpoint's
thresholds and how many exceed 0.1 %. The checkpoint's own band, if it has one, is left out.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from tqdm import tqdm  # noqa: E402

from hydralanet import load_model, predict, read_image  # noqa: E402
from hydralanet.config import CLASSES  # noqa: E402
from hydralanet.inference.segment import clear_edge, edge_surround  # noqa: E402
from training.data import read_mask, split_rows  # noqa: E402
from training.metrics import PRAccumulator  # noqa: E402
from training.prepare import read_manifest  # noqa: E402


def sweep(model: str | None, manifest: str, split: str, shares: list[float]) -> list[dict]:
    """Per share: ``{"share", "ap": [4], "healthy_median": [4] | None, "healthy_over": [4] | None}``."""
    loaded = load_model(model)
    loaded = dataclasses.replace(loaded, config=dataclasses.replace(loaded.config, edge_margin=None))
    thresholds = np.array([loaded.config.thresholds[c] for c in CLASSES])[:, None, None]
    rows = split_rows(read_manifest(manifest), split)
    pr = {s: PRAccumulator() for s in shares}
    healthy: dict[float, list[np.ndarray]] = {s: [] for s in shares}

    for row in tqdm(rows, desc=f"{split}: one pass a photo", file=sys.stderr):
        image = read_image(row["image"])
        prediction = predict(loaded, image, square=True, precision="fp32")
        lesion_free = not any(row.get(c) for c in CLASSES)
        shape = image.shape[:2]
        targets = np.stack([read_mask(row[c], shape) if row.get(c) else np.zeros(shape, bool) for c in CLASSES])
        field = prediction.geometry.field_to_square(prediction.fov)
        surround = edge_surround(prediction.geometry, field)
        for share in shares:
            square = clear_edge(prediction.square.copy(), field, dict.fromkeys(CLASSES, share), surround)
            probs = dataclasses.replace(prediction, square=square).full().probabilities
            if lesion_free:
                marked = (probs >= thresholds).sum(axis=(1, 2))
                healthy[share].append(100.0 * marked / max(int(prediction.fov.sum()), 1))
            else:
                pr[share].update(torch.from_numpy(probs)[None], torch.from_numpy(targets)[None])
    out = []
    for share in shares:
        cover = np.array(healthy[share]) if healthy[share] else None
        out.append(
            {
                "share": share,
                "ap": pr[share].average_precision().tolist() if pr[share].positives.any() else None,
                "healthy_median": np.median(cover, axis=0).tolist() if cover is not None else None,
                "healthy_over": (cover > 0.1).sum(axis=0).tolist() if cover is not None else None,
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--shares", default="0,0.004,0.008,0.012,0.016,0.024,0.032,0.048")
    args = parser.parse_args(argv)
    try:
        shares = [float(s) for s in args.shares.split(",")]
        results = sweep(args.model, args.manifest, args.split, shares)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    aps = " | ".join(f"AP {c}" for c in CLASSES)
    print(f"| band (share of the diameter) | {aps} | healthy eyes: median % marked ({', '.join(CLASSES)}) |")
    print("|---:|" + "---:|" * len(CLASSES) + "---|")
    for r in results:
        ap = " | ".join(f"{v:.3f}" for v in r["ap"]) if r["ap"] else " | ".join("-" * 4)
        eyes = ", ".join(f"{v:.3f}" for v in r["healthy_median"]) if r["healthy_median"] else "-"
        if r["healthy_over"]:
            eyes += f" ({', '.join(str(n) for n in r['healthy_over'])} over 0.1 %)"
        print(f"| {100 * r['share']:.1f} % | {ap} | {eyes} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
