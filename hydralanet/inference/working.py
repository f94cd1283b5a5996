"""The web page's working resolution: what it draws and counts without the photo's full size.

A 4288 x 2848 photo has 12 Mpixel; masks, statistics and the reading at that size took the page
2-3 s per threshold step on 2 vCPU. The page works instead on the model's own grid: the field
of view's square (:class:`hydralanet.preprocessing.FovGeometry`) at the model's input size, or
at :data:`WORKING_SIDE` px when the model's square is smaller, never finer than the photo.
There the probabilities are the model's own samples (no resize for the bundled model), and a
threshold step is a few million comparisons. Areas are reported in the photo's pixels (each
working pixel counts ``pixel_area`` of them); counts and areas are those of the working grid,
so they approximate the full-resolution ones that the downloads compute exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ..config import CLASSES, validate_thresholds
from ..preprocessing import FovGeometry
from .segment import Labelled, SquarePrediction, lesion_statistics

WORKING_SIDE = 1024  # the field of view's square at least this fine (the model's, when finer)


@dataclass
class WorkingPhoto:
    """One photo on the working grid. ``geometry``: the prediction's square at ``size`` =
    the working side ``N``; ``fov``: ``N x N`` bool; ``probabilities``: ``4 x N x N`` float32 (the model's square itself
    when ``N`` is its size); ``photo_shape``: the photo's ``(H, W)``; ``fov_pixels``: its field of
    view in the photo's own pixels (exact); ``own_bytes``: the arrays not shared with the
    prediction (for a memory budget)."""

    geometry: FovGeometry
    fov: np.ndarray
    probabilities: np.ndarray
    photo_shape: tuple[int, int]
    fov_pixels: int
    own_bytes: int = 0
    _previews: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def scale(self) -> float:
        """Photo pixels per working pixel, along a side."""
        return self.geometry.side / self.geometry.size

    @property
    def pixel_area(self) -> float:
        """Photo pixels per working pixel, in area."""
        return self.scale**2

    @property
    def nbytes(self) -> int:
        return self.own_bytes + sum(getattr(p, "nbytes", len(p)) for p in self._previews.values())

    def masks(self, thresholds: dict[str, float] | None = None) -> np.ndarray:
        """``4 x N x N`` bool: ``p >= threshold`` per class, inside the field of view."""
        thresholds = validate_thresholds(thresholds)
        cut = np.asarray([thresholds[c] for c in CLASSES], dtype=np.float32)[:, None, None]
        return (self.probabilities >= cut) & self.fov[None]

    def statistics(
        self, masks: np.ndarray, thresholds: dict[str, float] | None = None, labelled: Labelled | None = None
    ) -> list[dict[str, Any]]:
        """:func:`hydralanet.lesion_statistics` of working masks, areas in the photo's pixels
        (``labelled``: :func:`hydralanet.inference.segment.label_lesions` of the masks, when made)."""
        return lesion_statistics(masks, self.fov, thresholds, pixel_area=self.pixel_area, labelled=labelled)

    def preview_size(self, max_side: int) -> tuple[int, int]:
        """``(width, height)`` of the photo's preview whose longer side is at most ``max_side``
        (the size :func:`hydralanet.report.overlay.downscale_for_display` gives)."""
        h, w = self.photo_shape
        scale = min(1.0, max_side / max(h, w))
        return max(1, round(w * scale)), max(1, round(h * scale))

    def kept(self, key: Any, make: Callable[[], Any]) -> Any:
        """``make()``, made once and kept with the photo under ``key``: images derived from the
        photo alone (previews, their PNG bytes), the same at every threshold."""
        if key not in self._previews:
            self._previews[key] = make()
        return self._previews[key]

    def preview(self, photo: np.ndarray, max_side: int) -> np.ndarray:
        """The photo (``H x W x 3``) shrunk to :meth:`preview_size`; made once per size."""

        def make() -> np.ndarray:
            size = self.preview_size(max_side)
            same = size == (photo.shape[1], photo.shape[0])
            return photo if same else cv2.resize(photo, size, interpolation=cv2.INTER_AREA)

        return self.kept(("preview", max_side), make)

    def preview_masks(self, thresholds: dict[str, float] | None, max_side: int) -> np.ndarray:
        """``to_preview(masks(thresholds), max_side)`` in a few comparisons: a preview pixel is set
        when the highest probability under it (kept per preview size, -1 outside the field of
        view) reaches the threshold. Where the working grid is coarser than the preview, as
        :meth:`to_preview`."""
        width, height = self.preview_size(max_side)
        side = max(1, round(self.geometry.side * width / self.photo_shape[1]))
        if side >= self.geometry.size:
            return self.to_preview(self.masks(thresholds), max_side)

        def pooled() -> np.ndarray:
            return _pool_max(np.where(self.fov, self.probabilities, np.float32(-1)), side)

        highest = self.kept(("highest", side), pooled)
        thresholds = validate_thresholds(thresholds)
        cut = np.asarray([thresholds[c] for c in CLASSES], dtype=np.float32)[:, None, None]
        return self._place(highest >= cut, (width, height), side)

    def to_preview(self, layers: np.ndarray, max_side: int) -> np.ndarray:
        """Working-grid bool layers ``C x N x N`` -> ``C x h x w`` bool on the photo's preview
        (:meth:`preview_size`). A preview pixel is set when any working pixel under it is, so a
        microaneurysm one working pixel wide still shows; placed to the nearest preview pixel."""
        width, height = self.preview_size(max_side)
        g = self.geometry
        side = max(1, round(g.side * width / self.photo_shape[1]))  # the working square on the preview
        shrink = cv2.INTER_AREA if side < g.size else cv2.INTER_NEAREST
        # 0/255 bytes: an area average stays above 0 while fewer than 256 pixels meet in one.
        wide = g.size / side >= 16
        squares = [
            cv2.resize(
                layer.astype(np.float32) if wide else layer.view(np.uint8) * np.uint8(255),
                (side, side),
                interpolation=shrink,
            )
            > 0
            for layer in layers
        ]
        return self._place(np.stack(squares), (width, height), side)

    def _place(self, squares: np.ndarray, size: tuple[int, int], side: int) -> np.ndarray:
        """``C x side x side`` bool, the working square at preview scale, placed on the preview
        (``size``: its width and height) where the square lies in the photo."""
        width, height = size
        q = width / self.photo_shape[1]  # preview pixels per photo pixel
        g = self.geometry
        out = np.zeros((squares.shape[0], height, width), bool)
        top, left = round((g.box[0] - g.pad_top) * q), round((g.box[2] - g.pad_left) * q)
        y0, x0 = max(0, top), max(0, left)
        y1, x1 = min(height, top + side), min(width, left + side)
        if y0 < y1 and x0 < x1:
            out[:, y0:y1, x0:x1] = squares[:, y0 - top : y1 - top, x0 - left : x1 - left]
        return out


def _pool_max(planes: np.ndarray, side: int) -> np.ndarray:
    """``C x N x N`` -> ``C x side x side``: each output pixel the maximum of the input pixels
    that start under it (``side <= N``; every input pixel lands in exactly one output pixel)."""
    starts = np.floor(np.arange(side) * (planes.shape[-1] / side)).astype(np.intp)
    # along the rows first: the full-size pass runs over contiguous memory (half the time)
    return np.maximum.reduceat(np.maximum.reduceat(planes, starts, axis=2), starts, axis=1)


def working_side(prediction: SquarePrediction, side: int = WORKING_SIDE) -> int:
    """The working grid's side for a prediction: the model's square, or ``side`` when that is
    finer, but never finer than the photo's own field of view."""
    geometry = prediction.geometry
    return int(min(geometry.side, max(geometry.size, side)))


def working_photo(prediction: SquarePrediction, side: int = WORKING_SIDE) -> WorkingPhoto:
    """The prediction on its working grid (:func:`working_side`). On the model's own square the
    probabilities are the prediction's, not a copy."""
    n = working_side(prediction, side)
    geometry = dataclasses.replace(prediction.geometry, size=n)
    fov = prediction.fov
    on_model_grid = n == prediction.geometry.size
    if on_model_grid:
        probabilities = prediction.square
    else:
        probabilities = np.stack([cv2.resize(p, (n, n), interpolation=cv2.INTER_LINEAR) for p in prediction.square])
    inside = geometry.field_to_square(fov)
    own = inside.nbytes + (0 if on_model_grid else probabilities.nbytes)
    h, w = prediction.image.shape[:2]
    return WorkingPhoto(geometry, inside, probabilities, (h, w), int(np.count_nonzero(fov)), own)
