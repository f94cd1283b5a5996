"""Inference (DESIGN §8): the model runs once per (image, preprocessing setting); masks,
statistics and overlays come afterwards from the cached probabilities, without re-running.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from .checkpoint import LoadedModel, module_device
from .config import CLASSES, PreprocessConfig, format_threshold, validate_thresholds
from .fast import PRECISIONS, InferenceModel, cpu_has_native_bf16, resolve_precision  # noqa: F401  (public here too)
from .preprocessing import FovGeometry, Preprocessed, preprocess
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


@torch.inference_mode()
def run_model(
    model: torch.nn.Module,
    batch: torch.Tensor,
    *,
    precision: str = "fp32",
    tta: bool = False,
    calibration: dict[str, tuple[float, float]] | None = None,
) -> torch.Tensor:
    """Probabilities ``B x 4 x S x S`` (float32) for a normalised batch ``B x 3 x S x S``.

    ``calibration`` ``{class: (a, b)}`` makes them ``sigmoid(a * logit + b)`` (the checkpoint's
    ``config.calibration``); None is the raw sigmoid. ``tta`` averages the probabilities of the
    plain, horizontally and vertically flipped inputs (flips undone before averaging).
    """
    device = module_device(model)
    batch = batch.to(device)
    if device.type == "cpu" or precision != "fp32":
        batch = batch.contiguous(memory_format=torch.channels_last)
    # An InferenceModel (hydralanet.fast) carries its own precision; autocast is for plain models.
    dtype = (
        None if isinstance(model, InferenceModel) else {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    )
    views = [()] + ([(-1,), (-2,)] if tta else [])
    scale = shift = None
    if calibration:
        scale = torch.tensor([calibration[c][0] for c in CLASSES], device=device).view(1, -1, 1, 1)
        shift = torch.tensor([calibration[c][1] for c in CLASSES], device=device).view(1, -1, 1, 1)
    total = None
    for dims in views:
        x = batch.flip(dims) if dims else batch
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x)
        logits = logits.float()
        if scale is not None:
            logits = torch.addcmul(shift, logits, scale)
        probs = torch.sigmoid(logits)
        probs = probs.flip(dims) if dims else probs
        total = probs if total is None else total + probs
    return total / len(views)


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
    """Steps 2-5 of DESIGN §4 for :func:`predict` (``overrides``: its ``clahe``, ``crop``,
    ``tile``, ``scale``), with no model: what a pipeline's worker processes run
    (:mod:`hydralanet.pipeline`) before handing the result to ``predict(prepared=...)``."""
    return preprocess(image, photo_config(config, image, **overrides))


def predict(
    loaded: LoadedModel,
    image: np.ndarray,
    *,
    clahe: str | None = None,
    tta: bool = False,
    precision: str = "auto",
    tile: int | None = None,
    scale: float | None = None,
    crop: str | None = None,
    calibrated: bool = True,
    prepared: Preprocessed | None = None,
) -> Prediction:
    """Run the model once on an RGB uint8 image (``H x W x 3``, any size).

    ``clahe`` overrides the checkpoint's CLAHE mode (``green``, ``lab``, ``casp``, ``off``),
    ``crop`` its crop (``fov``, ``centre_square``: :data:`hydralanet.config.CROP_MODES`).
    Probabilities are calibrated by the checkpoint's ``calibration`` when it has one;
    ``calibrated=False`` gives the raw sigmoid (what calibration is fitted on).
    ``precision``: ``auto`` is the fast path (:mod:`hydralanet.fast`), ``fp32`` the exact one.
    ``tile``: segment in overlapping tiles of this many pixels (:mod:`hydralanet.tiling`), at
    native resolution unless ``scale`` is given; ``scale``: the FOV square's side as a multiple
    of the checkpoint's input size (e.g. 2.0 for 2048 px instead of 1024).
    ``prepared``: :func:`prepare_photo` of this image with the same settings, made elsewhere
    (a worker process); the result is the same as without it.
    Raises ``BlankImageError`` (a ``ValueError``) for an image with no field of view.
    """
    return predict_batch(
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


def predict_batch(
    loaded: LoadedModel,
    images: list[np.ndarray],
    *,
    clahe: str | None = None,
    tta: bool = False,
    precision: str = "auto",
    tile: int | None = None,
    scale: float | None = None,
    crop: str | None = None,
    calibrated: bool = True,
    prepared: list[Preprocessed] | None = None,
) -> list[Prediction]:
    """:func:`predict` for several photos with one model call: their squares share one input
    size (no padding), so they stack into a ``B x 3 x S x S`` batch. With ``tile`` each photo
    runs on its own (its native size is its own). On a CPU a batch gives the same masks as
    single photos up to float rounding; its use is to keep a GPU busy."""
    overrides = {"clahe": clahe, "crop": crop, "tile": tile, "scale": scale}
    if prepared is None:
        prepared = [prepare_photo(loaded.config.preprocessing, image, **overrides) for image in images]
    calibration = loaded.config.calibration if calibrated else None
    model = loaded.inference_model(precision)
    precision = resolve_precision(precision, loaded.device)
    config = photo_config(loaded.config.preprocessing, images[0], clahe=clahe, crop=crop)
    settings = {
        "clahe": config.clahe,
        "crop": config.crop,
        "tta": bool(tta),
        "precision": precision,
    }
    if tile is None:
        batch = torch.stack([p.tensor for p in prepared])
        squares = run_model(model, batch, precision=precision, tta=tta, calibration=calibration).cpu().numpy()
        extra = [{} for _ in prepared]
    else:
        squares, extra = [], []
        for p in prepared:
            fov = p.geometry.to_square(p.fov.astype(np.uint8), interpolation=cv2.INTER_NEAREST) > 0
            tiled = run_tiled(model, p.tensor, fov, tile=tile, precision=precision, tta=tta, calibration=calibration)
            squares.append(tiled.probabilities.numpy())
            extra.append({"tiles_run": tiled.tiles_run, "tiles_skipped": tiled.tiles_skipped})
    out = []
    for image, p, probs, more in zip(images, prepared, squares, extra):
        full = p.geometry.to_original(probs)
        full *= p.fov[None]  # nothing outside the field of view is a lesion
        photo_settings = {
            **settings,
            "input_size": p.geometry.size,
            "tile": tile,
            "calibrated": calibration is not None,
        }
        photo_settings.update(more)
        out.append(Prediction(full, p.fov, image, p.enhanced, p.geometry, photo_settings))
    return out


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


def lesion_statistics(
    masks: np.ndarray, fov: np.ndarray, thresholds: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    """One row per lesion class: ``lesion, threshold, pixels, coverage_pct`` (% of the FOV),
    ``count`` (8-connected lesions) and ``largest_px`` (area of the largest one)."""
    thresholds = validate_thresholds(thresholds)
    fov_pixels = max(int(np.count_nonzero(fov)), 1)
    rows = []
    for c, mask in zip(CLASSES, masks):
        pixels = int(np.count_nonzero(mask))
        count, largest = 0, 0
        if pixels:
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
            count = n - 1
            largest = int(stats[1:, cv2.CC_STAT_AREA].max())
        rows.append(
            {
                "lesion": c,
                "threshold": float(format_threshold(thresholds[c])),  # 0.999995 must not read as 1.0
                "pixels": pixels,
                "coverage_pct": round(100.0 * pixels / fov_pixels, 4),
                "count": count,
                "largest_px": largest,
            }
        )
    return rows
