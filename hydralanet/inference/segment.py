"""Inference (docs/architecture.md#inference): the model runs once per (image, preprocessing setting); masks,
statistics and overlays come afterwards from the cached probabilities, without re-running.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from ..config import CLASSES, PreprocessConfig, format_threshold, validate_thresholds
from ..preprocessing import FovGeometry, Preprocessed, enhance, preprocess, to_tensor
from .forward import run_model
from .loaded import LoadedModel
from .tiling import ALIGN, native_input_size, run_tiled


@dataclass
class Prediction:
    """Per-image result at the original resolution and orientation.

    ``probabilities``: float32 ``4 x H x W`` in [0, 1] (EX, HE, MA, SE), 0 outside the FOV;
    ``fov``: bool ``H x W``; ``image``: the RGB uint8 input ``H x W x 3``; ``enhanced``: the
    ``S x S x 3`` uint8 square the model saw (after CLAHE); ``settings``: how it was made.
    """

    probabilities: np.ndarray
    fov: np.ndarray
    image: np.ndarray
    enhanced: np.ndarray
    geometry: FovGeometry
    settings: dict[str, Any] = field(default_factory=dict)

    def masks(self, thresholds: dict[str, float] | None = None) -> np.ndarray:
        """Binary masks ``4 x H x W`` bool for per-class thresholds (missing ones: default)."""
        return threshold_masks(self.probabilities, thresholds, self.fov)

    def statistics(self, thresholds: dict[str, float] | None = None) -> list[dict[str, Any]]:
        thresholds = validate_thresholds(thresholds)
        return lesion_statistics(self.masks(thresholds), self.fov, thresholds)


@dataclass
class SquarePrediction:
    """A prediction kept as the model made it: probabilities ``4 x S x S`` float32 on the model's
    square (``square``) with the ``geometry`` that maps them to the photo. What the web app
    caches per session: 17 MB at S = 1024 where a 4288 x 2848 photo's full-resolution maps
    take 195 MB. Full resolution comes on demand, with exactly the numbers of
    :class:`Prediction` (:meth:`full`, :meth:`masks`). The FOV mask is kept packed 8 pixels a
    byte (``fov_bits``; :attr:`fov` unpacks it); other fields as :class:`Prediction`. Make one
    with :meth:`make`."""

    square: np.ndarray
    fov_bits: np.ndarray
    image: np.ndarray
    enhanced: np.ndarray
    geometry: FovGeometry
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(cls, square, fov, image, enhanced, geometry, settings) -> SquarePrediction:
        return cls(square, np.packbits(fov), image, enhanced, geometry, settings)

    @property
    def fov(self) -> np.ndarray:
        """The field of view, bool ``H x W``."""
        h, w = self.image.shape[:2]
        return np.unpackbits(self.fov_bits, count=h * w).reshape(h, w).view(bool)

    @property
    def nbytes(self) -> int:
        return self.square.nbytes + self.fov_bits.nbytes + self.image.nbytes + self.enhanced.nbytes

    def probabilities(self) -> np.ndarray:
        """``4 x H x W`` float32 at the photo's pixels, 0 outside the FOV (as ``Prediction``)."""
        fov = self.fov
        full = self.geometry.to_original(self.square)
        full *= fov[None]  # nothing outside the field of view is a lesion
        return full

    def full(self) -> Prediction:
        fov = self.fov
        probabilities = self.geometry.to_original(self.square)
        probabilities *= fov[None]  # nothing outside the field of view is a lesion
        return Prediction(probabilities, fov, self.image, self.enhanced, self.geometry, self.settings)

    def masks(self, thresholds: dict[str, float] | None = None) -> np.ndarray:
        """``4 x H x W`` bool, equal to ``full().masks(thresholds)``, one class at a time: the
        float map of one class inside the crop box is all that is held at full resolution."""
        return square_masks(self.square, self.geometry, self.fov, thresholds)

    def masks_in(self, thresholds: dict[str, float] | None, top: int, bottom: int, left: int, right: int) -> np.ndarray:
        """``masks(thresholds)[:, top:bottom, left:right]`` (``4 x h x w`` bool) without the rest of
        the photo: what a zoomed view draws. Probabilities agree with :meth:`masks`'s to ~1e-6
        (:meth:`FovGeometry.region`), so only a pixel that close to its threshold can differ."""
        thresholds = validate_thresholds(thresholds)
        cut = np.asarray([thresholds[c] for c in CLASSES], dtype=np.float32)[:, None, None]
        h, w = self.image.shape[:2]
        rows = np.unpackbits(self.fov_bits, count=h * w).reshape(h, w)[top:bottom, left:right].view(bool)
        return (self.geometry.region(self.square, top, bottom, left, right) >= cut) & rows[None]


def square_masks(
    square: np.ndarray, geometry: FovGeometry, fov: np.ndarray, thresholds: dict[str, float] | None = None
) -> np.ndarray:
    """``4 x H x W`` bool masks of the photo from the model's square probabilities ``square``
    (``4 x S x S``), equal to ``Prediction.masks``: one class at a time, so the float map of one
    class inside the crop box is all that is held at full resolution."""
    thresholds = validate_thresholds(thresholds)
    out = np.empty((len(CLASSES),) + fov.shape, dtype=bool)
    for i, c in enumerate(CLASSES):
        square_mask(square[i], geometry, fov, thresholds[c], out=out[i])
    return out


def square_mask(
    square: np.ndarray, geometry: FovGeometry, fov: np.ndarray, cut: float, out: np.ndarray | None = None
) -> np.ndarray:
    """One class of :func:`square_masks`: bool ``H x W``, the class's square probabilities
    ``square`` (``S x S``) at or above ``cut`` at the photo's pixels, inside ``fov``."""
    y0, y1, x0, x1 = geometry.box
    cut = np.float32(cut)
    out = np.empty(fov.shape, dtype=bool) if out is None else out
    out[...] = np.float32(0) >= cut  # outside the crop box the probability is 0
    np.greater_equal(geometry.in_box(square), cut, out=out[y0:y1, x0:x1])
    out &= fov
    return out


def photo_config(
    config: PreprocessConfig,
    image: np.ndarray,
    *,
    clahe: str | None = None,
    crop: str | None = None,
    tile: int | None = None,
    scale: float | None = None,
) -> PreprocessConfig:
    """The preprocessing one photo gets: the checkpoint's ``config`` with the overrides of
    :func:`predict` (``scale`` or ``tile`` change the input size, per photo for ``tile``)."""
    if clahe is not None:
        config = config.replace(clahe=clahe)
    if crop is not None:
        config = config.replace(crop=crop)
    if scale is not None:
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        config = config.replace(input_size=max(ALIGN, round(config.input_size * scale / ALIGN) * ALIGN))
    elif tile is not None:
        config = config.replace(input_size=native_input_size(image, config))
    return config


def prepare_photo(config: PreprocessConfig, image: np.ndarray, **overrides: Any) -> Preprocessed:
    """Steps 2-5 of docs/architecture.md#preprocessing for :func:`predict` (``overrides``: its ``clahe``, ``crop``,
    ``tile``, ``scale``), with no model: what a pipeline's worker processes run
    (:mod:`hydralanet.batch.pipeline`) before handing the result to ``predict(prepared=...)``."""
    return preprocess(image, photo_config(config, image, **overrides))


def predict_square(
    loaded: LoadedModel,
    image: np.ndarray,
    *,
    clahe: str | None = None,
    tta: bool | None = None,
    precision: str = "auto",
    tile: int | None = None,
    scale: float | None = None,
    crop: str | None = None,
    calibrated: bool = True,
    prepared: Preprocessed | None = None,
) -> SquarePrediction:
    """Run the model once on an RGB uint8 image (``H x W x 3``, any size); the probabilities
    stay at the model's square (:class:`SquarePrediction`); :func:`predict` maps them to the photo.

    ``clahe`` overrides the checkpoint's CLAHE mode (``green``, ``lab``, ``casp``, ``off``),
    ``crop`` its crop (``fov``, ``centre_square``: :data:`hydralanet.config.CROP_MODES`).
    Probabilities are calibrated by the checkpoint's ``calibration`` when it has one;
    ``calibrated=False`` gives the raw sigmoid (what calibration is fitted on).
    ``tta``: average the plain, horizontally and vertically flipped photo and, per class, the
    checkpoint's input ``scales`` when it has them and neither ``tile`` nor ``scale`` is given
    (None: the checkpoint's default, ``config.tta``).
    ``precision``: ``auto`` is the fast path (:mod:`hydralanet.inference.fast`), ``fp32`` the exact one.
    ``tile``: segment in overlapping tiles of this many pixels (:mod:`hydralanet.inference.tiling`), at
    native resolution unless ``scale`` is given; ``scale``: the FOV square's side as a multiple
    of the checkpoint's input size (e.g. 2.0 for 2048 px instead of 1024).
    ``prepared``: :func:`prepare_photo` of this image with the same settings, made elsewhere
    (a worker process); the result is the same as without it.
    Raises ``BlankImageError`` (a ``ValueError``) for an image with no field of view.
    """
    return predict_square_batch(
        loaded,
        [image],
        clahe=clahe,
        tta=tta,
        precision=precision,
        tile=tile,
        scale=scale,
        crop=crop,
        calibrated=calibrated,
        prepared=None if prepared is None else [prepared],
    )[0]


def predict(
    loaded: LoadedModel, image: np.ndarray, *, square: bool = False, **options: Any
) -> Prediction | SquarePrediction:
    """Run the model once on an RGB uint8 image (``H x W x 3``, any size); probabilities at the
    photo's resolution. Options as :func:`predict_square`, which keeps them at the model's
    square instead (a quarter of the memory of a 12-Mpixel photo's maps, or less);
    ``square=True`` is :func:`predict_square`."""
    prediction = predict_square(loaded, image, **options)
    return prediction if square else prediction.full()


def predict_square_batch(
    loaded: LoadedModel,
    images: list[np.ndarray],
    *,
    clahe: str | None = None,
    tta: bool | None = None,
    precision: str = "auto",
    tile: int | None = None,
    scale: float | None = None,
    crop: str | None = None,
    calibrated: bool = True,
    prepared: list[Preprocessed] | None = None,
) -> list[SquarePrediction]:
    """:func:`predict_square` for several photos with one model call: their squares share one input
    size (no padding), so they stack into a ``B x 3 x S x S`` batch. With ``tile`` each photo
    runs on its own (its native size is its own). On a CPU a batch gives the same masks as
    single photos up to float rounding; its use is to keep a GPU busy."""
    overrides = {"clahe": clahe, "crop": crop, "tile": tile, "scale": scale}
    if prepared is None:
        prepared = [prepare_photo(loaded.config.preprocessing, image, **overrides) for image in images]
    calibration = loaded.config.calibration if calibrated else None
    tta = loaded.resolve_tta(tta)
    precision = loaded.resolve_precision(precision)
    model = loaded.inference_model(precision)
    config = photo_config(loaded.config.preprocessing, images[0], clahe=clahe, crop=crop)
    settings = {
        "clahe": config.clahe,
        "crop": config.crop,
        "tta": bool(tta),
        "precision": precision,
    }
    scales = loaded.config.scales if tta and tile is None and scale is None else None
    if scales:
        settings["scales"] = {c: list(fs) for c, fs in scales.items()}
    margin = loaded.config.edge_margin
    if margin:
        settings["edge_margin"] = dict(margin)
    # the field of view at the square, for the tiles to skip and the band to clear
    fields = [p.geometry.field_to_square(p.fov) if tile is not None or margin else None for p in prepared]
    if tile is None:
        batch = torch.stack([p.tensor for p in prepared])
        probs = run_model(model, batch, precision=precision, tta=tta, calibration=calibration)
        if scales:
            probs = _average_scales(loaded, images, prepared, probs, scales, overrides, model, precision, calibration)
        squares = probs.cpu().numpy()
        extra = [{} for _ in prepared]
    else:
        squares, extra = [], []
        for p, field in zip(prepared, fields):
            tiled = run_tiled(model, p.tensor, field, tile=tile, precision=precision, tta=tta, calibration=calibration)
            squares.append(tiled.probabilities.numpy())
            extra.append({"tiles_run": tiled.tiles_run, "tiles_skipped": tiled.tiles_skipped})
    out = []
    for image, p, probs, more, field in zip(images, prepared, squares, extra, fields):
        if margin:
            clear_edge(probs, field, margin, edge_surround(p.geometry, field))
        photo_settings = {
            **settings,
            "input_size": p.geometry.size,
            "tile": tile,
            "calibrated": calibration is not None,
        }
        photo_settings.update(more)
        out.append(SquarePrediction.make(probs, p.fov, image, p.enhanced, p.geometry, photo_settings))
    return out


def clear_edge(
    square: np.ndarray, fov: np.ndarray, margin: dict[str, float], surround: np.ndarray | None = None
) -> np.ndarray:
    """Zero, in place, each class of ``margin`` in ``square`` (``4 x S x S`` probabilities) within
    its share of the field's diameter (its widest extent) from the field's edge; returns
    ``square``. ``fov``: the field of view at the square (``S x S`` bool); ``surround``: the
    photo's dark surround of the field, ``(S + 2) x (S + 2)`` with a one-pixel ring for what lies
    past the square's sides (:func:`edge_surround`; None: everything outside ``fov``)."""
    rows, cols = np.flatnonzero(fov.any(axis=1)), np.flatnonzero(fov.any(axis=0))
    if surround is None:
        surround = np.pad(~fov, 1, constant_values=True)
    if not len(cols) or not surround.any():
        return square
    diameter = max(cols[-1] - cols[0], rows[-1] - rows[0]) + 1
    distance = cv2.distanceTransform((~surround).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    for c, share in margin.items():
        square[CLASSES.index(c)][distance <= share * diameter] = 0.0
    return square


def edge_surround(geometry: FovGeometry, fov: np.ndarray) -> np.ndarray:
    """The dark surround of the field at the model's square (``fov``: the field there), for
    :func:`clear_edge`: the photo's pixels outside the field, and, on the one-pixel ring around
    the square, the photo beyond a side of the crop box when the box is the field's bounding box.
    Where the photo's own border cuts the field, or outside the photo, nothing is surround: the
    field's edge is not seen there."""
    s, k = geometry.size, geometry.size / geometry.side
    y0, y1, x0, x1 = geometry.box
    top, left = round(geometry.pad_top * k), round(geometry.pad_left * k)
    bottom, right = round((geometry.pad_top + y1 - y0) * k), round((geometry.pad_left + x1 - x0) * k)
    out = np.zeros((s + 2, s + 2), dtype=bool)
    out[1 + top : 1 + bottom, 1 + left : 1 + right] = ~fov[top:bottom, left:right]
    if geometry.crop == "fov":  # the box is the field's bounding box: past it, the photo is surround
        height, width = geometry.original_shape
        rows, cols = slice(1 + top, 1 + bottom), slice(1 + left, 1 + right)
        out[rows, left] |= x0 > 0
        out[rows, 1 + right] |= x1 < width
        out[top, cols] |= y0 > 0
        out[1 + bottom, cols] |= y1 < height
    return out


def _average_scales(loaded, images, prepared, base, scales, overrides, model, precision, calibration) -> torch.Tensor:
    """Each class's geometric mean over its input scales (``config.scales``): the photos are
    prepared again at each other factor of the input size, run with flips, and the probabilities
    resized to the base square (``B x 4 x S x S``) before averaging. The geometric mean keeps a
    pixel only where every size sees the lesion: a dark fovea that looks like a haemorrhage at
    half size, and like nothing at full size, stays out."""
    views = {1.0: base}
    for factor in loaded.config.extra_scales():
        small = []
        for image, p in zip(images, prepared):
            # prepare_photo(scale=factor) without finding the field of view again: same box, other size
            config = photo_config(loaded.config.preprocessing, image, **{**overrides, "scale": factor})
            square = dataclasses.replace(p.geometry, size=config.input_size).to_square(image)
            small.append(to_tensor(enhance(square, config), config))
        probs = run_model(model, torch.stack(small), precision=precision, tta=True, calibration=calibration)
        views[factor] = torch.nn.functional.interpolate(
            probs, size=base.shape[-2:], mode="bilinear", align_corners=False
        )
    out = torch.empty_like(base)
    for i, c in enumerate(CLASSES):
        out[:, i] = torch.stack([views[f][:, i] for f in scales[c]]).prod(0).pow(1.0 / len(scales[c]))
    return out


def predict_batch(
    loaded: LoadedModel, images: list[np.ndarray], *, square: bool = False, **options: Any
) -> list[Prediction] | list[SquarePrediction]:
    """:func:`predict` for several photos with one model call (options as
    :func:`predict_square_batch`; ``square=True`` is that function)."""
    predictions = predict_square_batch(loaded, images, **options)
    return predictions if square else [p.full() for p in predictions]


def threshold_masks(
    probabilities: np.ndarray, thresholds: dict[str, float] | None = None, fov: np.ndarray | None = None
) -> np.ndarray:
    """``4 x H x W`` probabilities -> ``4 x H x W`` bool: ``p >= threshold`` per class."""
    thresholds = validate_thresholds(thresholds)
    cut = np.asarray([thresholds[c] for c in CLASSES], dtype=np.float32)[:, None, None]
    masks = probabilities >= cut
    if fov is not None:
        masks &= fov[None]
    return masks


Labelled = list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]


def label_lesions(masks: np.ndarray) -> Labelled:
    """The 8-connected lesions of bool masks ``4 x H x W``, per class as OpenCV's
    ``connectedComponentsWithStats`` gives them: ``(count + 1, labels, stats, centroids)``. Made
    once per set of masks, it serves :func:`lesion_statistics`, the reading's zones and a page's
    zoom targets."""
    return [cv2.connectedComponentsWithStats(np.asarray(m, bool).view(np.uint8), connectivity=8) for m in masks]


def lesion_statistics(
    masks: np.ndarray,
    fov: np.ndarray,
    thresholds: dict[str, float] | None = None,
    *,
    pixel_area: float = 1.0,
    labelled: Labelled | None = None,
) -> list[dict[str, Any]]:
    """One row per lesion class: ``lesion, threshold, pixels, coverage_pct`` (% of the FOV),
    ``count`` (8-connected lesions) and ``largest_px`` (area of the largest one).
    ``pixel_area``: the area of one mask pixel in the photo's pixels, when the masks are on a
    coarser grid than the photo (the web app's working resolution): ``pixels`` and
    ``largest_px`` are then in the photo's pixels, rounded. ``labelled``: :func:`label_lesions`
    of ``masks``, when already made."""
    thresholds = validate_thresholds(thresholds)
    fov_pixels = max(int(np.count_nonzero(fov)), 1)
    rows = []
    for i, (c, mask) in enumerate(zip(CLASSES, masks)):
        pixels = int(np.count_nonzero(mask))
        count, largest = 0, 0
        if pixels:
            n, _, stats, _ = labelled[i] if labelled is not None else label_lesions(mask[None])[0]
            count = n - 1
            largest = int(stats[1:, cv2.CC_STAT_AREA].max())
        rows.append(
            {
                "lesion": c,
                "threshold": float(format_threshold(thresholds[c])),  # 0.999995 must not read as 1.0
                "pixels": round(pixels * pixel_area),
                "coverage_pct": round(100.0 * pixels / fov_pixels, 4),
                "count": count,
                "largest_px": round(largest * pixel_area),
            }
        )
    return rows
