"""The training ``Dataset``: manifest rows -> (image, masks, FOV) squares the model sees.

Per sample: decode the photo and its lesion masks -> crop to the field of view, pad to a
square, resize (the very functions inference uses: :func:`hydralanet.preprocessing.crop_to_fov`
and ``FovGeometry.to_square``) -> CLAHE (:func:`hydralanet.preprocessing.apply_clahe`) ->
augment image and masks together (albumentations 2.x) -> ImageNet normalisation.

The decode and FOV steps are slow for 4288 x 2848 JPEGs and identical every epoch, so their
result (the CLAHE-free square and its masks) can be cached on disk.

Augmentation is a pure function of ``(seed, epoch, index)``: it does not depend on the
DataLoader's worker count or on which worker draws a sample, so an interrupted run resumed
from an epoch boundary sees exactly the samples an uninterrupted run sees.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from hydralanet.config import CLASSES, PreprocessConfig
from hydralanet.io import read_image
from hydralanet.preprocessing import apply_clahe, crop_to_fov, normalize

from .config import TrainConfig

CACHE_VERSION = 1  # bump when what a cache file holds changes


def read_mask(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A lesion mask file -> bool ``H x W``: non-zero is lesion (the red channel of RGB files).

    ``shape`` is the photo's ``(height, width)``; a mask of another size is an error, since
    resizing it would misplace lesions.
    """
    with Image.open(path) as pil:
        pil = ImageOps.exif_transpose(pil)  # read_image honours EXIF orientation; masks must match
        if pil.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "P", "PA"):
            # IDRiD masks are RGB with the lesion in red; palette images are read by colour too.
            mask = np.asarray(pil.convert("RGB"))[..., 0] > 0
        elif pil.mode in ("LA", "La"):
            mask = np.asarray(pil)[..., 0] > 0
        else:  # 1, L, I, I;16*, F: one channel
            mask = np.asarray(pil) > 0
    if shape is not None and mask.shape != tuple(shape):
        raise ValueError(f"{path}: mask is {mask.shape[1]} x {mask.shape[0]} but its image is {shape[1]} x {shape[0]}")
    return mask


# --------------------------------------------------------------------------- squares + cache


def load_square(row: dict[str, Any], preprocessing: PreprocessConfig) -> dict[str, np.ndarray]:
    """Decode one manifest row into the model's square, before CLAHE.

    Returns ``image`` uint8 ``S x S x 3``, ``masks`` uint8 {0, 1} ``S x S x 4`` (EX, HE, MA, SE;
    zeros for a lesion without a mask file) and ``fov`` uint8 {0, 1} ``S x S``.
    """
    image = read_image(row["image"])
    square, fov, geometry = crop_to_fov(image, preprocessing)
    planes = [
        read_mask(row[c], image.shape[:2]) if row.get(c) else np.zeros(image.shape[:2], dtype=bool) for c in CLASSES
    ]
    stack = np.stack(planes + [fov], axis=-1).astype(np.uint8)
    stack = geometry.to_square(stack, interpolation=cv2.INTER_NEAREST) > 0  # binarised after the resize
    stack = stack.astype(np.uint8)
    return {"image": square, "masks": np.ascontiguousarray(stack[..., :4]), "fov": np.ascontiguousarray(stack[..., 4])}


class SquareCache:
    """``.npz`` files of :func:`load_square` results in one folder.

    The key covers every input file's path, mtime and size plus the settings that shape the
    square, so an edited mask or a new input size misses instead of serving stale data.
    Files are written to a temporary name and renamed, so concurrent workers or ranks never
    read half a file.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def key(self, row: dict[str, Any], preprocessing: PreprocessConfig) -> str:
        def stamp(path: Any) -> Any:
            if not path:
                return None
            st = os.stat(path)
            return [str(Path(path).resolve()), st.st_mtime_ns, st.st_size]

        payload = {
            "version": CACHE_VERSION,
            "image": stamp(row["image"]),
            "masks": {c: stamp(row.get(c)) for c in CLASSES},
            "input_size": preprocessing.input_size,
            "fov_threshold": preprocessing.fov_threshold,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def path(self, row: dict[str, Any], preprocessing: PreprocessConfig) -> Path:
        return self.folder / f"{Path(row['image']).stem}-{self.key(row, preprocessing)[:20]}.npz"

    def load(self, row: dict[str, Any], preprocessing: PreprocessConfig) -> dict[str, np.ndarray]:
        path = self.path(row, preprocessing)
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as data:
                    return {name: data[name] for name in ("image", "masks", "fov")}
            except (OSError, ValueError, KeyError, EOFError):
                pass  # a damaged file (disk full, say): rebuild it below
        arrays = load_square(row, preprocessing)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(fh, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return arrays


# --------------------------------------------------------------------------- augmentation


def build_augmentation(config: TrainConfig) -> A.Compose:
    """Flips + affine (DESIGN §6) on the image and the stacked masks together.

    ``strict=True`` turns a misspelt argument into an error instead of albumentations' warning.
    Out-of-image pixels are black in the image and 0 (background, outside the FOV) in the masks.
    """
    return A.Compose(
        [
            A.HorizontalFlip(p=config.hflip_p),
            A.VerticalFlip(p=config.vflip_p),
            A.Affine(
                translate_percent=(-config.translate, config.translate),
                scale=tuple(config.scale),
                rotate=(-config.rotate, config.rotate),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,  # masks stay {0, 1}
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=config.affine_p,
            ),
            *_crop(config.crop_size),
        ],
        strict=True,
    )


def _crop(size: int) -> list[A.BasicTransform]:
    if not size:
        return []
    return [
        A.OneOf(
            [
                # Channel 4 of the stacked masks is the FOV: ignore it so "non-empty" means a lesion.
                A.CropNonEmptyMaskIfExists(height=size, width=size, ignore_channels=[4]),
                A.RandomCrop(height=size, width=size),
            ],
            p=1.0,
        )
    ]


def build_photometric(config: TrainConfig) -> A.Compose | None:
    """Colour jitter on the uint8 RGB square before CLAHE (``colour_p`` = 0: none)."""
    if config.colour_p <= 0:
        return None
    p = config.colour_p
    return A.Compose(
        [
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=p),
            A.RandomGamma(gamma_limit=(75, 135), p=p),
            A.HueSaturationValue(hue_shift_limit=8, sat_shift_limit=20, val_shift_limit=0, p=p),
        ],
        strict=True,
    )


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """An independent 32-bit seed per (run seed, epoch, sample)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


# --------------------------------------------------------------------------- dataset


class LesionDataset(Dataset):
    """Manifest rows of one split as training samples.

    ``__getitem__`` returns ``image`` float32 ``3 x S x S`` (normalised), ``masks`` float32
    {0, 1} ``4 x S x S`` (EX, HE, MA, SE), ``valid`` float32 {0, 1} ``1 x S x S`` (the field
    of view, moved with the augmentation) and ``source`` (the dataset name).
    """

    def __init__(
        self,
        rows: list[dict[str, Any]],
        preprocessing: PreprocessConfig,
        *,
        augmentation: A.Compose | None = None,
        cache: SquareCache | None = None,
        photometric: A.Compose | None = None,
        seed: int = 0,
    ) -> None:
        self.rows = list(rows)
        self.photometric = photometric
        self.preprocessing = preprocessing
        self.augmentation = augmentation
        self.cache = cache
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch's augmentations. DataLoader workers get a fresh copy of the dataset
        per epoch (``persistent_workers=False``), so call this before iterating."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        square = self.cache.load(row, self.preprocessing) if self.cache else load_square(row, self.preprocessing)
        p = self.preprocessing
        image = square["image"]
        if self.photometric is not None:
            # Its own seed stream, so adding colour jitter leaves the geometric draws unchanged.
            self.photometric.set_random_seed(sample_seed(self.seed + 1, self.epoch, index))
            image = self.photometric(image=image)["image"]
        image = apply_clahe(image, p.clahe, clip_limit=p.clip_limit, tile_grid=p.tile_grid)
        masks = np.concatenate([square["masks"], square["fov"][..., None]], axis=-1)
        if self.augmentation is not None:
            self.augmentation.set_random_seed(sample_seed(self.seed, self.epoch, index))
            out = self.augmentation(image=image, mask=masks)
            image, masks = out["image"], out["mask"]
        masks = torch.from_numpy(np.ascontiguousarray((masks > 0).transpose(2, 0, 1))).float()
        return {
            "image": normalize(image, p.mean, p.std),
            "masks": masks[:4],
            "valid": masks[4:],
            "source": str(row.get("source", "")),
        }


def split_rows(rows: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    """The manifest rows of one split; an empty split is an error naming the splits present."""
    chosen = [r for r in rows if r.get("split") == split]
    if not chosen:
        present = sorted({str(r.get("split")) for r in rows})
        raise ValueError(f"the manifest has no rows in split {split!r}; splits present: {', '.join(present) or 'none'}")
    return chosen


def worker_init_fn(worker_id: int) -> None:
    """Seed a DataLoader worker's global RNGs from the loader's generator (torch already did
    its own). OpenCV's thread pool is left alone: resizing a pool inherited through fork()
    (``cv2.setNumThreads`` here) deadlocked the worker once the parent had trained in-process."""
    import random

    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
