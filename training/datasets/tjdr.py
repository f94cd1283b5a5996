"""TJDR: photos with Labelme colour labels.

Assumed layout (the release ships photos and a parallel folder of Labelme colour labels):
  DIR/{train,test}/image/<stem>.{jpg,png}   DIR/{train,test}/label/<stem>.png
Labels are converted once, by ``training.prepare``, into one binary PNG per lesion.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from hydralanet.io.images import IMAGE_EXTENSIONS, save_png, write_atomic

from .common import MASK_KEYS, MAX_LISTED, Problems, Record, check_sizes, files_by_stem, require_dir

Palette = dict[tuple[int, int, int], "str | None"]

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
    problems = Problems("TJDR", root)
    jobs = []
    for split in TJDR_SPLITS:
        image_dir = require_dir(root / split / "image", "TJDR", "photo")
        label_dir = require_dir(root / split / "label", "TJDR", "colour label")
        images = files_by_stem(image_dir, IMAGE_EXTENSIONS, problems)
        labels = files_by_stem(label_dir, (".png",), problems)
        for key in sorted(labels.keys() - images.keys()):
            problems.add(f"label without its photo: {labels[key]} (no {labels[key].stem}.* in {image_dir})")
        for key, image in images.items():
            if key not in labels:
                problems.add(f"photo without its label: {image} (expected {label_dir / (image.stem + '.png')})")
                continue
            check_sizes(image, {"label": labels[key]}, problems)
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
