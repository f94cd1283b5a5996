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
from .config import CLASSES, PreprocessConfig, validate_thresholds
from .preprocessing import FovGeometry, preprocess

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


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


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on a CPU with native bf16 matmul or on CUDA with bf16, else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not supported; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def cpu_has_native_bf16() -> bool:
    """True when oneDNN can use AVX-512 BF16 or AMX (bf16 matmul faster than fp32)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@torch.inference_mode()
def run_model(model: torch.nn.Module, batch: torch.Tensor, *, precision: str = "fp32", tta: bool = False) -> torch.Tensor:
    """Probabilities ``B x 4 x S x S`` (float32) for a normalised batch ``B x 3 x S x S``.

    ``tta`` averages the probabilities of the plain, horizontally and vertically flipped
    inputs (flips undone before averaging).
    """
    device = module_device(model)
    batch = batch.to(device)
    if device.type == "cpu" or precision != "fp32":
        batch = batch.contiguous(memory_format=torch.channels_last)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    views = [()] + ([(-1,), (-2,)] if tta else [])
    total = None
    for dims in views:
        x = batch.flip(dims) if dims else batch
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x)
        probs = torch.sigmoid(logits.float())
        probs = probs.flip(dims) if dims else probs
        total = probs if total is None else total + probs
    return total / len(views)


def predict(
    loaded: LoadedModel,
    image: np.ndarray,
    *,
    clahe: str | None = None,
    tta: bool = False,
    precision: str = "auto",
) -> Prediction:
    """Run the model once on an RGB uint8 image (``H x W x 3``, any size).

    ``clahe`` overrides the checkpoint's CLAHE mode (``green``, ``lab``, ``casp``, ``off``).
    Raises ``BlankImageError`` (a ``ValueError``) for an image with no field of view.
    """
    config: PreprocessConfig = loaded.config.preprocessing
    if clahe is not None:
        config = config.replace(clahe=clahe)
    prepared = preprocess(image, config)
    precision = resolve_precision(precision, loaded.device)
    probs = run_model(loaded.model, prepared.tensor[None], precision=precision, tta=tta)[0].cpu().numpy()
    full = prepared.geometry.to_original(probs)
    full *= prepared.fov[None]  # nothing outside the field of view is a lesion
    return Prediction(
        probabilities=full,
        fov=prepared.fov,
        image=image,
        enhanced=prepared.enhanced,
        geometry=prepared.geometry,
        settings={"clahe": config.clahe, "tta": bool(tta), "precision": precision, "input_size": config.input_size},
    )


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
                "threshold": round(thresholds[c], 4),
                "pixels": pixels,
                "coverage_pct": round(100.0 * pixels / fov_pixels, 4),
                "count": count,
                "largest_px": largest,
            }
        )
    return rows
