"""Lesions, each composited in a local patch with an alpha map and a colour derived from the
local background; its label is exactly ``alpha >= 0.5``. Sizes, shapes and colours follow
docs/architecture.md#lesion-classes: hard exudates (EX) in clusters and rings, haemorrhages (HE) as dots, blots and
flames, microaneurysms (MA) near vessels, soft exudates (SE) near the arcades.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from hydralanet.config import CLASSES

from .canvas import REFERENCE_SIZE, Fundus, composite, log_uniform, pixel_grid, shape_alpha, smooth_noise

LESION_IDS = CLASSES  # channel order fixed project-wide (docs/architecture.md#lesion-classes): EX, HE, MA, SE
P_NO_LESIONS = 0.15  # share of lesion-free images (the model must learn to predict nothing)
DISC_EXCLUSION = 1.35  # no lesion within this many disc radii of the disc centre


class Painter:
    """Places lesions: checks where they may go, composites them, records their labels."""

    def __init__(self, f: Fundus, rng: np.random.Generator):
        self.f, self.rng = f, rng
        self.size = size = f.image.shape[0]
        self.s = size / REFERENCE_SIZE
        self.masks = np.zeros((len(LESION_IDS), size, size), np.uint8)
        margin = max(2, int(round(6 * self.s)))
        inside = (f.fov >= 0.999).astype(np.uint8)
        inside = cv2.erode(inside, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1)))
        ys, xs = pixel_grid(size)
        on_disc = (xs - np.float32(f.disc[0])) ** 2 + (ys - np.float32(f.disc[1])) ** 2 <= np.float32(
            DISC_EXCLUSION * f.disc_radius
        ) ** 2
        self.allowed = inside.astype(bool) & ~on_disc
        # vessels = dark thin structures in green: black-hat (closing minus image)
        k = max(5, int(17 * self.s) | 1)
        green = np.clip(f.image[..., 1] * 255, 0, 255).astype(np.uint8)
        closed = cv2.morphologyEx(green, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        hat = closed.astype(np.int16) - green
        self.vessel = (hat > 0.1 * closed + 2) & inside.astype(bool)

        self.lowres = low = 128 if size >= 128 else size
        self.cell = size / low
        area = cv2.INTER_AREA
        fov_low = cv2.resize(f.fov, (low, low), interpolation=area)
        bg = cv2.resize(f.image * f.fov[..., None], (low, low), interpolation=area)
        bg = bg / np.maximum(fov_low, 1e-3)[..., None]
        # a closing removes vessels, so colours come from the retina around them
        self.bg = cv2.morphologyEx(bg, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
        self.allowed_low = cv2.resize(self.allowed.astype(np.float32), (low, low), interpolation=area) > 0.99
        vessel_low = cv2.resize(self.vessel.astype(np.float32), (low, low), interpolation=area)
        near = cv2.GaussianBlur(vessel_low, (0, 0), 2.0)
        self.near_vessel = near / max(float(near.max()), 1e-6)
        big = cv2.GaussianBlur(vessel_low, (0, 0), 5.0)
        self.arcades = big / max(float(big.max()), 1e-6)
        lr = (np.arange(low, dtype=np.float32) + 0.5) * self.cell
        self.dist_fovea = np.hypot(lr[None, :] - f.fovea[0], lr[:, None] - f.fovea[1])
        self.dist_disc = np.hypot(lr[None, :] - f.disc[0], lr[:, None] - f.disc[1])
        self.disc_fovea = float(np.linalg.norm(f.fovea - f.disc))

    def posterior(self, width: float) -> np.ndarray:
        """Weight peaking at the fovea, ``width`` in disc-fovea distances."""
        return np.exp(-0.5 * (self.dist_fovea / (width * self.disc_fovea)) ** 2)

    def pick(self, weight: np.ndarray, k: int = 1) -> np.ndarray:
        """k points (x, y) drawn from a low-res weight map restricted to allowed cells."""
        p = (weight * self.allowed_low).ravel().astype(np.float64)
        if p.sum() <= 0:
            return np.zeros((0, 2))
        idx = self.rng.choice(p.size, size=k, p=p / p.sum())
        cells = np.stack([idx % self.lowres, idx // self.lowres], axis=1)
        return (cells + self.rng.uniform(0, 1, (k, 2))) * self.cell - 0.5

    def background(self, x: float, y: float) -> np.ndarray:
        i = min(self.lowres - 1, max(0, int((y + 0.5) / self.cell)))
        j = min(self.lowres - 1, max(0, int((x + 0.5) / self.cell)))
        return self.bg[i, j]

    def place(self, lesion: int, alpha: np.ndarray, y0: int, x0: int, colour, avoid_vessels: bool = False) -> bool:
        """Composites the lesion if it fits (inside the FOV, off the disc, not over another
        lesion class); its label is alpha >= 0.5. Returns whether it was drawn."""
        h, w = alpha.shape
        if y0 < 0 or x0 < 0 or y0 + h > self.size or x0 + w > self.size:
            return False
        sl = (slice(y0, y0 + h), slice(x0, x0 + w))
        label = alpha >= 0.5
        foot = alpha > 0.02
        if not label.any() or not self.allowed[sl][foot].all():
            return False
        others = [c for c in range(len(LESION_IDS)) if c != lesion]
        if self.masks[(slice(None),) + sl][others][:, foot].any():
            return False
        if avoid_vessels and self.vessel[sl][foot].any():
            return False
        colour = np.asarray(colour, np.float32)
        composite(self.f.image, sl, alpha, np.clip(colour, 0.0, 1.0))
        self.masks[lesion][sl] |= label
        return True


def _ex_spot(p: Painter, x: float, y: float, diameter: float, tone: np.ndarray, strength: float) -> bool:
    rng = p.rng
    a = max(0.75, diameter / 2)
    rough = rng.uniform(0.1, 0.35) if diameter > 6 * p.s else rng.uniform(0.0, 0.1)
    alpha, y0, x0 = shape_alpha(
        rng, x, y, a, a * rng.uniform(0.6, 1.0), rng.uniform(0, np.pi), rng.uniform(0.5, 0.9), rough, 7
    )
    alpha *= rng.uniform(0.85, 1.0)
    bg = p.background(x, y)
    colour = bg + (tone - bg) * np.clip(strength + rng.normal(0, 0.06), 0.3, 1.0)
    # waxy, slightly uneven surface rather than a flat fill
    shade = 1.0 + 0.06 * smooth_noise(rng, 4, *alpha.shape)
    return p.place(0, alpha, y0, x0, colour * shade[..., None])


def _draw_exudates(p: Painter, groups: int) -> tuple[int, list]:
    """Hard exudates: sharp yellow-white spots in clusters, partial rings and singles,
    mostly at the posterior pole. Returns (spots drawn, centres of the rings)."""
    rng, s, drawn, ring_centres = p.rng, p.s, 0, []
    weight = 0.08 + p.posterior(0.9)
    for centre in p.pick(weight, groups):
        tone = np.array([1.0, rng.uniform(0.85, 0.97), rng.uniform(0.3, 0.6)]) * rng.uniform(0.95, 1.08)
        strength = rng.uniform(0.5, 0.95)
        kind = rng.choice(["cluster", "ring", "singles"], p=[0.5, 0.2, 0.3])
        if kind == "ring":  # circinate: a partial ring around a leaking centre
            ring_r = rng.uniform(25, 120) * s
            span = rng.uniform(0.5, 1.0) * 2 * np.pi
            n = max(3, int(ring_r * span / (rng.uniform(6, 14) * s)))
            phis = rng.uniform(0, 2 * np.pi) + np.sort(rng.uniform(0, span, n))
            radii = ring_r * (1 + rng.normal(0, 0.08, n))
            pts = centre + np.stack([np.cos(phis), np.sin(phis)], 1) * radii[:, None]
            sizes = [log_uniform(rng, 2, 14) * s for _ in range(n)]
            ring_centres.append(centre)
        elif kind == "cluster":
            n = int(rng.integers(3, 26))
            pts = centre + rng.normal(0, rng.uniform(8, 50) * s, (n, 2))
            sizes = [log_uniform(rng, 2, 25) * s for _ in range(n)]
            if rng.random() < 0.3:
                sizes[0] = rng.uniform(20, 40) * s  # a larger plaque
        else:
            n = int(rng.integers(1, 8))
            pts = p.pick(weight, n)
            sizes = [log_uniform(rng, 2, 15) * s for _ in range(n)]
        for (x, y), d in zip(pts, sizes):
            drawn += _ex_spot(p, x, y, d, tone, strength)
    return drawn, ring_centres


def _draw_haemorrhages(p: Painter, n: int) -> int:
    """Dark red dots, irregular blots, and flames along the nerve fibres (radial from disc)."""
    rng, s, drawn = p.rng, p.s, 0
    weight = 0.3 + p.posterior(1.2)
    flame_weight = np.exp(-p.dist_disc / (1.5 * p.disc_fovea)) * (0.2 + p.arcades)
    for _ in range(n):
        kind = rng.choice(["dot", "blot", "flame"], p=[0.35, 0.4, 0.25])
        for _attempt in range(6):
            x, y = p.pick(flame_weight if kind == "flame" else weight)[0]
            if kind == "dot":
                a = max(1.0, rng.uniform(5, 12) * s / 2)
                b, angle, edge, rough, taper = a * rng.uniform(0.85, 1), 0.0, 0.9, 0.05, 0.0
            elif kind == "blot":
                a = max(1.5, log_uniform(rng, 10, 80) * s / 2)
                b, angle = a * rng.uniform(0.65, 1.0), rng.uniform(0, np.pi)
                edge, rough, taper = rng.uniform(1.0, 2.5), rng.uniform(0.1, 0.25), 0.0
            else:
                a = max(2.0, log_uniform(rng, 15, 80) * s / 2)
                b = max(1.0, a * rng.uniform(0.2, 0.4))
                angle = math.atan2(y - p.f.disc[1], x - p.f.disc[0]) + rng.normal(0, 0.15)
                edge, rough, taper = rng.uniform(1.2, 2.5), 0.1, rng.uniform(-0.7, 0.7)
            feather = rng.uniform(0.05, 0.15) if kind == "flame" else 0.0
            alpha, y0, x0 = shape_alpha(
                rng, x, y, a, b, angle, edge, rough, 12 if kind == "flame" else 6, taper, feather
            )
            if kind != "dot":
                alpha *= np.clip(1.0 + 0.12 * smooth_noise(rng, 5, *alpha.shape), 0, 1.2)
            alpha = np.clip(alpha * rng.uniform(0.8, 1.0), 0, 1)
            bg = p.background(x, y)
            colour = bg * np.array([rng.uniform(0.55, 0.85), rng.uniform(0.25, 0.5), rng.uniform(0.3, 0.55)])
            # clotted blood is mottled, not a flat fill
            mottle = 1.0 + 0.1 * smooth_noise(rng, 6, *alpha.shape)
            if p.place(1, alpha, y0, x0, colour * mottle[..., None]):
                drawn += 1
                break
    return drawn


def _draw_microaneurysms(p: Painter, n: int, centres: Sequence[np.ndarray] = ()) -> int:
    """Tiny, low-contrast dark red dots near (not on) vessels, mostly at the posterior pole;
    the first ones at ``centres`` (the leaking centres of exudate rings) when given."""
    rng, s, drawn = p.rng, p.s, 0
    weight = (0.15 + p.posterior(1.0)) * (0.3 + p.near_vessel)
    for i in range(n):
        for attempt in range(6):
            if i < len(centres) and attempt == 0:
                x, y = centres[i]
            else:
                x, y = p.pick(weight)[0]
            r = max(0.75, rng.uniform(2, 6) * s / 2)
            alpha, y0, x0 = shape_alpha(rng, x, y, r, r * rng.uniform(0.85, 1.0), 0.0, rng.uniform(0.6, 0.9), 0.03, 3)
            alpha *= rng.uniform(0.85, 1.0)
            colour = p.background(x, y) * np.array(
                [rng.uniform(0.7, 0.9), rng.uniform(0.45, 0.75), rng.uniform(0.55, 0.85)]
            )
            if p.place(2, alpha, y0, x0, colour, avoid_vessels=True):
                drawn += 1
                break
    return drawn


def _draw_soft_exudates(p: Painter, n: int) -> int:
    """Cotton-wool spots: pale, fluffy, feather-edged patches near the vessel arcades."""
    rng, s, drawn = p.rng, p.s, 0
    weight = (0.05 + p.arcades) * p.posterior(1.4) * (1 - p.posterior(0.15))
    for _ in range(n):
        for _attempt in range(6):
            x, y = p.pick(weight)[0]
            d = log_uniform(rng, 15, 80) * s
            a = d / 2
            angle = math.atan2(y - p.f.disc[1], x - p.f.disc[0]) + rng.normal(0, 0.4)
            edge = rng.uniform(0.12, 0.25) * d
            alpha, y0, x0 = shape_alpha(rng, x, y, a, a / rng.uniform(1.0, 1.7), angle, edge, rng.uniform(0.15, 0.3), 8)
            fluff = 1.0 + 0.3 * smooth_noise(rng, 5, *alpha.shape) + 0.15 * smooth_noise(rng, 14, *alpha.shape)
            alpha = np.clip(alpha * fluff * rng.uniform(0.7, 0.95), 0.0, 1.0)
            bg = p.background(x, y)
            colour = bg + (np.array([0.97, 0.93, 0.85]) - bg) * rng.uniform(0.25, 0.55)
            if p.place(3, alpha, y0, x0, colour):
                drawn += 1
                break
    return drawn


def draw_lesions(p: Painter) -> dict[str, int]:
    """Lesions of a random severity (none in ``P_NO_LESIONS`` of the images) into ``p``;
    returns how many objects of each class were drawn (their labels are ``p.masks``)."""
    rng = p.rng
    counts = dict.fromkeys(LESION_IDS, 0)
    if rng.random() < P_NO_LESIONS:
        return counts
    severity = rng.uniform() ** 1.5
    present = {"EX": rng.random() < 0.6, "HE": rng.random() < 0.55, "MA": rng.random() < 0.8, "SE": rng.random() < 0.3}
    if not any(present.values()):
        present[rng.choice(["EX", "MA"])] = True
    # deepest first, so later (more superficial) lesions are rejected where they would
    # cover an earlier one's label
    if present["SE"]:
        counts["SE"] = _draw_soft_exudates(p, 1 + rng.poisson(1.5 * severity))
    if present["HE"]:
        counts["HE"] = _draw_haemorrhages(p, 1 + rng.poisson(12 * severity))
    ring_centres: list = []
    if present["EX"]:
        counts["EX"], ring_centres = _draw_exudates(p, 1 + rng.poisson(0.5 + 2.5 * severity))
    if present["MA"]:
        counts["MA"] = _draw_microaneurysms(p, 1 + rng.poisson(3 + 20 * severity), ring_centres)
    return counts
