"""Preprocessing shared by training and inference (docs/architecture.md#preprocessing): one implementation, no skew.

Pipeline: RGB uint8 -> field of view (FOV) -> crop to the FOV, pad to a square ->
resize to ``input_size`` -> CLAHE -> ImageNet normalisation. :class:`FovGeometry` keeps the
crop/pad/resize so that a prediction maps back onto the original pixels exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .config import PreprocessConfig

_FOV_WORK_SIDE = 512  # FOV detection runs on a copy this large: the disc is smooth at that scale
_BLANK_LEVEL = 10  # a robust maximum below this (of 255) means there is no picture at all


class BlankImageError(ValueError):
    """The image has no visible field of view (all black or nearly so)."""


@dataclass(frozen=True)
class FovGeometry:
    """Where the FOV square came from: original ``(height, width)``, the crop box
    ``(y0, y1, x0, x1)`` in original pixels, and the square's side before resizing; the crop
    sits at ``(pad_top, pad_left)`` inside the square. ``size`` is the model input side.
    ``crop`` is how the box was chosen (:data:`hydralanet.config.CROP_MODES`)."""

    original_shape: tuple[int, int]
    box: tuple[int, int, int, int]
    side: int
    pad_top: int
    pad_left: int
    size: int
    crop: str = "fov"

    def to_square(self, array: np.ndarray, *, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """Original-resolution ``H x W [x C]`` -> model square ``size x size [x C]``.

        For lesion masks use :meth:`mask_to_square`.
        """
        y0, y1, x0, x1 = self.box
        crop = array[y0:y1, x0:x1]
        square = np.zeros((self.side, self.side) + array.shape[2:], dtype=array.dtype)
        square[self.pad_top : self.pad_top + (y1 - y0), self.pad_left : self.pad_left + (x1 - x0)] = crop
        if self.side == self.size:
            return square
        if interpolation == cv2.INTER_LINEAR and self.size < self.side and self.crop == "fov":
            # Anti-aliased downscale: tiny MA survive it better. The centre square keeps plain
            # bilinear: that is how the original code resized its training photos.
            interpolation = cv2.INTER_AREA
        return cv2.resize(square, (self.size, self.size), interpolation=interpolation)

    def field_to_square(self, fov: np.ndarray) -> np.ndarray:
        """The field-of-view mask (``H x W`` bool, original resolution) -> bool ``size x size``,
        nearest-neighbour: a region, not small objects. Outside the photo is outside the field."""
        return self.to_square(np.asarray(fov, dtype=bool).view(np.uint8), interpolation=cv2.INTER_NEAREST) > 0

    def mask_to_square(self, masks: np.ndarray) -> np.ndarray:
        """Binary masks ``H x W [x C]`` -> bool ``size x size [x C]`` on the image's pixel grid.

        A square pixel is lesion when at least half of it is (area fraction, ``INTER_AREA``: the
        same centre-aligned grid as the image's resize), and a lesion that would vanish that way
        keeps its most covered pixel. Nearest-neighbour sampling
        shifts masks by about half a square pixel at 3.4:1 and drops small microaneurysms
        (docs/architecture.md#resizing-and-masks).
        """
        flat = masks.reshape(masks.shape[:2] + (-1,)).astype(np.float32)
        area = self.to_square(flat, interpolation=cv2.INTER_AREA if self.size < self.side else cv2.INTER_LINEAR)
        area = area.reshape(area.shape[:2] + (-1,))
        out = area >= 0.5
        for c in range(area.shape[-1]):
            touched = (area[..., c] > 0).astype(np.uint8)
            n, labels = cv2.connectedComponents(touched, connectivity=8)
            if n <= 1:
                continue
            kept = np.zeros(n, bool)
            kept[np.unique(labels[out[..., c]])] = True
            kept[0] = True
            lost = np.flatnonzero(~kept)
            if lost.size:
                # The most covered pixel of each lost component: sort by (label, coverage).
                flat_labels, flat_area = labels.ravel(), area[..., c].ravel()
                order = np.lexsort((flat_area, flat_labels))
                last = np.searchsorted(flat_labels[order], lost, side="right") - 1
                ys, xs = np.unravel_index(order[last], labels.shape)
                out[ys, xs, c] = True
        return out.reshape(out.shape[:2] + masks.shape[2:])

    def to_original(self, maps: np.ndarray) -> np.ndarray:
        """Model-square maps ``C x size x size`` (float) -> ``C x H x W`` at original pixels.

        Bilinear resize of the square back to its side, un-pad, un-crop; outside the crop box
        the result is 0.
        """
        y0, y1, x0, x1 = self.box
        h, w = self.original_shape
        out = np.zeros((maps.shape[0], h, w), dtype=np.float32)
        for c, plane in enumerate(maps):
            out[c, y0:y1, x0:x1] = self.in_box(plane)
        return out

    def region(self, maps: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
        """``to_original(maps)[:, top:bottom, left:right]`` without the rest of the photo: float32
        ``C x (bottom - top) x (right - left)``, 0 outside the crop box. The same bilinear
        weights as OpenCV's resize, summed in another order: values agree to ~1e-6."""
        y0, y1, x0, x1 = self.box
        out = np.zeros((maps.shape[0], bottom - top, right - left), dtype=np.float32)
        top_in, bottom_in, left_in, right_in = max(top, y0), min(bottom, y1), max(left, x0), min(right, x1)
        if top_in >= bottom_in or left_in >= right_in:
            return out
        # Rows and columns of the square resized to ``side`` (where in_box cuts the box from).
        rows = np.arange(top_in, bottom_in) - y0 + self.pad_top
        cols = np.arange(left_in, right_in) - x0 + self.pad_left
        if self.side == self.size:
            inside = maps[:, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        else:
            (r0, r1, wr), (c0, c1, wc) = (
                _linear_taps(rows, self.size, self.side),
                _linear_taps(cols, self.size, self.side),
            )
            lo, hi = int(r0[0]), int(r1[-1]) + 1  # only the square's rows the region reads
            block = np.asarray(maps[:, lo:hi], dtype=np.float32)
            across = block[:, :, c0] * (np.float32(1) - wc) + block[:, :, c1] * wc
            inside = across[:, r0 - lo] * (np.float32(1) - wr)[:, None] + across[:, r1 - lo] * wr[:, None]
        out[:, top_in - top : bottom_in - top, left_in - left : right_in - left] = inside
        return out

    def in_box(self, plane: np.ndarray) -> np.ndarray:
        """One model-square map ``size x size`` -> float32 at original pixels inside ``box``
        (``(y1 - y0) x (x1 - x0)``): the part of :meth:`to_original` that is not 0."""
        y0, y1, x0, x1 = self.box
        plane = np.asarray(plane, dtype=np.float32)
        if self.side != self.size:
            plane = cv2.resize(plane, (self.side, self.side), interpolation=cv2.INTER_LINEAR)
        return plane[self.pad_top : self.pad_top + (y1 - y0), self.pad_left : self.pad_left + (x1 - x0)]


def _linear_taps(positions: np.ndarray, n_src: int, n_dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For destination ``positions`` of a bilinear resize from ``n_src`` to ``n_dst`` samples
    (OpenCV's convention: pixel centres aligned, edges clamped): the two source indices and
    the float32 weight of the second."""
    at = ((positions + 0.5) * (n_src / n_dst) - 0.5).astype(np.float32)
    first = np.floor(at).astype(np.int64)
    weight = at - first.astype(np.float32)
    weight[first < 0] = 0
    first[first < 0] = 0
    weight[first >= n_src - 1] = 0
    first[first >= n_src - 1] = n_src - 1
    return first, np.minimum(first + 1, n_src - 1), weight


def fov_mask(image: np.ndarray, *, threshold: float = 0.1) -> np.ndarray:
    """Boolean ``H x W`` field-of-view mask of an RGB uint8 fundus photo.

    Blurred max(R, G) above ``threshold`` x its 99th percentile, largest connected component,
    holes filled. Raises :class:`BlankImageError` when the image is (nearly) all black.
    """
    h, w = image.shape[:2]
    scale = min(1.0, _FOV_WORK_SIDE / max(h, w))
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    # Red and green carry the fundus; blue is dark and noisy in most cameras.
    level = cv2.GaussianBlur(np.maximum(small[..., 0], small[..., 1]), (0, 0), 1.0)
    top = float(np.percentile(level, 99))
    if top < _BLANK_LEVEL:
        raise BlankImageError("image is blank (no bright field of view found; is it all black?)")
    inside = (level > max(threshold * top, 4.0)).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(inside, connectivity=8)
    if n <= 1:
        raise BlankImageError("image is blank (no bright field of view found; is it all black?)")
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    component = (labels == largest).astype(np.uint8)
    # Fill holes (dark lesions or a dark fovea inside the disc must stay inside the FOV).
    contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(component)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    if scale < 1.0:
        filled = cv2.resize(filled.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) >= 0.5
    return filled.astype(bool)


def fov_geometry(fov: np.ndarray, size: int) -> FovGeometry:
    """Crop box of the FOV mask and the square it is centred in."""
    rows, cols = np.flatnonzero(fov.any(axis=1)), np.flatnonzero(fov.any(axis=0))  # 100x faster than np.nonzero
    if rows.size == 0:
        raise BlankImageError("image is blank (empty field of view)")
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    side = max(y1 - y0, x1 - x0)
    return FovGeometry(
        original_shape=(int(fov.shape[0]), int(fov.shape[1])),
        box=(y0, y1, x0, x1),
        side=side,
        pad_top=(side - (y1 - y0)) // 2,
        pad_left=(side - (x1 - x0)) // 2,
        size=int(size),
    )


def centre_square_geometry(shape: tuple[int, int], size: int) -> FovGeometry:
    """The photo's centred ``min(H, W)`` square, as the original HydraLA-Net code cropped its
    training photos (on IDRiD's 4288 x 2848 photos it cuts off the sides of the field of view)."""
    h, w = int(shape[0]), int(shape[1])
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    return FovGeometry((h, w), (y0, y0 + side, x0, x0 + side), side, 0, 0, int(size), crop="centre_square")


def square_geometry(fov: np.ndarray, config: PreprocessConfig) -> FovGeometry:
    """The square the model reads, by ``config.crop``: ``fov`` = the FOV's bounding box padded
    to a square, ``centre_square`` = the photo's centred square."""
    if config.crop == "centre_square":
        return centre_square_geometry(fov.shape, config.input_size)
    return fov_geometry(fov, config.input_size)


def apply_clahe(image: np.ndarray, mode: str = "green", *, clip_limit: float = 1.5, tile_grid: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation on RGB uint8 ``H x W x 3``.

    ``green``: green channel only (the published choice: lesions contrast best there);
    ``lab``: the L channel of CIELAB; ``casp``: green at ``clip_limit``, red at half of it
    (red saturates), blue untouched (noisy); ``off``: unchanged copy.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"apply_clahe expects RGB uint8 H x W x 3, got {image.dtype} {image.shape}")
    if mode == "off":
        return image.copy()
    clahe = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tile_grid), int(tile_grid)))
    out = image.copy()
    if mode == "green":
        out[..., 1] = clahe.apply(np.ascontiguousarray(image[..., 1]))
    elif mode == "lab":
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
        lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
        out = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    elif mode == "casp":
        out[..., 1] = clahe.apply(np.ascontiguousarray(image[..., 1]))
        mild = cv2.createCLAHE(clipLimit=float(clip_limit) / 2, tileGridSize=(int(tile_grid), int(tile_grid)))
        out[..., 0] = mild.apply(np.ascontiguousarray(image[..., 0]))
    else:
        raise ValueError(f"clahe={mode!r} is not supported; choose one of green, lab, casp, off")
    return out


def normalize(image: np.ndarray, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> torch.Tensor:
    """RGB uint8 ``H x W x 3`` -> float32 tensor ``3 x H x W``, ImageNet-normalised."""
    arr = image.astype(np.float32) * (1.0 / 255.0)
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


@dataclass
class Preprocessed:
    """Result of :func:`preprocess`: ``tensor`` 3 x S x S (normalised), ``enhanced`` the
    S x S x 3 uint8 image the model sees (after CLAHE), ``fov`` the H x W bool mask at the
    original resolution, and ``geometry`` to map back."""

    tensor: torch.Tensor
    enhanced: np.ndarray
    fov: np.ndarray
    geometry: FovGeometry


def crop_to_fov(image: np.ndarray, config: PreprocessConfig) -> tuple[np.ndarray, np.ndarray, FovGeometry]:
    """Steps 2-3: ``(square uint8 S x S x 3, fov H x W bool, geometry)``. Training applies
    ``geometry.mask_to_square(masks)`` to its lesion masks.

    With ``crop="centre_square"`` the returned ``fov`` is the part of the field of view inside
    the square: what lies outside is not read, and statistics are of what was read."""
    fov = fov_mask(image, threshold=config.fov_threshold)
    geometry = square_geometry(fov, config)
    if geometry.crop != "fov":
        y0, y1, x0, x1 = geometry.box
        inside = np.zeros_like(fov)
        inside[y0:y1, x0:x1] = True
        fov &= inside
    return geometry.to_square(image), fov, geometry


def enhance(square: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Step 4: the checkpoint's CLAHE on the uint8 square."""
    return apply_clahe(square, config.clahe, clip_limit=config.clip_limit, tile_grid=config.tile_grid)


def to_tensor(enhanced: np.ndarray, config: PreprocessConfig) -> torch.Tensor:
    """Step 5: the checkpoint's normalisation, HWC uint8 -> CHW float32."""
    return normalize(enhanced, config.mean, config.std)


def preprocess(image: np.ndarray, config: PreprocessConfig | None = None) -> Preprocessed:
    """The whole of docs/architecture.md#preprocessing for one RGB uint8 image (steps 2-5). Training calls the same
    three steps (:func:`crop_to_fov`, :func:`enhance`, :func:`to_tensor`), with its
    augmentation between the last two."""
    config = config or PreprocessConfig()
    square, fov, geometry = crop_to_fov(image, config)
    enhanced = enhance(square, config)
    return Preprocessed(to_tensor(enhanced, config), enhanced, fov, geometry)
