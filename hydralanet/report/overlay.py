"""Lesion colours and overlay rendering (cheap: no model involved)."""

from __future__ import annotations

import cv2
import numpy as np

from ..config import CLASSES

# Fixed lesion colours (RGB), chosen to stand out on an orange-red fundus and from each other.
COLOURS: dict[str, tuple[int, int, int]] = {
    "EX": (255, 221, 0),  # yellow
    "HE": (40, 110, 255),  # blue
    "MA": (0, 230, 118),  # green
    "SE": (255, 0, 220),  # magenta
}


def render_overlay(
    image: np.ndarray,
    masks: np.ndarray,
    *,
    opacity: float = 0.5,
    visible: dict[str, bool] | None = None,
    outline: bool = True,
) -> np.ndarray:
    """Blend lesion colours over ``image`` (RGB uint8 ``H x W x 3``) where ``masks``
    (bool ``4 x H x W``) are set. ``opacity`` in [0, 1] is the fill's weight; ``outline``
    adds an opaque contour so lesions a few pixels wide stay visible when the image is shown
    scaled down. Later classes are drawn over earlier ones where they overlap.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    if masks.shape[1:] != image.shape[:2]:
        raise ValueError(f"masks {masks.shape[1:]} and image {image.shape[:2]} differ in size")
    thickness = max(1, round(max(image.shape[:2]) / 700))
    shown = [
        (c, np.asarray(mask, bool))
        for c, mask in zip(CLASSES, masks)
        if (visible is None or visible.get(c, True)) and mask.any()
    ]
    result = np.array(image, dtype=np.uint8, order="C")  # a copy (RGB uint8 is what callers give)
    if shown:
        # Only lesion pixels change: blend them in float32 (in class order, as drawn) and round
        # once; every other pixel is the photo's own (what float32 and back would give).
        where = np.flatnonzero(np.logical_or.reduce([mask for _, mask in shown]))
        pixels = result.reshape(-1, 3)
        blend = pixels[where].astype(np.float32)
        for c, mask in shown:
            inside = mask.reshape(-1)[where]
            blend[inside] = (1.0 - opacity) * blend[inside] + opacity * np.asarray(COLOURS[c], dtype=np.float32)
        pixels[where] = np.clip(blend + 0.5, 0, 255).astype(np.uint8)
    contours_to_draw = []
    for c, mask in shown if outline else []:
        contours, _ = cv2.findContours(mask.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        contours_to_draw.append((contours, COLOURS[c]))
    for contours, colour in contours_to_draw:
        cv2.drawContours(result, contours, -1, colour, thickness)
    return result


def legend_html() -> str:
    """A one-line HTML legend in the fixed colours (for the app and reports)."""
    from ..config import CLASS_NAMES

    items = [
        f'<span style="display:inline-block;width:0.9em;height:0.9em;background:rgb{COLOURS[c]};'
        f'border:1px solid #333;margin:0 0.3em 0 1em;vertical-align:middle"></span>{c} {CLASS_NAMES[c]}'
        for c in CLASSES
    ]
    return "".join(items)


def downscale_for_display(
    image: np.ndarray, masks: np.ndarray | None, max_side: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Shrink an RGB ``H x W x 3`` image and its bool ``C x H x W`` masks (or None) so the longer
    side is at most ``max_side``; unchanged when already that small.

    A shrunk mask pixel is set when any original pixel under it is set (area average > 0),
    so a microaneurysm two pixels wide still shows on a preview a quarter of the size; the
    statistics and downloads come from the full-size masks.
    """
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image, masks
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if masks is None:
        return small, None
    small_masks = np.stack([cv2.resize(m.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0 for m in masks])
    return small, small_masks
