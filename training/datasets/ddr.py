"""DDR's lesion-segmentation part, which is also the layout ``training.synthetic`` writes."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from hydralanet.config import CLASSES
from hydralanet.io.images import IMAGE_EXTENSIONS

from .common import MASK_EXTENSIONS, Problems, Record, check_sizes, files_by_stem, require_dir

DDR_SPLITS = ("train", "valid", "test")


def read_synthetic_landmarks(root: str | os.PathLike) -> dict[Path, dict[str, float]]:
    """``training.synthetic``'s landmarks.csv (where it drew each disc and fovea), keyed by the
    absolute image path; empty when the folder has none."""
    root = Path(root)
    path = next((p / "landmarks.csv" for p in (root, root.parent) if (p / "landmarks.csv").is_file()), None)
    if path is None:
        return {}
    out = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            out[Path(os.path.abspath(path.parent / row.pop("image")))] = {
                "disc_x": float(row["disc_x"]),
                "disc_y": float(row["disc_y"]),
                "disc_diameter": float(row["disc_diameter"]),
                "fovea_x": float(row["fovea_x"]),
                "fovea_y": float(row["fovea_y"]),
            }
    return out


def parse_ddr(root: str | os.PathLike, *, source: str = "ddr") -> list[Record]:
    """The DDR lesion-segmentation part (also the layout ``training.synthetic`` writes).

    ``root`` is ``lesion_segmentation`` or its parent. Split folders that are absent are
    skipped (the synthetic generator may write only some); at least one must exist. Every
    photo must have all four masks: DDR writes an empty mask for an absent lesion.
    """
    root = Path(root)
    if (root / "lesion_segmentation").is_dir():
        root = root / "lesion_segmentation"
    present = [s for s in DDR_SPLITS if (root / s).is_dir()]
    if not present:
        raise FileNotFoundError(
            f"DDR: expected split folders {', '.join(str(root / s) for s in DDR_SPLITS)} "
            f"(or a 'lesion_segmentation' folder holding them) under {root}"
        )
    problems = Problems("DDR", root)
    records: list[Record] = []
    for split in present:
        image_dir = require_dir(root / split / "image", "DDR", "photo")
        images = files_by_stem(image_dir, IMAGE_EXTENSIONS, problems)
        masks: dict[str, dict[str, Path]] = {}
        for lesion in CLASSES:
            lesion_dir = require_dir(root / split / "label" / lesion, "DDR", f"{lesion} mask")
            masks[lesion] = files_by_stem(lesion_dir, MASK_EXTENSIONS, problems)
            for stem in sorted(masks[lesion].keys() - images.keys()):
                problems.add(f"mask without its photo: {masks[lesion][stem]} (no {stem}.* in {image_dir})")
        for key, image in images.items():
            missing = [lesion for lesion in CLASSES if key not in masks[lesion]]
            if missing:
                expected = ", ".join(str(root / split / "label" / m / f"{image.stem}.tif") for m in missing)
                problems.add(f"photo without its mask(s): {image} (expected {expected})")
                continue
            record = Record(source, split, image, {**{c: masks[c][key] for c in CLASSES}, "OD": None})
            check_sizes(image, record.masks, problems)
            records.append(record)
    problems.raise_if_any()
    return records
