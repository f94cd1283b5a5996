"""The pictures of the landmark measurement (``python -m training.idrid_reading landmarks``):
distances to IDRiD's graders' marks, and the test photos farthest off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hydralanet.io.images import read_image, write_atomic

SPLITS = ("train", "test")
TOLERANCE_DD = 0.5
FINDERS = ("learned", "image")  # the learned head (weights/landmarks.*) and image analysis
FINDER_NAMES = {"learned": "learned head", "image": "image analysis"}


def histogram(rows: list[dict[str, Any]], dd_px: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finders = [f for f in FINDERS if any(r["finder"] == f for r in rows)]
    fig, axes = plt.subplots(len(finders), 2, figsize=(10, 3.4 * len(finders)), squeeze=False)
    bins = np.linspace(0, 2.0, 41)
    for row_axes, finder in zip(axes, finders):
        for ax, key, name in zip(row_axes, ("disc", "fovea"), ("optic disc centre", "fovea")):
            for split, colour in zip(SPLITS, ("#7f7f7f", "#d62728")):
                dd = [
                    min(r[f"{key}_error_dd"], 2.0)
                    for r in rows
                    if r["split"] == split and r["finder"] == finder and r[f"{key}_error_dd"] is not None
                ]
                ax.hist(dd, bins=bins, alpha=0.6, color=colour, label=f"{split} ({len(dd)})", density=True)
            ax.axvline(TOLERANCE_DD, color="k", lw=1, ls="--")
            ax.set_xlabel(f"distance to the graders' mark in DD (1 DD = {dd_px:.0f} px; last bin: 2+)", fontsize=9)
            ax.set_title(f"IDRiD part C, {FINDER_NAMES[finder]}: {name}")
            ax.legend()
        row_axes[0].set_ylabel("share of photos (density)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def contact_sheet(rows: list[dict[str, Any]], records, dd_px: float, path: Path, n: int = 10) -> list[str]:
    """The ``n`` test photos with the largest distance (fovea or disc, in DD; not found first)
    for the first finder in ``rows``: graders' marks in green, found in red (circle: disc,
    cross: fovea), 0.5 DD circles."""
    by_name = {(r.official_split, r.image.stem): r for r in records}  # train and test reuse names

    def worst(r: dict[str, Any]) -> float:
        errs = [r[f"{k}_error_dd"] if r[f"{k}_error_dd"] is not None else 99.0 for k in ("disc", "fovea")]
        return max(errs)

    finder = rows[0]["finder"] if rows else None
    test = sorted((r for r in rows if r["split"] == "test" and r["finder"] == finder), key=worst, reverse=True)[:n]
    tiles = []
    for r in test:
        image = read_image(by_name[r["split"], r["image"]].image)
        k = 400 / image.shape[1]
        small = np.ascontiguousarray(cv2.resize(image, (400, round(image.shape[0] * k)), interpolation=cv2.INTER_AREA))
        for key, marker in (("disc", "circle"), ("fovea", "cross")):
            for colour, (x, y) in (
                ((0, 255, 0), (r[f"{key}_true_x"], r[f"{key}_true_y"])),
                ((255, 40, 40), (r[f"{key}_x"], r[f"{key}_y"])),
            ):
                if x is None:
                    continue
                c = (round(x * k), round(y * k))
                if marker == "circle":
                    cv2.circle(small, c, 4, colour, -1, cv2.LINE_AA)
                else:
                    cv2.drawMarker(small, c, colour, cv2.MARKER_CROSS, 14, 2, cv2.LINE_AA)
                if colour == (0, 255, 0):
                    cv2.circle(small, c, round(TOLERANCE_DD * dd_px * k), colour, 1, cv2.LINE_AA)

        label = f"{r['image']}  disc {_fmt(r['disc_error_dd'])}  fovea {_fmt(r['fovea_error_dd'])}"
        cv2.rectangle(small, (0, 0), (400, 18), (0, 0, 0), -1)
        cv2.putText(small, label, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(small)
    if not tiles:
        return []
    h = max(t.shape[0] for t in tiles)
    tiles = [np.pad(t, ((0, h - t.shape[0]), (0, 0), (0, 0))) for t in tiles]
    while len(tiles) % 5:
        tiles.append(np.zeros_like(tiles[0]))
    sheet = np.concatenate([np.concatenate(tiles[i : i + 5], axis=1) for i in range(0, len(tiles), 5)], axis=0)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    write_atomic(path, data.tobytes())
    return [r["image"] for r in test]


def _fmt(value: float | None) -> str:
    return "not found" if value is None else f"{value:.2f} DD"
