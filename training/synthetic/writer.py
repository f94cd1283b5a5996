"""Writing a dataset in the DDR layout: images, one mask per lesion class, the landmarks the
generator drew (``landmarks.csv``) and a summary (``synthetic.json``), optionally with worker
processes. Image ``index`` depends only on ``(seed, index)``, never on N or the worker count."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from hydralanet.io.images import write_atomic

from .canvas import REFERENCE_SIZE
from .lesions import LESION_IDS
from .sample import render_sample, sample_rng

GENERATOR_VERSION = "1.0.0"
DDR_SPLITS = ("train", "valid", "test")  # the only split folders a DDR reader looks for
DEFAULT_SPLITS = {"train": 0.6, "valid": 0.15, "test": 0.25}
LANDMARKS_FILE = "landmarks.csv"  # image (relative path), disc_x, disc_y, disc_diameter, fovea_x, fovea_y

Job = tuple[str, int, int, int, str]  # (root, seed, index, size, split)


def split_counts(n: int, splits: Mapping[str, float]) -> dict[str, int]:
    """Images per split: floor of each share, remainders to the largest fractions."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not splits or any(v < 0 for v in splits.values()):
        raise ValueError(f"splits need names with non-negative fractions, got {dict(splits)}")
    total = sum(splits.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {dict(splits)} (sum {total:g})")
    exact = {k: v * n for k, v in splits.items()}
    counts = {k: int(math.floor(v)) for k, v in exact.items()}
    order = sorted(splits, key=lambda k: exact[k] - counts[k], reverse=True)
    for k in order[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def _encode(ext: str, array: np.ndarray, params: Sequence[int] = ()) -> bytes:
    ok, buf = cv2.imencode(ext, array, list(params))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {ext}")
    return buf.tobytes()


def _write_one(job: Job) -> tuple[str, dict[str, int], dict[str, Any]]:
    root, seed, index, size, split = job
    sample = render_sample(sample_rng(seed, index), size)
    stem = f"syn_s{seed}_{index:05d}"
    base = Path(root) / "lesion_segmentation" / split
    write_atomic(
        base / "image" / f"{stem}.jpg",
        _encode(".jpg", sample.image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, sample.jpeg_quality]),
    )
    for c, lesion in enumerate(LESION_IDS):
        write_atomic(base / "label" / lesion / f"{stem}.tif", _encode(".tif", sample.masks[c] * np.uint8(255)))
    landmarks = {
        "image": f"lesion_segmentation/{split}/image/{stem}.jpg",
        "disc_x": round(sample.disc_centre[0], 2),
        "disc_y": round(sample.disc_centre[1], 2),
        "disc_diameter": round(2 * sample.disc_radius, 2),
        "fovea_x": round(sample.fovea[0], 2),
        "fovea_y": round(sample.fovea[1], 2),
    }
    return split, {k: int(sample.masks[c].any()) for c, k in enumerate(LESION_IDS)}, landmarks


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already


def write_dataset(
    out: str | os.PathLike,
    n: int,
    seed: int,
    size: int = REFERENCE_SIZE,
    splits: Mapping[str, float] = DEFAULT_SPLITS,
    workers: int = 1,
) -> dict:
    """Writes ``n`` samples in the DDR layout under ``out``; returns what synthetic.json holds.

    Images 0 .. n-1 fill the splits in the order given (train first by default).
    """
    if size < 64:
        raise ValueError(f"size must be >= 64 pixels, got {size}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    unknown = sorted(set(splits) - set(DDR_SPLITS))
    if unknown:
        raise ValueError(f"unknown split name(s) {unknown}; DDR has {list(DDR_SPLITS)}")
    counts = split_counts(n, splits)
    root = Path(out)
    jobs = _plan(root, seed, size, counts)
    with_lesion, landmarks = _run(jobs, workers, counts)
    summary = {
        "generator": "training.synthetic",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "n": n,
        "size": size,
        "lesions": list(LESION_IDS),
        "splits": {k: float(v) for k, v in splits.items()},
        "counts": counts,
        "images_with_lesion": with_lesion,
        "stem_format": f"syn_s{seed}_{{index:05d}}",
    }
    _warn_about_stale_images(root, {(split, f"syn_s{seed}_{index:05d}.jpg") for _, _, index, _, split in jobs})
    _write_landmarks(root / LANDMARKS_FILE, landmarks)
    write_atomic(root / "synthetic.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def _plan(root: Path, seed: int, size: int, counts: Mapping[str, int]) -> list[Job]:
    """Makes every split's folders; one job per image, indices in split order."""
    jobs = []
    index = 0
    for split, k in counts.items():
        for lesion_dir in ["image"] + [f"label/{x}" for x in LESION_IDS]:
            (root / "lesion_segmentation" / split / lesion_dir).mkdir(parents=True, exist_ok=True)
        for _ in range(k):
            jobs.append((str(root), seed, index, size, split))
            index += 1
    return jobs


def _run(
    jobs: list[Job], workers: int, counts: Mapping[str, int]
) -> tuple[dict[str, dict[str, int]], list[dict[str, Any]]]:
    """Writes every job's image, in this process or in ``workers`` processes; returns the
    images with each lesion per split and every image's landmarks (in completion order)."""
    with_lesion = {split: dict.fromkeys(LESION_IDS, 0) for split in counts}
    bar = tqdm(total=len(jobs), desc="synthetic fundi", unit="img")
    if workers == 1:
        results = map(_write_one, jobs)
        pool = None
    else:
        # spawn, not fork: a forked child inherits OpenCV's thread pool mid-state and can hang.
        # An executor, not multiprocessing.Pool: a child that dies raises BrokenProcessPool
        # instead of being respawned forever.
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker)
        results = (f.result() for f in as_completed([pool.submit(_write_one, job) for job in jobs]))
    landmarks = []
    try:
        for split, present, where in results:
            for k, v in present.items():
                with_lesion[split][k] += v
            landmarks.append(where)
            bar.update(1)
    except BrokenProcessPool as exc:
        raise RuntimeError(f"a synthetic-data worker process died ({exc}); try --workers 1") from None
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return with_lesion, landmarks


def _warn_about_stale_images(root: Path, written: set[tuple[str, str]]) -> None:
    stale = [
        p for p in (root / "lesion_segmentation").glob("*/image/*") if (p.parent.parent.name, p.name) not in written
    ]
    if stale:
        print(
            f"warning: {len(stale)} image(s) under {root} are not part of this dataset "
            f"(e.g. {stale[0]}); a DDR reader will pick them up",
            file=sys.stderr,
        )


def _write_landmarks(path: Path, landmarks: list[dict[str, Any]]) -> None:
    """Where the generator drew each optic disc and fovea: the ground truth for landmark finding."""
    landmarks = sorted(landmarks, key=lambda r: r["image"])
    columns = list(landmarks[0]) if landmarks else ["image"]
    text = ",".join(columns) + "\n" + "".join(",".join(str(r[c]) for c in columns) + "\n" for r in landmarks)
    write_atomic(path, text.encode())
