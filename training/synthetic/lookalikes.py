"""Unlabelled look-alikes placed among the lesions: dark dots on vessels. (The others, the
optic disc, the foveal reflex and the bulbs at vessel ends, are drawn with the anatomy in
``fundus`` and ``vessels``.)"""

from __future__ import annotations

import numpy as np

from .canvas import composite, shape_alpha
from .lesions import Painter


def vessel_dots(p: Painter) -> None:
    """Unlabelled dark dots sitting on vessels (beading, a vessel seen end-on): the model
    must learn that a dark dot continuous with a vessel is not a microaneurysm."""
    rng = p.rng
    candidates = np.argwhere(p.vessel & p.allowed)
    # the dark foveal centre also passes the vessel test; a dot there would look like an MA
    candidates = candidates[
        np.hypot(candidates[:, 1] - p.f.fovea[0], candidates[:, 0] - p.f.fovea[1]) > 0.7 * p.f.disc_radius
    ]
    if len(candidates) == 0:
        return
    for y, x in candidates[rng.integers(0, len(candidates), rng.integers(0, 7))]:
        r = max(0.75, rng.uniform(1.0, 2.5) * p.s)
        alpha, y0, x0 = shape_alpha(rng, x, y, r, r, 0.0, 0.8)
        h, w = alpha.shape
        if y0 < 0 or x0 < 0 or y0 + h > p.size or x0 + w > p.size:
            continue
        colour = p.f.image[y, x] * rng.uniform(0.7, 0.9)
        composite(p.f.image, (slice(y0, y0 + h), slice(x0, x0 + w)), alpha * rng.uniform(0.7, 1.0), colour)
