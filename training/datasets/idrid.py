"""IDRiD: the segmentation part (81 photos with lesion masks) and the localisation and
grading parts (disc and fovea centres, DME risk grades) as reading labels."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from hydralanet.io.images import IMAGE_EXTENSIONS

from .common import MASK_EXTENSIONS, MASK_KEYS, Problems, Record, check_sizes, files_by_stem, require_dir

IDRID_IMAGES = "1. Original Images"
IDRID_MASKS = "2. All Segmentation Groundtruths"
IDRID_SPLITS = {"a. Training Set": "train", "b. Testing Set": "test"}
IDRID_LESION_FOLDERS = {
    "MA": "1. Microaneurysms",
    "HE": "2. Haemorrhages",
    "EX": "3. Hard Exudates",
    "SE": "4. Soft Exudates",
    "OD": "5. Optic Disc",
}


def _idrid_root(root: Path) -> Path:
    """The folder holding ``1. Original Images`` and ``2. All Segmentation Groundtruths``:
    ``root`` itself, or one of its subfolders (``A. Segmentation`` in the release)."""
    if not root.is_dir():
        raise FileNotFoundError(f"IDRiD: folder {root} does not exist")

    def holds_both(folder: Path) -> bool:
        names = {" ".join(p.name.lower().split()) for p in folder.iterdir() if p.is_dir()}
        return IDRID_IMAGES.lower() in names and IDRID_MASKS.lower() in names

    if holds_both(root):
        return root
    candidates = [p for p in sorted(root.iterdir()) if p.is_dir() and holds_both(p)]
    if len(candidates) == 1:
        return candidates[0]
    raise FileNotFoundError(
        f"IDRiD: expected {root / IDRID_IMAGES} and {root / IDRID_MASKS}, or a subfolder of {root} "
        f"(such as 'A. Segmentation') holding both"
        + (f"; several do: {', '.join(map(str, candidates))}" if candidates else "")
    )


def parse_idrid(root: str | os.PathLike) -> list[Record]:
    """The IDRiD segmentation part (81 photos). A missing mask file means the lesion is absent."""
    root = _idrid_root(Path(root))
    problems = Problems("IDRiD", root)
    records: list[Record] = []
    image_top = require_dir(root / IDRID_IMAGES, "IDRiD", "photo")
    mask_top = require_dir(root / IDRID_MASKS, "IDRiD", "mask")
    for split_folder, split in IDRID_SPLITS.items():
        image_dir = require_dir(image_top / split_folder, "IDRiD", "photo")
        images = files_by_stem(image_dir, IMAGE_EXTENSIONS, problems)
        masks: dict[str, dict[str, Path]] = {key: {} for key in images}
        mask_root = require_dir(mask_top / split_folder, "IDRiD", "mask")
        for lesion, folder in IDRID_LESION_FOLDERS.items():
            lesion_dir = require_dir(mask_root / folder, "IDRiD", f"{lesion} mask")
            for stem, path in files_by_stem(lesion_dir, MASK_EXTENSIONS, problems).items():
                suffix = f"_{lesion.lower()}"
                if not stem.endswith(suffix):
                    problems.add(f"{path}: expected a name like <photo>_{lesion}{path.suffix} in {lesion_dir.name}")
                elif stem[: -len(suffix)] not in images:
                    problems.add(f"mask without its photo: {path} (no {stem[: -len(suffix)]}.* in {image_dir})")
                else:
                    masks[stem[: -len(suffix)]][lesion] = path
        for key, image in images.items():
            record = Record("idrid", split, image, {k: masks[key].get(k) for k in MASK_KEYS})
            check_sizes(image, record.masks, problems)
            records.append(record)
    problems.raise_if_any()
    return records


# --------------------------------------------------------------------------- IDRiD reading labels
#
# The release's localisation and grading parts (the same 516 photos, 413 train / 103 test):
#   C. Localization/1. Original Images/{a. Training Set,b. Testing Set}/IDRiD_001.jpg
#   C. Localization/2. Groundtruths/1. Optic Disc Center Location/
#       a. IDRiD_OD_Center_Training Set_Markups.csv, b. IDRiD_OD_Center_Testing Set_Markups.csv
#   C. Localization/2. Groundtruths/2. Fovea Center Location/
#       IDRiD_Fovea_Center_Training Set_Markups.csv, IDRiD_Fovea_Center_Testing Set_Markups.csv
#   B. Disease Grading/2. Groundtruths/
#       a. IDRiD_Disease Grading_Training Labels.csv, b. IDRiD_Disease Grading_Testing Labels.csv
# Markups: "Image No", "X- Coordinate", "Y - Coordinate" (+ empty columns); labels: "Image name",
# "Retinopathy grade", "Risk of macular edema" (a trailing space in some copies). Pixels of the
# 4288 x 2848 photos.

IDRID_LOCALIZATION = "C. Localization"
IDRID_GRADING = "B. Disease Grading"
_IDRID_READING_SPLITS = {"train": ("a. Training Set", "Training"), "test": ("b. Testing Set", "Testing")}


def _read_table(path: Path, problems: Problems) -> list[dict[str, str]]:
    """Rows of a CSV with whitespace-normalised, lower-case headers; empty columns dropped."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [" ".join(h.lower().split()) for h in next(reader, [])]
            return [{h: v.strip() for h, v in zip(header, row) if h} for row in reader if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError) as err:
        problems.add(f"{path}: cannot be read ({err})")
        return []


def _find(folder: Path, pattern: str) -> Path | None:
    matches = sorted(folder.glob(pattern)) if folder.is_dir() else []
    return matches[0] if matches else None


def parse_idrid_reading(root: str | os.PathLike) -> list[Record]:
    """IDRiD's localisation photos with their optic disc and fovea centres and their DME risk
    grades, as records without lesion masks (for ``training.evaluate``'s reading scores, not
    for training). ``root`` holds ``C. Localization`` (and ``B. Disease Grading`` for grades)."""
    root = Path(root)
    loc = require_dir(root / IDRID_LOCALIZATION, "IDRiD", "localisation")
    problems = Problems("IDRiD", root)
    truth = loc / "2. Groundtruths"
    grading = root / IDRID_GRADING / "2. Groundtruths"
    records: list[Record] = []
    for split, (folder, word) in _IDRID_READING_SPLITS.items():
        images = files_by_stem(
            require_dir(loc / "1. Original Images" / folder, "IDRiD", "photo"), IMAGE_EXTENSIONS, problems
        )
        labels: dict[str, dict[str, float | int]] = {key: {} for key in images}
        for what, sub, pattern in (
            ("disc", "1. Optic Disc Center Location", f"*OD_Center_{word} Set_Markups.csv"),
            ("fovea", "2. Fovea Center Location", f"*Fovea_Center_{word} Set_Markups.csv"),
        ):
            path = _find(truth / sub, pattern)
            if path is None:
                problems.add(f"no {pattern} in {truth / sub}")
                continue
            for row in _read_table(path, problems):
                name, x, y = row.get("image no", ""), row.get("x- coordinate"), row.get("y - coordinate")
                key = name.lower()
                if key not in labels:
                    problems.add(f"{path}: {name!r} is not a photo in {folder}")
                    continue
                try:
                    labels[key][f"{what}_x"], labels[key][f"{what}_y"] = float(x), float(y)
                except (TypeError, ValueError):
                    problems.add(f"{path}: {name}: coordinates {x!r}, {y!r} are not numbers")
        path = _find(grading, f"*Disease Grading_{word} Labels.csv")
        for row in _read_table(path, problems) if path else []:
            name, grade = row.get("image name", ""), row.get("risk of macular edema")
            key = name.lower()
            if key in labels and grade not in (None, ""):
                try:
                    labels[key]["dme_grade"] = int(grade)
                except ValueError:
                    problems.add(f"{path}: {name}: risk of macular edema {grade!r} is not 0, 1 or 2")
        for key, image in images.items():
            records.append(Record("idrid", split, image, dict.fromkeys(MASK_KEYS), labels[key]))
    problems.raise_if_any()
    return records


def parse_idrid_normals(root: str | os.PathLike, split: str = "train") -> list[Record]:
    """The photos of IDRiD's grading part (``B. Disease Grading``) that its graders gave
    retinopathy grade 0 and macular-edema risk 0: lesion-free photos from the segmentation
    part's camera, as records whose four lesion masks are known to be empty. ``root`` is the
    ``B. Disease Grading`` folder or its parent; ``split`` the grading part's ``train`` set (for
    training and validation) or its ``test`` set (for scoring only)."""
    if split not in _IDRID_READING_SPLITS:
        raise ValueError(f"split must be one of {', '.join(_IDRID_READING_SPLITS)}, got {split!r}")
    root = Path(root)
    base = root if root.name == IDRID_GRADING else root / IDRID_GRADING
    problems = Problems("IDRiD", base)
    folder, word = _IDRID_READING_SPLITS[split]
    images = files_by_stem(
        require_dir(base / "1. Original Images" / folder, "IDRiD", "grading photo"), IMAGE_EXTENSIONS, problems
    )
    path = _find(
        require_dir(base / "2. Groundtruths", "IDRiD", "grading labels"), f"*Disease Grading_{word} Labels.csv"
    )
    records: list[Record] = []
    if path is None:
        problems.add(f"no *Disease Grading_{word} Labels.csv in {base / '2. Groundtruths'}")
    for row in _read_table(path, problems) if path else []:
        name = row.get("image name", "")
        if not name:
            continue
        grades = (row.get("retinopathy grade", "").strip(), row.get("risk of macular edema", "").strip())
        if grades != ("0", "0"):
            continue
        image = images.get(name.lower())
        if image is None:
            problems.add(f"{path}: {name!r} has no photo in {folder}")
            continue
        records.append(Record("idrid", split, image, dict.fromkeys(MASK_KEYS), {"dme_grade": 0}))
    problems.raise_if_any()
    return sorted(records, key=lambda r: str(r.image))
