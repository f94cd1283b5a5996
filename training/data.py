"""The training ``Dataset``: manifest rows -> (image, masks, FOV) squares the model sees.

Per sample: decode the photo and its lesion masks -> crop to the field of view, pad to a
square, resize (the very functions inference uses: :func:`hydralanet.preprocessing.crop_to_fov`;
masks by ``FovGeometry.mask_to_square``, aligned with the image and keeping small lesions) ->
CLAHE (:func:`hydralanet.preprocessing.enhance`) -> augment image and masks together
(albumentations 2.x) -> ImageNet normalisation (:func:`hydralanet.preprocessing.to_tensor`).

The decode and FOV steps are slow for 4288 x 2848 JPEGs and identical every epoch, so their
result (the CLAHE-free square and its masks) can be cached on disk.

Augmentation is a pure function of ``(seed, epoch, index)``: it does not depend on the
DataLoader's worker count or on which worker draws a sample, so an interrupted run resumed
from an epoch boundary sees exactly the samples an uninterrupted run sees.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from hydralanet.config import CLASSES, PreprocessConfig
from hydralanet.io.images import atomic_file, read_image
from hydralanet.preprocessing import crop_to_fov, enhance, to_tensor

from .config import TrainConfig

CACHE_VERSION = (
    3  # bump when what a cache file holds changes (2: uncompressed, lesion masks as bits; 3: area-resized masks)
)
_BITS = np.arange(len(CLASSES), dtype=np.uint8)


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
    lesions = geometry.mask_to_square(np.stack(planes, axis=-1)).astype(np.uint8)
    # The FOV stays nearest-neighbour: a region, not small objects, and the one inference uses.
    fov_square = geometry.field_to_square(fov).astype(np.uint8)
    return {"image": square, "masks": np.ascontiguousarray(lesions), "fov": np.ascontiguousarray(fov_square)}


def pack_square(square: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """:func:`load_square` 's result with its masks packed (:func:`pack_masks`)."""
    return {"image": square["image"], "lesions": pack_masks(square["masks"]), "fov": square["fov"]}


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """uint8 {0, 1} ``S x S x 4`` (EX, HE, MA, SE) -> uint8 ``S x S`` with lesion c in bit c.

    One plane instead of four: a quarter of the bytes to store, and one channel for the
    geometric augmentation to warp (nearest-neighbour resampling keeps the bits intact)."""
    return np.bitwise_or.reduce(masks.astype(np.uint8) << _BITS, axis=-1).astype(np.uint8)


def unpack_masks(packed: np.ndarray) -> np.ndarray:
    """uint8 ``... x S x S`` from :func:`pack_masks` -> uint8 {0, 1} ``... x 4 x S x S``."""
    return (packed[..., None, :, :] >> _BITS.reshape(-1, 1, 1)) & 1


def lesions_present(packed: np.ndarray) -> tuple[bool, ...]:
    """Which lesion classes (EX, HE, MA, SE) have at least one pixel in a packed mask."""
    bits = int(np.bitwise_or.reduce(packed, axis=None)) if packed.size else 0
    return tuple(bool(bits >> c & 1) for c in range(len(CLASSES)))


class SquareCache:
    """``.npz`` files of :func:`load_square` results in one folder: the image, the lesion
    masks packed into one bit plane (:func:`pack_masks`) and the FOV, uncompressed (reading
    a compressed file took longer than the augmentation: 23 ms per 1024 px square).

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
        """:func:`load_square` 's result, from the cache when it holds the row."""
        packed = self.load_packed(row, preprocessing)
        return {
            "image": packed["image"],
            "masks": np.ascontiguousarray(unpack_masks(packed["lesions"]).transpose(1, 2, 0)),
            "fov": packed["fov"],
        }

    def load_packed(self, row: dict[str, Any], preprocessing: PreprocessConfig) -> dict[str, np.ndarray]:
        """``image`` S x S x 3, ``lesions`` S x S (:func:`pack_masks`), ``fov`` S x S."""
        path = self.path(row, preprocessing)
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as data:
                    return {name: data[name] for name in ("image", "lesions", "fov")}
            except (OSError, ValueError, KeyError, EOFError):
                pass  # a damaged file (disk full, say): rebuild it below
        arrays = pack_square(load_square(row, preprocessing))
        with atomic_file(path) as fh:
            np.savez(fh, **arrays)
        return arrays


def open_cache(config: TrainConfig, run: Path) -> SquareCache | None:
    """The square cache of a run: ``cache_dir``, else ``run/cache``; None when it is "off"."""
    if config.cache_dir == "off":
        return None
    return SquareCache(Path(config.cache_dir) if config.cache_dir else run / "cache")


# --------------------------------------------------------------------------- augmentation


def crop_window(config: TrainConfig) -> int:
    """Side of the window cut before the geometric augmentation when training on crops:
    1.5 x ``crop_size`` (rounded up to 32, at most the square), so that a rotation or a
    shrink still fills most of the centre crop with image."""
    return min(config.preprocessing.input_size, 32 * math.ceil(1.5 * config.crop_size / 32))


def brightest_point(image: np.ndarray) -> tuple[int, int]:
    """(x, y) of the brightest broad region of an RGB square: the optic disc in a fundus photo.
    Mean of the channels (green CLAHE leaves red and blue alone), 64 px thumbnail, blurred."""
    h, w = image.shape[:2]
    thumb = cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32).mean(axis=2)
    thumb = cv2.GaussianBlur(thumb, (0, 0), 2.0)
    y, x = np.unravel_index(int(np.argmax(thumb)), thumb.shape)
    return int((x + 0.5) * w / 64), int((y + 0.5) * h / 64)


class CropThenWarp:
    """Training crops: cut a :func:`crop_window` from the square, then flip and warp it
    (``warp``, which ends with the centre crop). The window is centred on the brightest
    region (the optic disc) with probability ``disc_p``; on one of the sample's hard negatives
    (``points``, (x, y) in the square) with probability ``negative_p`` when it has some;
    otherwise on a random lesion pixel when the sample has one (up to half of all windows,
    less those two shares), else anywhere. ``balanced``: that lesion pixel is drawn from a
    lesion kind chosen uniformly among those the sample shows, so that small kinds
    (microaneurysms, soft exudates) are centred as often as large ones.
    Called like an albumentations ``Compose`` (``set_random_seed``, ``__call__(image=, mask=)``);
    the mask's channel 0 holds the packed lesion bits."""

    def __init__(
        self, window: int, warp: A.Compose, disc_p: float = 0.0, negative_p: float = 0.0, balanced: bool = False
    ) -> None:
        self.window, self.warp, self.disc_p, self.negative_p = window, warp, disc_p, negative_p
        self.balanced = balanced
        self.rng = np.random.default_rng(0)

    @property
    def strict(self) -> bool:
        return self.warp.strict

    def set_random_seed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.warp.set_random_seed(seed)

    def origin(self, image: np.ndarray, lesions: np.ndarray, points: list | None = None) -> tuple[int, int]:
        """Top-left (x, y) of this sample's window."""
        side = image.shape[0]
        room = side - self.window
        if room <= 0:
            return 0, 0
        u = self.rng.random()
        if u < self.disc_p:
            centre = brightest_point(image)
        elif u < self.disc_p + self.negative_p and points:
            x, y = points[int(self.rng.integers(0, len(points)))]
            centre = int(round(x)), int(round(y))
        elif u < self.disc_p + (1 - self.disc_p) / 2 and lesions.any():
            if self.balanced:
                kinds = [c for c, present in enumerate(lesions_present(lesions)) if present]
                lesions = lesions & (1 << kinds[int(self.rng.integers(0, len(kinds)))])
            ys, xs = np.nonzero(lesions)
            i = int(self.rng.integers(0, len(ys)))
            centre = int(xs[i]), int(ys[i])
        else:
            return int(self.rng.integers(0, room + 1)), int(self.rng.integers(0, room + 1))
        jitter = self.rng.integers(-self.window // 4, self.window // 4 + 1, size=2)
        x0 = int(np.clip(centre[0] - self.window // 2 + jitter[0], 0, room))
        y0 = int(np.clip(centre[1] - self.window // 2 + jitter[1], 0, room))
        return x0, y0

    def __call__(self, *, image: np.ndarray, mask: np.ndarray, points: list | None = None) -> dict[str, np.ndarray]:
        x0, y0 = self.origin(image, mask[..., 0], points)
        sl = (slice(y0, y0 + self.window), slice(x0, x0 + self.window))
        return self.warp(image=np.ascontiguousarray(image[sl]), mask=np.ascontiguousarray(mask[sl]))


def build_augmentation(config: TrainConfig) -> A.Compose | CropThenWarp:
    """Flips + affine (docs/training.md#the-published-recipe) on the image and the masks together.

    The mask is ``S x S x 2``: the packed lesion bits (:func:`pack_masks`) and the FOV.
    With ``crop_size``, a :func:`crop_window` is cut first (:class:`CropThenWarp`: on a lesion
    half the time, on the optic disc with ``disc_crop_p``), then flipped and warped, then
    centre-cropped: the warp works on 2.25x the crop's pixels instead of the whole square
    (3x faster at 1024 / 384).
    ``strict=True`` turns a misspelt argument into an error instead of albumentations' warning.
    Out-of-image pixels are black in the image and 0 (background, outside the FOV) in the masks.
    """
    geometric = [
        A.HorizontalFlip(p=config.hflip_p),
        A.VerticalFlip(p=config.vflip_p),
        A.Affine(
            translate_percent=(-config.translate, config.translate),
            scale=tuple(config.scale),
            rotate=(-config.rotate, config.rotate),
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,  # packed bits and the FOV stay exact
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=0,
            p=config.affine_p,
        ),
    ]
    if not config.crop_size:
        return A.Compose(geometric, strict=True)
    size = config.crop_size
    warp = A.Compose([*geometric, A.CenterCrop(height=size, width=size)], strict=True)
    return CropThenWarp(
        crop_window(config), warp, config.disc_crop_p, config.hard_negative_p, balanced=config.balanced_crops
    )


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

    ``__getitem__`` returns ``image`` float32 ``3 x S x S`` (normalised), ``masks`` uint8
    {0, 1} ``4 x S x S`` (EX, HE, MA, SE), ``valid`` uint8 {0, 1} ``1 x S x S`` (the field
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

    def load_packed(self, index: int) -> dict[str, np.ndarray]:
        """Sample ``index`` 's square before CLAHE and augmentation (:func:`pack_square`)."""
        row = self.rows[index]
        if self.cache is not None:
            return self.cache.load_packed(row, self.preprocessing)
        return pack_square(load_square(row, self.preprocessing))

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        square = self.load_packed(index)
        p = self.preprocessing
        image = square["image"]
        if self.photometric is not None:
            # Its own seed stream, so adding colour jitter leaves the geometric draws unchanged.
            self.photometric.set_random_seed(sample_seed(self.seed + 1, self.epoch, index))
            image = self.photometric(image=image)["image"]
        image = enhance(image, p)
        mask = np.stack([square["lesions"], square["fov"]], axis=-1)
        if self.augmentation is not None:
            self.augmentation.set_random_seed(sample_seed(self.seed, self.epoch, index))
            points = row.get("hard_negatives")
            if points and isinstance(self.augmentation, CropThenWarp):
                out = self.augmentation(image=image, mask=mask, points=points)
            else:
                out = self.augmentation(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return {
            "image": to_tensor(image, p),
            # uint8: a quarter of float32's bytes through the loader's shared memory and pinning
            "masks": torch.from_numpy(unpack_masks(mask[..., 0])),
            "valid": torch.from_numpy(np.ascontiguousarray(mask[None, ..., 1])),
            "source": str(row.get("source", "")),
        }


def with_hard_negatives(
    rows: list[dict[str, Any]], path: str | os.PathLike | None, input_size: int, log=print
) -> list[dict[str, Any]]:
    """``rows`` with ``hard_negatives`` (a list of (x, y) in the model's square) from a file of
    :mod:`training.mine`; an image the file does not name gets none. No ``path``: ``rows``."""
    if not path:
        return rows
    try:
        data = json.loads(Path(path).read_text())
        points, size = data["images"], int(data["input_size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"hard_negatives {path}: not a file of `python -m training.mine` ({exc})") from None
    if size != input_size:
        raise ValueError(f"hard_negatives {path} were mined on {size} px squares; this run trains on {input_size} px")
    out = [{**row, "hard_negatives": points.get(str(row["image"]), [])} for row in rows]
    with_some = sum(bool(r["hard_negatives"]) for r in out)
    log(f"hard negatives: {sum(len(r['hard_negatives']) for r in out)} points on {with_some} of {len(out)} images")
    return out


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
