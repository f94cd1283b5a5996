"""Builders of tiny fake IDRiD / DDR / TJDR trees (a few 40 x 30 photos) for parser and
manifest tests. Masks are rectangles at positions derived from the image index, so tests
can predict which lesions each image shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from training.datasets import DEFAULT_TJDR_PALETTE, IDRID_LESION_FOLDERS

LESIONS = ("EX", "HE", "MA", "SE")
SIZE = (40, 30)  # width, height


def write_photo(path: Path, size: tuple[int, int] = SIZE, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def lesion_box(index: int, lesion: str, size: tuple[int, int] = SIZE) -> np.ndarray:
    """bool H x W: a small rectangle, different per (image, lesion)."""
    mask = np.zeros((size[1], size[0]), dtype=bool)
    k = LESIONS.index(lesion) if lesion in LESIONS else 4
    y, x = 2 + 5 * k, 2 + (3 * index) % (size[0] - 8)
    mask[y : y + 4, x : x + 6] = True
    return mask


def write_mask(path: Path, mask: np.ndarray, *, rgb: bool = False, value: int = 255) -> Path:
    """A TIF/PNG mask: single channel (0 / value), or RGB with the lesion in red (IDRiD)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plane = mask.astype(np.uint8) * value
    array = np.stack([plane, np.zeros_like(plane), np.zeros_like(plane)], axis=-1) if rgb else plane
    Image.fromarray(array).save(path)
    return path


def make_idrid(
    root: Path,
    *,
    n_train: int = 3,
    n_test: int = 2,
    wrap: str | None = "A. Segmentation",
    ext: str = ".jpg",
    rgb_masks: bool = True,
) -> Path:
    """``root/[wrap/]1. Original Images/...`` as released; SE only for even image numbers.

    Returns ``root`` (the folder above ``wrap``). Images are numbered IDRiD_01 ... in order.
    """
    base = root / wrap if wrap else root
    number = 0
    for split_folder, count in (("a. Training Set", n_train), ("b. Testing Set", n_test)):
        (base / "1. Original Images" / split_folder).mkdir(parents=True, exist_ok=True)
        for folder in IDRID_LESION_FOLDERS.values():
            (base / "2. All Segmentation Groundtruths" / split_folder / folder).mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            number += 1
            stem = f"IDRiD_{number:02d}"
            write_photo(base / "1. Original Images" / split_folder / f"{stem}{ext}", seed=number)
            for lesion, folder in IDRID_LESION_FOLDERS.items():
                if lesion == "SE" and number % 2:
                    continue  # about half of IDRiD has no soft exudates: no file at all
                path = base / "2. All Segmentation Groundtruths" / split_folder / folder / f"{stem}_{lesion}.tif"
                write_mask(path, lesion_box(number, lesion), rgb=rgb_masks)
    return root


def ddr_present(index: int, lesion: str) -> bool:
    """Which lesions image ``index`` of :func:`make_ddr` shows (DDR keeps empty masks)."""
    return (index + LESIONS.index(lesion)) % 3 != 0


def make_ddr(root: Path, counts: dict[str, int] | None = None, *, wrap: bool = True) -> Path:
    """``root/lesion_segmentation/{train,valid,test}/{image,label/EX..SE}``; returns ``root``."""
    counts = {"train": 4, "valid": 2, "test": 2} if counts is None else counts
    base = root / "lesion_segmentation" if wrap else root
    index = 0
    for split, count in counts.items():
        for _ in range(count):
            stem = f"ddr_{index:03d}"
            write_photo(base / split / "image" / f"{stem}.jpg", seed=100 + index)
            for lesion in LESIONS:
                mask = lesion_box(index, lesion) if ddr_present(index, lesion) else np.zeros(SIZE[::-1], dtype=bool)
                write_mask(base / split / "label" / lesion / f"{stem}.tif", mask, value=1)
            index += 1
        for lesion in LESIONS:
            (base / split / "label" / lesion).mkdir(parents=True, exist_ok=True)
    return root


def tjdr_label(index: int, palette: dict = DEFAULT_TJDR_PALETTE) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """An RGB colour label (H x W x 3) and the per-lesion masks it encodes; image ``index``
    shows every lesion but the one at position ``index % 4``."""
    colour_of = {name: colour for colour, name in palette.items()}
    label = np.zeros((SIZE[1], SIZE[0], 3), dtype=np.uint8)
    label[:] = colour_of[None]
    masks = {}
    for lesion in LESIONS:
        box = lesion_box(index, lesion) if LESIONS.index(lesion) != index % 4 else np.zeros(SIZE[::-1], dtype=bool)
        label[box] = colour_of[lesion]
        masks[lesion] = box
    return label, masks


def make_tjdr(root: Path, counts: dict[str, int] | None = None, *, palette_mode: bool = False) -> Path:
    """``root/{train,test}/{image,label}``; labels RGB, or palette PNGs like Labelme writes."""
    counts = {"train": 4, "test": 2} if counts is None else counts
    index = 0
    for split, count in counts.items():
        for _ in range(count):
            stem = f"tjdr_{index:03d}"
            write_photo(root / split / "image" / f"{stem}.jpg", seed=200 + index)
            label, _ = tjdr_label(index)
            path = root / split / "label" / f"{stem}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(label)
            if palette_mode:
                image = image.quantize(palette=_voc_palette_image(), dither=Image.Dither.NONE)
            image.save(path)
            index += 1
    return root


def _voc_palette_image() -> Image.Image:
    colours = sorted(DEFAULT_TJDR_PALETTE, key=lambda c: (DEFAULT_TJDR_PALETTE[c] or "",))
    flat = [v for c in colours for v in c] + [0, 0, 0] * (256 - len(colours))
    pal = Image.new("P", (1, 1))
    pal.putpalette(flat)
    return pal


def make_idrid_reading(root: Path, *, n_train: int = 3, n_test: int = 2) -> Path:
    """IDRiD's localisation and grading parts as released: ``C. Localization`` photos and markup
    CSVs (``Image No``, ``X- Coordinate``, ``Y - Coordinate`` and empty trailing columns),
    ``B. Disease Grading`` label CSVs (``Risk of macular edema `` with its trailing space).
    Photo k has its disc at (10 + k, 20 + k), its fovea at (30 + k, 25 + k) and DME grade k % 3."""
    loc, grading = root / "C. Localization", root / "B. Disease Grading" / "2. Groundtruths"
    od = loc / "2. Groundtruths" / "1. Optic Disc Center Location"
    fovea = loc / "2. Groundtruths" / "2. Fovea Center Location"
    for folder in (od, fovea, grading):
        folder.mkdir(parents=True, exist_ok=True)
    number = 0
    for split_folder, word, prefix, count in (
        ("a. Training Set", "Training", "a. ", n_train),
        ("b. Testing Set", "Testing", "b. ", n_test),
    ):
        (loc / "1. Original Images" / split_folder).mkdir(parents=True, exist_ok=True)
        od_rows = ["Image No,X- Coordinate,Y - Coordinate,,"]
        fovea_rows = ["Image No,X- Coordinate,Y - Coordinate,,"]
        grade_rows = ["Image name,Retinopathy grade,Risk of macular edema "]
        for _ in range(count):
            number += 1
            stem = f"IDRiD_{number:03d}"
            write_photo(loc / "1. Original Images" / split_folder / f"{stem}.jpg", seed=number)
            od_rows.append(f"{stem},{10 + number},{20 + number},,")
            fovea_rows.append(f"{stem},{30 + number},{25 + number},,")
            grade_rows.append(f"{stem},{number % 5},{number % 3}")
        (od / f"{prefix}IDRiD_OD_Center_{word} Set_Markups.csv").write_text("\n".join(od_rows) + "\n")
        (fovea / f"IDRiD_Fovea_Center_{word} Set_Markups.csv").write_text("\n".join(fovea_rows) + "\n")
        (grading / f"{prefix}IDRiD_Disease Grading_{word} Labels.csv").write_text("\n".join(grade_rows) + "\n")
    return root
