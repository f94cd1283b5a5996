"""Tiled inference for large photos (IDRiD's are 4288 x 2848): run the model on overlapping
square tiles of a FOV square bigger than the model's input size, blend them with smooth
weights, and skip the tiles that hold no field of view.

Memory is bounded by one tile's activations plus the accumulators (``5 x S x S`` float32),
whatever the photo's size. Each tile is segmented on its own, so the network's global-pooling
gates (FPB, channel gates) see the tile rather than the whole eye: a model trained on whole
1024 px squares sees lesions larger than it was trained on when run at native resolution.
Use it with models trained at that scale, or to look closer; with one tile covering the
whole square the result equals the untiled prediction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..config import PreprocessConfig
from ..preprocessing import fov_mask, square_geometry
from .forward import run_model

ALIGN = 32  # the encoder's stride: tiles on this grid see the same pixel grid as the whole square


@dataclass
class TiledProbabilities:
    """``probabilities``: float32 ``4 x S x S`` (0 where no tile ran); ``tiles_run`` and
    ``tiles_skipped`` (tiles with no field-of-view pixel)."""

    probabilities: torch.Tensor
    tiles_run: int
    tiles_skipped: int


def native_input_size(image: np.ndarray, config: PreprocessConfig) -> int:
    """The FOV square's side in the photo's own pixels, rounded to a multiple of 32: the input
    size at which the model sees the photo at native resolution (no down-sampling)."""
    side = square_geometry(fov_mask(image, threshold=config.fov_threshold), config).side
    return max(ALIGN, int(round(side / ALIGN)) * ALIGN)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Offsets of tiles of side ``tile`` covering ``[0, length)``: a regular grid with a step
    of ``tile - overlap`` rounded down to 32 px (so neighbours overlap by at least ``overlap``),
    the last tile flush with the end."""
    if length <= tile:
        return [0]
    step = max(ALIGN, (tile - overlap) // ALIGN * ALIGN)
    last = length - tile
    return [min(i * step, last) for i in range(math.ceil(last / step) + 1)]


def blend_ramp(start: int, tile: int, length: int, overlap: int) -> torch.Tensor:
    """1-D weights of one tile: a raised-cosine ramp over ``overlap`` pixels on each side that
    has a neighbour, 1 elsewhere (also on the square's own border: nothing to blend with)."""
    w = torch.ones(tile)
    if overlap <= 0:
        return w
    n = min(overlap, tile // 2)
    ramp = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(n) + 0.5) / n)  # (0, 1), never exactly 0
    if start > 0:
        w[:n] = ramp
    if start + tile < length:
        w[tile - n :] = torch.minimum(w[tile - n :], ramp.flip(0))
    return w


def run_tiled(
    model: nn.Module,
    image: torch.Tensor,
    fov: np.ndarray,
    *,
    tile: int,
    overlap: int | None = None,
    precision: str = "fp32",
    tta: bool = False,
    calibration: dict[str, tuple[float, float]] | None = None,
) -> TiledProbabilities:
    """Probabilities for a normalised ``3 x S x S`` square from tiles of ``tile`` px.

    ``fov``: bool ``S x S``, the field of view in the square; tiles without any of it are
    skipped. ``overlap`` (default ``tile // 4``) is the least overlap between neighbours.
    ``precision``, ``tta`` and ``calibration`` as in :func:`hydralanet.inference.forward.run_model`.
    """

    if tile < ALIGN or tile % ALIGN:
        raise ValueError(f"tile must be a multiple of {ALIGN} and >= {ALIGN}, got {tile!r}")
    size = int(image.shape[-1])
    if image.ndim != 3 or image.shape[-2] != size or fov.shape != (size, size):
        raise ValueError(f"expected a 3 x S x S image and an S x S fov, got {tuple(image.shape)} and {fov.shape}")
    tile = min(tile, size)
    overlap = tile // 4 if overlap is None else int(overlap)
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap!r} for tile={tile}")
    total = torch.zeros(4, size, size)
    weight = torch.zeros(size, size)
    starts = tile_starts(size, tile, overlap)
    run = skipped = 0
    for y in starts:
        wy = blend_ramp(y, tile, size, overlap)
        for x in starts:
            if not fov[y : y + tile, x : x + tile].any():
                skipped += 1
                continue
            probs = run_model(
                model, image[None, :, y : y + tile, x : x + tile], precision=precision, tta=tta, calibration=calibration
            )[0]
            w = wy[:, None] * blend_ramp(x, tile, size, overlap)[None, :]
            total[:, y : y + tile, x : x + tile] += probs.cpu() * w
            weight[y : y + tile, x : x + tile] += w
            run += 1
    return TiledProbabilities(total / weight.clamp_min(1e-12), run, skipped)
