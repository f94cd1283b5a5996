"""Datasets -> one CSV manifest with a train/val/test split (docs/training.md#data).

    python -m training.prepare --idrid DIR --ddr DIR --tjdr DIR --out data/manifest.csv

Columns: ``source, split, image, EX, HE, MA, SE, OD`` (mask paths; empty = lesion absent).
Paths inside the manifest's folder are written relative to it, others absolute;
:func:`read_manifest` resolves both back to absolute paths.

The default ``published`` split keeps the official test sets as ``test`` and splits the rest
(official train + DDR valid) 80/20 into ``train``/``val``, stratified by source and by which
lesions an image shows; for the published 1,034 images that is 827 / 207.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from hydralanet.config import CLASSES
from hydralanet.io.images import write_atomic

from .datasets import (
    DEFAULT_TJDR_TOLERANCE,
    MASK_KEYS,
    Record,
    load_tjdr_palette,
    parse_ddr,
    parse_idrid,
    parse_idrid_normals,
    parse_idrid_reading,
    parse_tjdr,
    read_synthetic_landmarks,
)

COLUMNS: tuple[str, ...] = ("source", "split", "image", *MASK_KEYS)
# Optional reading labels after those, written when any photo has one (empty = unknown): disc
# and fovea centres and the disc diameter in pixels of the photo, the DME risk grade (0-2).
LABEL_COLUMNS: tuple[str, ...] = ("disc_x", "disc_y", "disc_diameter", "fovea_x", "fovea_y", "dme_grade")
SPLITS: tuple[str, ...] = ("train", "val", "test")
SOURCES: tuple[str, ...] = ("idrid", "ddr", "tjdr", "synthetic")  # table and sort order
SPLIT_MODES: tuple[str, ...] = ("published", "random")
DEFAULT_VAL_FRACTION = 0.2  # docs/training.md#data: 80/20 train/val of the non-test images
DEFAULT_TEST_FRACTION = 0.26  # docs/training.md#data: the `random` option's test share, taken first
DEFAULT_SEED = 42  # docs/training.md#data
# Masks of these sources exist only where the lesion does (the TJDR converter writes no empty
# file), so a path is presence enough and the large masks need not be decoded again.
_MASK_FILE_MEANS_PRESENT = {"tjdr"}

Pattern = tuple[bool, bool, bool, bool]  # lesion present, EX HE MA SE order


# --------------------------------------------------------------------------- lesion presence


def lesion_presence(records: Sequence[Record], workers: int = 4) -> list[Pattern]:
    """Which of EX, HE, MA, SE each record shows: a mask file with a non-zero pixel."""
    from .data import read_mask  # the training loader's own reading rules (red channel of RGB, ...)

    def decode(path: Path) -> bool:
        return bool(read_mask(path).any())

    todo = sorted(
        {r.masks[c] for r in records for c in CLASSES if r.masks[c] and r.source not in _MASK_FILE_MEANS_PRESENT}
    )
    with ThreadPoolExecutor(max(1, workers)) as pool:  # PIL decodes with the GIL released
        found = dict(zip(todo, pool.map(decode, todo)))
    return [
        tuple(r.masks[c] is not None and found.get(r.masks[c], True) for c in CLASSES)  # type: ignore[misc]
        for r in records
    ]


# --------------------------------------------------------------------------- split


def _strata(levels: Sequence[Sequence[Hashable]], min_size: int) -> list[str]:
    """One stratum label per item from its keys, finest first (e.g. ``[pattern, ()]``).

    Items take their finest key whose group, among items not claimed by a finer one, has at
    least ``min_size`` members; the last key takes whatever is left. A leftover of one item
    (too small to split at all) joins the largest stratum.
    """
    n, depth = len(levels), len(levels[0])
    label: list[Any] = [None] * n
    for level in range(depth):
        groups: dict[Hashable, list[int]] = defaultdict(list)
        for i in range(n):
            if label[i] is None:
                groups[levels[i][level]].append(i)
        for key, members in groups.items():
            if len(members) >= min_size or level == depth - 1:
                for i in members:
                    label[i] = repr((level, key))
    counts = Counter(label)
    largest = max(counts, key=lambda k: (counts[k], k))
    return [largest if counts[k] < 2 else k for k in label]


def _quotas(total: int, sizes: dict[str, int]) -> dict[str, int]:
    """``total`` shared in proportion to ``sizes`` (largest remainder; ties by order given)."""
    n = sum(sizes.values())
    exact = {g: total * size / n for g, size in sizes.items()}
    quota = {g: math.floor(q) for g, q in exact.items()}
    by_remainder = sorted(sizes, key=lambda g: -(exact[g] - quota[g]))  # stable: first given wins ties
    for g in by_remainder[: total - sum(quota.values())]:
        quota[g] += 1
    return quota


def _take(members: list[int], levels: list[Sequence[Hashable]], k: int, min_size: int, seed: int) -> list[int]:
    """``k`` of ``members`` at random, stratified by ``levels`` (finest first) as far as
    ``train_test_split`` can honour: with too many strata for ``k``, coarser keys, then none."""
    if k <= 0 or k >= len(members):
        return members if k > 0 else []
    labels = None
    for start in range(len(levels[0])):
        candidate = _strata([lv[start:] for lv in levels], min_size)
        n_strata = len(set(candidate))
        if n_strata == 1:
            break
        if n_strata <= min(k, len(members) - k):
            labels = candidate
            break
    _, taken = train_test_split(members, test_size=k, stratify=labels, random_state=seed, shuffle=True)
    return list(taken)


def _split_off(
    items: list[int], groups: list[str], levels: list[Sequence[Hashable]], fraction: float, seed: int
) -> list[int]:
    """The ``ceil(fraction * n)`` items (as ``train_test_split`` counts) taken from ``items``.

    The count is first shared between ``groups`` (sources) in proportion, so every source
    gives its share to within one image; inside a source the draw is stratified by
    ``levels`` (lesion pattern, then nothing), parallel to ``items``.
    """
    if len(items) < 2:
        return []  # one image cannot be split: it stays in the larger side
    by_group: dict[str, list[int]] = defaultdict(list)
    for position, group in enumerate(groups):
        by_group[group].append(position)
    quotas = _quotas(math.ceil(fraction * len(items)), {g: len(p) for g, p in by_group.items()})
    # a stratum needs enough images that each side expects at least one of them
    min_size = math.ceil(1 / min(fraction, 1 - fraction))
    taken: list[int] = []
    for group, positions in by_group.items():
        picked = _take(positions, [levels[p] for p in positions], quotas[group], min_size, seed)
        taken += [items[p] for p in picked]
    return sorted(taken)


def assign_splits(
    sources: Sequence[str],
    official_splits: Sequence[str],
    patterns: Sequence[Pattern],
    *,
    mode: str = "published",
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = DEFAULT_SEED,
) -> list[str]:
    """``"train"``, ``"val"`` or ``"test"`` per image (inputs are parallel lists).

    ``published``: official test sets -> test; of the rest, ``ceil(val_fraction * n)`` -> val
    (827 / 207 for the published 1,034), shared between sources in proportion and stratified
    by lesion pattern inside each source, small pattern strata pooled per source.
    ``random``: ``ceil(test_fraction * n)`` of everything -> test, then ``val_fraction`` of the
    rest -> val, both stratified by source only; official splits are ignored.
    """
    if mode not in SPLIT_MODES:
        raise ValueError(f"split mode {mode!r} is not supported; choose one of {', '.join(SPLIT_MODES)}")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < value < 1:
            raise ValueError(f"{name} must be between 0 and 1 (exclusive), got {value!r}")
    if not len(sources) == len(official_splits) == len(patterns):
        raise ValueError(
            f"sources, official_splits and patterns must be parallel; got lengths "
            f"{len(sources)}, {len(official_splits)}, {len(patterns)}"
        )
    split = ["train"] * len(sources)
    levels: list[Sequence[Hashable]] = [(p, ()) if mode == "published" else ((),) for p in patterns]
    if mode == "published":
        test = [i for i, o in enumerate(official_splits) if o == "test"]
    else:
        everything = list(range(len(sources)))
        test = _split_off(everything, list(sources), levels, test_fraction, seed)
    for i in test:
        split[i] = "test"
    pool = [i for i, s in enumerate(split) if s != "test"]
    for i in _split_off(pool, [sources[i] for i in pool], [levels[i] for i in pool], val_fraction, seed):
        split[i] = "val"
    return split


# --------------------------------------------------------------------------- manifest I/O


def _manifest_path(path: Path | None, folder: Path) -> str:
    if path is None:
        return ""
    path = Path(os.path.abspath(path))
    return path.relative_to(folder).as_posix() if path.is_relative_to(folder) else str(path)


def write_manifest(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    """Write rows (keys :data:`COLUMNS`; mask values a path or ``None``) atomically."""
    path = Path(os.path.abspath(path))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    labelled = any(row.get(k) is not None for row in rows for k in LABEL_COLUMNS)
    writer.writerow(COLUMNS + (LABEL_COLUMNS if labelled else ()))
    for row in rows:
        paths = [_manifest_path(row[k], path.parent) for k in ("image", *MASK_KEYS)]
        labels = ["" if row.get(k) is None else row[k] for k in LABEL_COLUMNS] if labelled else []
        writer.writerow([row["source"], row["split"], *paths, *labels])
    write_atomic(path, buffer.getvalue().encode())


def _label(text: str, key: str, where: str) -> float | int | None:
    if not text.strip():
        return None
    try:
        return int(text) if key == "dme_grade" else float(text)
    except ValueError:
        raise ValueError(f"{where}: {key} {text!r} is not a number") from None


def read_manifest(path: str | os.PathLike, *, check_files: bool = True) -> list[dict[str, Any]]:
    """Manifest rows: ``source``, ``split`` (str), ``image`` (absolute Path), and
    ``EX, HE, MA, SE, OD`` (absolute Path or ``None`` when the lesion is absent).

    With ``check_files`` every referenced file must exist (one error lists the missing ones).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist; write one with `python -m training.prepare`")
    folder = Path(os.path.abspath(path)).parent
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        names = tuple(h.strip() for h in header) if header is not None else ()
        if names not in (COLUMNS, COLUMNS + LABEL_COLUMNS):
            raise ValueError(
                f"manifest {path}: header is {header}, expected {', '.join(COLUMNS)} "
                f"(optionally followed by {', '.join(LABEL_COLUMNS)})"
            )
        rows, missing = [], []
        for line, values in enumerate(reader, start=2):
            if not values:
                continue
            if len(values) != len(names):
                raise ValueError(f"manifest {path}, line {line}: {len(values)} fields, expected {len(names)}")
            row: dict[str, Any] = dict(zip(names, values))
            for key in LABEL_COLUMNS:
                if key in row:
                    row[key] = _label(row[key], key, f"manifest {path}, line {line}")
            if row["split"] not in SPLITS:
                raise ValueError(
                    f"manifest {path}, line {line}: split {row['split']!r}, expected one of {', '.join(SPLITS)}"
                )
            if not row["source"] or not row["image"]:
                raise ValueError(f"manifest {path}, line {line}: empty source or image")
            for key in ("image", *MASK_KEYS):
                value = row[key]
                row[key] = (folder / value if not os.path.isabs(value) else Path(value)) if value else None
                if check_files and row[key] is not None and not row[key].is_file():
                    missing.append(f"line {line}: {row[key]}")
            rows.append(row)
    if missing:
        more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
        listed = "\n  ".join(missing[:10])
        raise FileNotFoundError(f"manifest {path}: {len(missing)} file(s) missing:\n  {listed}{more}")
    return rows


# --------------------------------------------------------------------------- summary


def summary_table(splits: Sequence[str], sources: Sequence[str], patterns: Sequence[Pattern]) -> str:
    """Images and lesion-positive images per split x source, plus a total row per split."""
    counts: dict[tuple[str, str], np.ndarray] = defaultdict(lambda: np.zeros(1 + len(CLASSES), dtype=int))
    for split, source, pattern in zip(splits, sources, patterns):
        for key in ((split, source), (split, "all")):
            counts[key] += np.array([1, *pattern], dtype=int)
    order = {name: i for i, name in enumerate((*SOURCES, "all"))}
    keys = sorted(counts, key=lambda k: (SPLITS.index(k[0]), order.get(k[1], len(SOURCES)), k[1]))
    table = [("split", "source", "images", *CLASSES)] + [(s, src, *map(str, counts[s, src])) for s, src in keys]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    # text columns left-aligned, counts right-aligned
    return "\n".join(
        "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in table
    )


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.prepare",
        description="Parse IDRiD / DDR / TJDR folders and write one train/val/test manifest (CSV).",
    )
    p.add_argument("--idrid", type=Path, help="IDRiD 'A. Segmentation' folder (or its parent)")
    p.add_argument("--ddr", type=Path, help="DDR 'lesion_segmentation' folder (or its parent)")
    p.add_argument("--tjdr", type=Path, help="TJDR folder holding train/ and test/ (each image/ + label/)")
    p.add_argument(
        "--idrid-reading",
        type=Path,
        help="IDRiD root holding 'C. Localization' (+ 'B. Disease Grading'): "
        "photos with disc/fovea centres and DME grades, without lesion masks (for evaluation only)",
    )
    p.add_argument(
        "--idrid-normals",
        type=Path,
        metavar="DIR",
        help="IDRiD 'B. Disease Grading' folder (or its parent): add training-set photos graded retinopathy 0 and "
        "macular-edema risk 0 as lesion-free photos, split into train/val on their own (--val-fraction)",
    )
    p.add_argument(
        "--normals-from",
        choices=("train", "test"),
        default="train",
        help="which of the grading part's sets --idrid-normals draws from: train (default; split into train/val) "
        "or test (all in the test split, for scoring only: training.evaluate reports the area marked on them)",
    )
    p.add_argument(
        "--normals",
        type=int,
        default=None,
        metavar="N",
        help="how many of those photos (drawn with --seed; default all)",
    )
    p.add_argument("--synthetic", type=Path, help="a training.synthetic folder (DDR layout; source 'synthetic')")
    p.add_argument("--tjdr-palette", type=Path, help="JSON mapping EX/HE/MA/SE/background to label colours")
    p.add_argument(
        "--tjdr-tolerance",
        type=_tolerance,
        default=DEFAULT_TJDR_TOLERANCE,
        metavar="LOW,HIGH",
        help="snap off-palette label pixels within +-LOW on palette channels at 0/255 and +-HIGH on the others "
        "(default 10,40, as the original pipeline; 0,0: exact colours only)",
    )
    p.add_argument("--tjdr-masks", type=Path, help="TJDR per-lesion masks go here (default: tjdr_masks/ beside --out)")
    p.add_argument("--out", type=Path, required=True, help="manifest CSV to write")
    p.add_argument("--split", choices=SPLIT_MODES, default="published", help="published (default) or random")
    p.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION, help="share of non-test images for val")
    p.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION, help="test share (random split only)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="threads for decoding masks")
    return p


def collect_records(args: argparse.Namespace) -> list[Record]:
    """Parse every dataset named on the command line, in a fixed order."""
    records: list[Record] = []
    if args.idrid:
        records += parse_idrid(args.idrid)
    if args.ddr:
        if any((p / "synthetic.json").is_file() for p in (args.ddr, args.ddr.parent)):
            print(f"warning: {args.ddr} holds synthetic.json; use --synthetic to label it as such", file=sys.stderr)
        records += parse_ddr(args.ddr)
    if args.idrid_reading:
        records += parse_idrid_reading(args.idrid_reading)
    if args.synthetic:
        drawn = read_synthetic_landmarks(args.synthetic)
        for record in parse_ddr(args.synthetic, source="synthetic"):
            record.labels.update(drawn.get(Path(os.path.abspath(record.image)), {}))
            records.append(record)
    if args.tjdr:
        palette = load_tjdr_palette(args.tjdr_palette) if args.tjdr_palette else None
        masks_dir = args.tjdr_masks or Path(os.path.abspath(args.out)).parent / "tjdr_masks"
        records += parse_tjdr(
            args.tjdr, masks_dir, palette=palette, workers=args.workers, tolerance=args.tjdr_tolerance
        )
    order = {name: i for i, name in enumerate(SOURCES)}
    official = {"train": 0, "valid": 1, "test": 2}
    return sorted(
        records, key=lambda r: (order.get(r.source, 9), r.source, official.get(r.official_split, 9), str(r.image))
    )


def normal_rows(
    folder: Path,
    n: int | None,
    val_fraction: float,
    seed: int,
    *,
    avoid: Sequence[Record] = (),
    source_split: str = "train",
) -> list[dict[str, Any]]:
    """Manifest rows of IDRiD's lesion-free grading photos (:func:`parse_idrid_normals`): ``n``
    of them drawn with ``seed`` (all when None), ``val_fraction`` of those in ``val``, the rest
    in ``train``. Split on their own, so adding them leaves every other photo's split as it
    was. A photo whose bytes equal one of ``avoid`` (the same photo released twice) is left out.
    ``source_split`` "test": from the grading part's test set, every row in ``test``."""
    import hashlib

    def digest(path: Path) -> str:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    seen = {digest(r.image) for r in avoid}
    normals = [r for r in parse_idrid_normals(folder, source_split) if digest(r.image) not in seen]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(normals))
    chosen = [normals[i] for i in order[: n if n is not None else len(normals)]]
    n_val = round(len(chosen) * val_fraction)

    def split(i: int) -> str:
        return "test" if source_split == "test" else "val" if i < n_val else "train"

    return [
        {"source": r.source, "split": split(i), "image": r.image, **r.masks, **r.labels} for i, r in enumerate(chosen)
    ]


def _tolerance(text: str) -> tuple[int, int]:
    try:
        low, high = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (two integers, e.g. 10,40), got {text!r}") from None
    if not (0 <= low <= 127 and 0 <= high <= 127):
        raise argparse.ArgumentTypeError(f"tolerances must be in 0..127, got {text!r}")
    return low, high


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.normals is not None and not args.idrid_normals:
        parser.error("--normals needs --idrid-normals")
    if args.normals is not None and args.normals < 1:
        parser.error(f"--normals must be >= 1, got {args.normals}")
    if args.normals_from != "train" and not args.idrid_normals:
        parser.error("--normals-from needs --idrid-normals")
    if not (args.idrid or args.ddr or args.tjdr or args.synthetic or args.idrid_reading or args.idrid_normals):
        parser.error(
            "name at least one dataset: --idrid, --ddr, --tjdr, --synthetic, --idrid-reading or --idrid-normals"
        )
    if args.tjdr_palette and not args.tjdr:
        parser.error("--tjdr-palette needs --tjdr")
    records = collect_records(args)
    if not records and not args.idrid_normals:
        parser.error("the datasets given hold no images")
    patterns = lesion_presence(records, workers=args.workers) if records else []
    sources = [r.source for r in records]
    splits = assign_splits(
        sources, [r.official_split for r in records], patterns,
        mode=args.split, val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
    ) if records else []  # fmt: skip
    rows = [{"source": r.source, "split": s, "image": r.image, **r.masks, **r.labels} for r, s in zip(records, splits)]
    if args.idrid_normals:
        normals = normal_rows(
            args.idrid_normals,
            args.normals,
            args.val_fraction,
            args.seed,
            avoid=records,
            source_split=args.normals_from,
        )
        rows += normals
        splits = [*splits, *(r["split"] for r in normals)]
        sources = [*sources, *(r["source"] for r in normals)]
        patterns = [*patterns, *[(False, False, False, False)] * len(normals)]
    write_manifest(args.out, rows)
    print(summary_table(splits, sources, patterns))
    print(f"wrote {len(rows)} images to {args.out} ({args.split} split, seed {args.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
