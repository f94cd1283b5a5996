"""Parsers for the public lesion-segmentation datasets: IDRiD, DDR and TJDR (DESIGN §5).

Each parser walks a dataset folder *as released* and returns :class:`Record` s: one photo,
its official split and one mask path per lesion (``None`` = that lesion is absent). Nothing
here decodes photos; sizes are read from file headers. ``training.prepare`` turns records
into the manifest.

Problems are collected over the whole tree and raised as one ``ValueError`` (first
:data:`MAX_LISTED` listed), so a broken download is diagnosed in one run.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from hydralanet.config import CLASSES
from hydralanet.io import IMAGE_EXTENSIONS, save_png, write_atomic

MASK_KEYS: tuple[str, ...] = (*CLASSES, "OD")  # the optic disc is kept for reference, never trained on
MASK_EXTENSIONS = (".tif", ".tiff", ".png")
MAX_LISTED = 10
_EXIF_ORIENTATION = 0x0112

Palette = dict[tuple[int, int, int], "str | None"]


@dataclass(frozen=True)
class Record:
    """One photo of a dataset: ``masks`` maps each of :data:`MASK_KEYS` to a file or ``None``."""

    source: str  # "idrid", "ddr", "tjdr" (or "synthetic": DDR layout, generated)
    official_split: str  # "train", "valid" or "test", as the dataset's release names it
    image: Path
    masks: dict[str, Path | None]
    # Optional reading labels (training.prepare.LABEL_COLUMNS): disc and fovea centres and the
    # disc diameter in pixels, the DME risk grade.
    labels: dict[str, float | int] = field(default_factory=dict)


# --------------------------------------------------------------------------- shared helpers


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` as decoded with EXIF orientation applied, from the header only."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    except OSError as err:
        raise ValueError(f"{path}: not a readable image ({err})") from err
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


class _Problems:
    """Collects per-file problems of one dataset tree; :meth:`raise_if_any` reports them together."""

    def __init__(self, dataset: str, root: Path) -> None:
        self.dataset, self.root, self.items = dataset, root, []

    def add(self, message: str) -> None:
        self.items.append(message)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        shown = "\n  - ".join(self.items[:MAX_LISTED])
        more = f"\n  ... and {len(self.items) - MAX_LISTED} more" if len(self.items) > MAX_LISTED else ""
        raise ValueError(f"{self.dataset} at {self.root}: {len(self.items)} problem(s):\n  - {shown}{more}")


def _require_dir(path: Path, dataset: str, what: str) -> Path:
    """``path`` itself, or a sibling whose name differs only in case/spacing; else a clear error."""
    if path.is_dir():
        return path
    wanted = " ".join(path.name.lower().split())
    if path.parent.is_dir():
        for sibling in path.parent.iterdir():
            if sibling.is_dir() and " ".join(sibling.name.lower().split()) == wanted:
                return sibling
        present = sorted(p.name for p in path.parent.iterdir() if p.is_dir())
        listing = f" (folders there: {', '.join(present) or 'none'})"
    else:
        listing = ""
    raise FileNotFoundError(f"{dataset}: expected the {what} folder {path}{listing}")


def _files(folder: Path, extensions: Iterable[str], problems: _Problems) -> dict[str, Path]:
    """Files of ``folder`` with one of ``extensions`` (any case), by lower-case stem."""
    extensions = tuple(extensions)
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in extensions:
            continue  # .DS_Store, Thumbs.db, readme files
        key = path.stem.lower()
        if key in found:
            problems.add(f"two files with the same name stem: {found[key]} and {path}")
        found[key] = path
    return found


def _check_sizes(image: Path, masks: Mapping[str, Path | None], problems: _Problems) -> None:
    size = image_size(image)
    for mask in masks.values():
        if mask is not None and (mask_size := image_size(mask)) != size:
            problems.add(
                f"size mismatch: image {image} is {size[0]} x {size[1]} "
                f"but mask {mask} is {mask_size[0]} x {mask_size[1]}"
            )


# --------------------------------------------------------------------------- IDRiD

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
    problems = _Problems("IDRiD", root)
    records: list[Record] = []
    image_top = _require_dir(root / IDRID_IMAGES, "IDRiD", "photo")
    mask_top = _require_dir(root / IDRID_MASKS, "IDRiD", "mask")
    for split_folder, split in IDRID_SPLITS.items():
        image_dir = _require_dir(image_top / split_folder, "IDRiD", "photo")
        images = _files(image_dir, IMAGE_EXTENSIONS, problems)
        masks: dict[str, dict[str, Path]] = {key: {} for key in images}
        mask_root = _require_dir(mask_top / split_folder, "IDRiD", "mask")
        for lesion, folder in IDRID_LESION_FOLDERS.items():
            lesion_dir = _require_dir(mask_root / folder, "IDRiD", f"{lesion} mask")
            for stem, path in _files(lesion_dir, MASK_EXTENSIONS, problems).items():
                suffix = f"_{lesion.lower()}"
                if not stem.endswith(suffix):
                    problems.add(f"{path}: expected a name like <photo>_{lesion}{path.suffix} in {lesion_dir.name}")
                elif stem[: -len(suffix)] not in images:
                    problems.add(f"mask without its photo: {path} (no {stem[: -len(suffix)]}.* in {image_dir})")
                else:
                    masks[stem[: -len(suffix)]][lesion] = path
        for key, image in images.items():
            record = Record("idrid", split, image, {k: masks[key].get(k) for k in MASK_KEYS})
            _check_sizes(image, record.masks, problems)
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


def _read_table(path: Path, problems: _Problems) -> list[dict[str, str]]:
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
    loc = _require_dir(root / IDRID_LOCALIZATION, "IDRiD", "localisation")
    problems = _Problems("IDRiD", root)
    truth = loc / "2. Groundtruths"
    grading = root / IDRID_GRADING / "2. Groundtruths"
    records: list[Record] = []
    for split, (folder, word) in _IDRID_READING_SPLITS.items():
        images = _files(_require_dir(loc / "1. Original Images" / folder, "IDRiD", "photo"), IMAGE_EXTENSIONS, problems)
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


# --------------------------------------------------------------------------- DDR

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
    problems = _Problems("DDR", root)
    records: list[Record] = []
    for split in present:
        image_dir = _require_dir(root / split / "image", "DDR", "photo")
        images = _files(image_dir, IMAGE_EXTENSIONS, problems)
        masks: dict[str, dict[str, Path]] = {}
        for lesion in CLASSES:
            lesion_dir = _require_dir(root / split / "label" / lesion, "DDR", f"{lesion} mask")
            masks[lesion] = _files(lesion_dir, MASK_EXTENSIONS, problems)
            for stem in sorted(masks[lesion].keys() - images.keys()):
                problems.add(f"mask without its photo: {masks[lesion][stem]} (no {stem}.* in {image_dir})")
        for key, image in images.items():
            missing = [lesion for lesion in CLASSES if key not in masks[lesion]]
            if missing:
                expected = ", ".join(str(root / split / "label" / m / f"{image.stem}.tif") for m in missing)
                problems.add(f"photo without its mask(s): {image} (expected {expected})")
                continue
            record = Record(source, split, image, {**{c: masks[c][key] for c in CLASSES}, "OD": None})
            _check_sizes(image, record.masks, problems)
            records.append(record)
    problems.raise_if_any()
    return records


# --------------------------------------------------------------------------- TJDR
#
# Assumed layout (the release ships photos and a parallel folder of Labelme colour labels):
#   DIR/{train,test}/image/<stem>.{jpg,png}   DIR/{train,test}/label/<stem>.png
# Labels are converted once, by ``training.prepare``, into one binary PNG per lesion.

TJDR_SPLITS = ("train", "test")

# Labelme / PASCAL VOC colormap in label order (background, EX, HE, MA, SE). CHECK against the
# release's class list before training: a different label order silently swaps lesions, which
# is why ``--tjdr-palette`` exists. Unknown colours are an error, never background.
DEFAULT_TJDR_PALETTE: Palette = {
    (0, 0, 0): None,
    (128, 0, 0): "EX",
    (0, 128, 0): "HE",
    (128, 128, 0): "MA",
    (0, 0, 128): "SE",
}
_PALETTE_NAMES = (*MASK_KEYS, "background")


def _colour(value: object, where: str) -> tuple[int, int, int]:
    if isinstance(value, str) and value.startswith("#") and len(value) == 7:
        try:
            return tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
        except ValueError:
            pass
    elif (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)
    ):
        return tuple(value)  # type: ignore[return-value]
    raise ValueError(f"{where}: {value!r} is not a colour; use [r, g, b] with 0..255 integers or '#rrggbb'")


def load_tjdr_palette(path: str | os.PathLike) -> Palette:
    """A palette from JSON: ``{"EX": [128, 0, 0], "HE": "#008000", "background": [0, 0, 0], ...}``.

    Keys are EX, HE, MA, SE, OD or ``background``; a value is one colour or a list of colours.
    Lesions left out are never present in the labels; a colour may belong to one key only.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"TJDR palette file {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"TJDR palette {path} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or not data:
        raise ValueError(f"TJDR palette {path}: expected a JSON object mapping {', '.join(_PALETTE_NAMES)} to colours")
    palette: Palette = {}
    for name, value in data.items():
        if name not in _PALETTE_NAMES:
            raise ValueError(f"TJDR palette {path}: unknown key {name!r}; allowed: {', '.join(_PALETTE_NAMES)}")
        is_list = isinstance(value, list) and value and isinstance(value[0], (list, str))
        for colour in (_colour(v, f"TJDR palette {path}, key {name!r}") for v in (value if is_list else [value])):
            label = None if name == "background" else name
            if colour in palette and palette[colour] != label:
                raise ValueError(f"TJDR palette {path}: colour {colour} is given to both {palette[colour]} and {label}")
            palette[colour] = label
    return palette


# Real label files carry off-palette pixels (anti-aliased or re-encoded edges); the original
# HydraLA-Net pipeline matched each colour within about +-10 on its 0 channels and +-40 on its
# 128 ones. Default: the same. A pixel within the tolerance of a palette colour (every channel)
# is snapped to it and counted; anything further is still an error.
DEFAULT_TJDR_TOLERANCE = (10, 40)  # (channels at 0 or 255, other channels)


def decode_tjdr_label(
    path: Path, palette: Palette, tolerance: tuple[int, int] = DEFAULT_TJDR_TOLERANCE
) -> tuple[dict[str, np.ndarray], int]:
    """A colour label image -> ``(masks, snapped)``: bool ``H x W`` mask per palette lesion
    (absent ones all False) and the number of off-palette pixels snapped to a palette colour.

    ``tolerance`` ``(low, high)``: a pixel off the palette joins a palette colour when each of its
    channels is within ``low`` of that colour's channel where the channel is 0 or 255, within
    ``high`` elsewhere (the nearest such colour, by summed difference, if several); ``(0, 0)``
    accepts exact colours only. Any other colour is a ``ValueError`` naming the file and the
    colours, with pixel counts, so a wrong palette is caught instead of becoming background.
    """
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))  # P (Labelme's own output), RGBA and L all become RGB
    code = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    assigned = np.full(code.shape, -1, dtype=np.int16)  # index into the palette's colours
    colours_list = list(palette.items())
    for i, ((r, g, b), _) in enumerate(colours_list):
        assigned[code == ((r << 16) | (g << 8) | b)] = i
    snapped = 0
    off = assigned < 0
    if off.any() and max(tolerance) > 0:
        pixels = rgb[off].astype(np.int16)  # N x 3
        best = np.full(len(pixels), -1, dtype=np.int16)
        best_distance = np.full(len(pixels), np.iinfo(np.int32).max, dtype=np.int32)
        for i, (colour, _) in enumerate(colours_list):
            target = np.asarray(colour, dtype=np.int16)
            allowed = np.where((target == 0) | (target == 255), tolerance[0], tolerance[1])
            diff = np.abs(pixels - target)
            within = (diff <= allowed).all(axis=1)
            distance = diff.sum(axis=1)
            better = within & (distance < best_distance)
            best[better], best_distance[better] = i, distance[better]
        assigned[off] = best
        snapped = int((best >= 0).sum())
    known = assigned >= 0
    if not known.all():
        colours, counts = np.unique(code[~known], return_counts=True)
        order = np.argsort(-counts, kind="stable")[:MAX_LISTED]
        listed = ", ".join(
            f"({c >> 16}, {(c >> 8) & 255}, {c & 255}): {n} px" for c, n in zip(colours[order], counts[order])
        )
        raise ValueError(
            f"{path}: {len(colours)} colour(s) not in the TJDR palette: {listed}"
            f"{' ...' if len(colours) > MAX_LISTED else ''}; known: {sorted(palette)} "
            f"(tolerance +-{tolerance[0]} / +-{tolerance[1]}; pass --tjdr-palette JSON if the release uses other "
            "colours, or a wider --tjdr-tolerance)"
        )
    masks = {name: np.zeros(code.shape, dtype=bool) for name in set(palette.values()) if name is not None}
    for i, (_, name) in enumerate(colours_list):
        if name is not None:
            masks[name] |= assigned == i
    return masks, snapped


def _convert_tjdr_label(job: tuple) -> tuple[dict[str, Path | None], int] | str:
    """Mask paths of one label and its snapped pixel count, or the problem (a string) so every
    bad label is reported."""
    image, label, masks_dir, split, palette, tolerance = job
    paths: dict[str, Path | None] = dict.fromkeys(MASK_KEYS)
    try:
        decoded, snapped = decode_tjdr_label(label, palette, tolerance)
    except (ValueError, OSError) as err:
        return str(err)
    for name, mask in decoded.items():
        out = masks_dir / split / name / f"{image.stem}.png"
        if mask.any():
            save_png(out, mask.astype(np.uint8) * 255)
            paths[name] = out
        else:
            out.unlink(missing_ok=True)  # left by an earlier run with another palette
    return paths, snapped


def parse_tjdr(
    root: str | os.PathLike,
    masks_dir: str | os.PathLike,
    *,
    palette: Palette | None = None,
    workers: int = 4,
    tolerance: tuple[int, int] = DEFAULT_TJDR_TOLERANCE,
) -> list[Record]:
    """TJDR photos with their colour labels converted to ``masks_dir/<split>/<LESION>/<stem>.png``.

    Only lesions present in a label get a mask file (0/255 PNG); absent ones are ``None``.
    Off-palette pixels within ``tolerance`` are snapped (:func:`decode_tjdr_label`); the count per
    label file goes to ``masks_dir/snapped.csv`` and a one-line summary to stderr.
    """
    root, masks_dir = Path(root), Path(masks_dir)
    palette = DEFAULT_TJDR_PALETTE if palette is None else palette
    if not root.is_dir():
        raise FileNotFoundError(f"TJDR: folder {root} does not exist")
    problems = _Problems("TJDR", root)
    jobs = []
    for split in TJDR_SPLITS:
        image_dir = _require_dir(root / split / "image", "TJDR", "photo")
        label_dir = _require_dir(root / split / "label", "TJDR", "colour label")
        images = _files(image_dir, IMAGE_EXTENSIONS, problems)
        labels = _files(label_dir, (".png",), problems)
        for key in sorted(labels.keys() - images.keys()):
            problems.add(f"label without its photo: {labels[key]} (no {labels[key].stem}.* in {image_dir})")
        for key, image in images.items():
            if key not in labels:
                problems.add(f"photo without its label: {image} (expected {label_dir / (image.stem + '.png')})")
                continue
            _check_sizes(image, {"label": labels[key]}, problems)
            jobs.append((image, labels[key], masks_dir, split, palette, tolerance))
    problems.raise_if_any()
    with ThreadPoolExecutor(max(1, workers)) as pool:  # decode and PNG encode release the GIL
        converted = list(pool.map(_convert_tjdr_label, jobs))
    for result in converted:
        if isinstance(result, str):
            problems.add(result)
    problems.raise_if_any()
    snapped = [(job[1], n) for job, (_, n) in zip(jobs, converted)]
    report = "label,snapped_pixels\n" + "".join(f"{label},{n}\n" for label, n in snapped)
    write_atomic(masks_dir / "snapped.csv", report.encode())
    touched = [(label, n) for label, n in snapped if n]
    if touched:
        worst = max(touched, key=lambda t: t[1])
        print(
            f"TJDR: snapped {sum(n for _, n in touched)} off-palette pixel(s) to the palette in {len(touched)} of "
            f"{len(snapped)} label files (most: {worst[1]} in {worst[0].name}; tolerance +-{tolerance[0]} / "
            f"+-{tolerance[1]}); per file: {masks_dir / 'snapped.csv'}",
            file=sys.stderr,
        )
    return [Record("tjdr", job[3], job[0], masks) for job, (masks, _) in zip(jobs, converted)]
