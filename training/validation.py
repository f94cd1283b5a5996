"""Scoring a model on the validation split, as training does after every epoch and
``training.average`` does for an average of runs.

Validation runs on the square model inputs (``LesionDataset`` without augmentation), inside
the field of view. One pass fills per-class PR histograms (:class:`PRAccumulator`); the
thresholds, F1 / IoU / precision / recall and the Platt calibration are all read off them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from hydralanet.config import CLASSES
from hydralanet.inference.device import PRECISION_DTYPES

from .calibration import calibrate_threshold, fit_platt
from .config import TrainConfig
from .metrics import ConfusionAccumulator, PRAccumulator


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for the ``amp`` setting; ``None`` runs in float32."""
    if mode == "auto":
        if device.type != "cuda":
            return None  # CPU autocast is slower than fp32 without AMX/AVX-512 BF16: opt in with amp=bf16
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "fp16" and device.type != "cuda":
        raise ValueError("amp=fp16 needs CUDA (fp16 on CPU is slow and needs loss scaling); use amp=bf16 or amp=off")
    return None if mode == "off" else PRECISION_DTYPES[mode]


@torch.no_grad()
def validate(
    model: nn.Module, loader: DataLoader, loss_fn: nn.Module, cfg: TrainConfig, device: torch.device
) -> tuple[dict[str, Any], dict[str, float], dict[str, tuple[float, float]] | None]:
    """Validation loss and per-class metrics (plus macro) on the square model inputs, inside the FOV.

    Returns ``(metrics, thresholds, calibration)``. One pass fills the PR histograms; the
    thresholds are tuned on them (max F1 per class) when ``cfg.tune_thresholds``, and F1 / IoU /
    precision / recall are then read off the same histograms at those thresholds. With
    ``cfg.calibrate`` a per-class Platt calibration is fitted on the same histograms and the
    thresholds returned are the calibrated probabilities of the same cuts (same pixels, same F1).
    """
    model.eval()
    dtype = amp_dtype(cfg.amp, device)
    pr = PRAccumulator(num_classes=len(CLASSES))
    loss_sum = 0.0
    for batch in loader:
        images, masks, valid = (batch[k].to(device).float() for k in ("image", "masks", "valid"))
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(images).float()
        loss_sum += float(loss_fn(logits, masks, valid))
        pr.update(torch.sigmoid(logits), masks, valid)
    if cfg.tune_thresholds:
        thresholds = [float(t) for t in pr.best_thresholds(default=cfg.default_threshold)]
    else:
        thresholds = [cfg.default_threshold] * len(CLASSES)
    scores = confusion_at(pr, thresholds).compute()
    aupr = pr.average_precision()
    metrics: dict[str, Any] = {"loss": loss_sum / max(1, len(loader))}
    for i, c in enumerate(CLASSES):
        metrics[c] = {"aupr": float(aupr[i]), **{k: float(scores[k][i]) for k in ("f1", "iou", "precision", "recall")}}
    # A class without positive pixels in the split has no AUPR (NaN): average the others.
    macro_aupr = float(np.nanmean(aupr)) if np.isfinite(aupr).any() else float("nan")
    metrics["macro"] = {"aupr": macro_aupr, **scores["macro"]}
    if not cfg.calibrate:
        return metrics, dict(zip(CLASSES, thresholds)), None
    calibration = fit_platt(pr)
    calibrated = {c: round(calibrate_threshold(t, calibration[c]), 4) for c, t in zip(CLASSES, thresholds)}
    return metrics, calibrated, calibration


def confusion_at(pr: PRAccumulator, thresholds: list[float]) -> ConfusionAccumulator:
    """The confusion counts at ``thresholds`` read off PR histograms: ``p >= edge(k)`` is
    "bin >= k", so this is exact for thresholds on bin edges (tuned ones always are)."""
    confusion = ConfusionAccumulator(num_classes=pr.num_classes, thresholds=thresholds)
    for c, t in enumerate(confusion.thresholds):
        k = pr.threshold_index(t)
        confusion.tp[c], confusion.fn[c] = pr.positives[c, k:].sum(), pr.positives[c, :k].sum()
        confusion.fp[c], confusion.tn[c] = pr.negatives[c, k:].sum(), pr.negatives[c, :k].sum()
    return confusion
