"""The forward pass: probabilities for a batch of model squares, on any model (the exact
``HydraLANet`` or the fast path of :mod:`hydralanet.inference.fast`), with flips (TTA) and calibration.
Whole squares (:mod:`hydralanet.inference.segment`) and tiles (:mod:`hydralanet.inference.tiling`) both run here."""

from __future__ import annotations

import torch

from ..config import CLASSES
from .device import PRECISION_DTYPES, module_device
from .fast import InferenceModel


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
    # An InferenceModel (hydralanet.inference.fast) carries its own precision; autocast is for plain models.
    dtype = (
        None
        if isinstance(model, InferenceModel)
        else (None if precision == "fp32" else PRECISION_DTYPES.get(precision))
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
