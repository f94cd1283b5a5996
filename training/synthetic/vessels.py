"""The vessel tree of a procedural fundus: arcades and nasal vessels leaving the disc, their
branches, the arteries' light reflex, and bulbs at some thin vessels' ends (unlabelled
microaneurysm look-alikes)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .canvas import REFERENCE_SIZE, Fundus


def _catmull_rom(points: np.ndarray, step: float) -> np.ndarray:
    """Dense polyline (about ``step`` px apart) through the waypoints (N x 2)."""
    p = np.vstack([2 * points[0] - points[1], points, 2 * points[-1] - points[-2]])
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        n = max(2, int(np.linalg.norm(p2 - p1) / step))
        t = np.linspace(0, 1, n, endpoint=False)[:, None]
        out.append(
            0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (3 * p1 - p0 - 3 * p2 + p3) * t**3)
        )
    out.append(points[-1:])
    return np.vstack(out)


@dataclass
class _TreeContext:
    centre: np.ndarray
    radius: float
    fovea: np.ndarray
    avascular: float  # foveal avascular zone radius
    disc: np.ndarray
    disc_radius: float
    min_width: float
    step: float
    scale: float


def _random_walk(
    rng: np.random.Generator, start: np.ndarray, heading: float, length: float, ctx: _TreeContext
) -> np.ndarray:
    """Gently curving path; stops at the FOV rim or at the foveal avascular zone."""
    n = max(3, int(length / ctx.step))
    turn = rng.normal(0.0, 0.04, n) + rng.normal(0.0, 0.006)
    turn = np.convolve(turn, np.ones(3) / 3, mode="same")  # no kinks between steps
    headings = heading + np.cumsum(turn)
    steps = ctx.step * np.stack([np.cos(headings), np.sin(headings)], axis=1)
    pts = np.vstack([start, start + np.cumsum(steps, axis=0)])
    inside = (np.linalg.norm(pts - ctx.centre, axis=1) < ctx.radius * 1.02) & (
        np.linalg.norm(pts - ctx.fovea, axis=1) > ctx.avascular
    )
    stop = np.argmin(inside) if not inside.all() else len(pts)
    return pts[:stop]


def _grow_tree(
    rng: np.random.Generator, pts: np.ndarray, widths: np.ndarray, depth: int, ctx: _TreeContext, out: list, ends: list
) -> None:
    """Appends (points, widths) of this vessel and, recursively, of its side branches."""
    out.append((pts, widths))
    if len(pts) < 4:
        return
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    arclen = np.concatenate([[0.0], np.cumsum(seg)])
    from_disc = np.linalg.norm(pts - ctx.disc, axis=1)
    pos = arclen[np.argmax(from_disc > 1.4 * ctx.disc_radius)] if depth == 0 else 0.0
    pos += rng.uniform(0.3, 1.0) * (10 * widths[0] + 20 * ctx.scale)
    while depth < 3 and pos < arclen[-1] - 10 * ctx.scale:
        i = int(np.searchsorted(arclen, pos))
        w_parent = float(widths[i])
        w_child = w_parent * rng.uniform(0.4, 0.8)
        pos += rng.uniform(8, 18) * w_parent + 25 * ctx.scale
        if w_child < ctx.min_width * 1.2:
            continue
        j = min(i + 1, len(pts) - 1)
        tangent = math.atan2(pts[j, 1] - pts[i - 1, 1], pts[j, 0] - pts[i - 1, 0])
        heading = tangent + rng.choice([-1, 1]) * rng.uniform(0.45, 1.25)
        length = w_child * rng.uniform(25, 55) + 30 * ctx.scale
        child = _random_walk(rng, pts[i], heading, length, ctx)
        if len(child) < 3:
            continue
        end_w = max(ctx.min_width, w_child * rng.uniform(0.3, 0.6))
        child_w = np.linspace(w_child, end_w, len(child))
        # the parent narrows after giving off blood (Murray's law, roughly)
        widths[i:] *= math.sqrt(max(0.5, 1.0 - 0.5 * (w_child / w_parent) ** 2))
        _grow_tree(rng, child, child_w, depth + 1, ctx, out, ends)
        if end_w < 1.6 * ctx.scale and rng.random() < 0.15:
            ends.append((child[-1], end_w))


def _vessel_value(widths: np.ndarray, s: float) -> np.ndarray:
    """Canvas intensity (0-255) per vessel width: thin vessels hold less blood, so are paler."""
    return np.clip(80 + 35 * widths / max(s, 0.25), 80, 255).astype(int)


def draw_vessels(rng: np.random.Generator, f: Fundus) -> None:
    """Arcades, nasal vessels and their branches; veins darker and wider than arteries.

    Drawn at 2x resolution with anti-aliased lines, then area-downsampled, so widths are
    fractional and thin vessels are faint. Some thin branches end in a small dark dot
    (an unlabelled microaneurysm look-alike).
    """
    s = f.image.shape[0] / REFERENCE_SIZE
    ctx = _TreeContext(
        f.centre,
        f.radius,
        f.fovea,
        f.disc_radius * rng.uniform(0.6, 0.9),
        f.disc,
        f.disc_radius,
        max(0.5, 1.0 * s),
        3.0 * max(s, 0.5),
        s,
    )
    roots = _vessel_roots(rng, f, ctx)
    veins, arteries, shine = _paint_trees(rng, roots, ctx, f.image.shape[0])
    # blood absorbs green and blue far more than red: vessels are darker *red*
    k_vein = np.array([rng.uniform(0.15, 0.3), rng.uniform(0.45, 0.6), rng.uniform(0.35, 0.5)], np.float32)
    k_art = np.array([rng.uniform(0.05, 0.12), rng.uniform(0.25, 0.38), rng.uniform(0.2, 0.3)], np.float32)
    f.image *= (1.0 - veins[..., None] * k_vein) * (1.0 - arteries[..., None] * k_art)
    f.image += (shine * rng.uniform(0.03, 0.09))[..., None]


def _vessel_roots(rng: np.random.Generator, f: Fundus, ctx: _TreeContext) -> list:
    """The main vessels leaving the disc, as (points, widths, is_vein): for veins, then
    arteries, the upper and lower arcade with a nasal vessel each, then 1 to 3 small nasal ones."""
    s = ctx.scale
    dist_vec = f.fovea - f.disc
    dist = float(np.linalg.norm(dist_vec))
    ex = dist_vec / dist
    ey = np.array([-ex[1], ex[0]])

    def to_image(wp: np.ndarray) -> np.ndarray:
        return f.disc + wp[:, :1] * dist * ex + wp[:, 1:] * dist * ey

    roots = []  # (points, widths, is_vein)
    for is_vein in (True, False):
        w0 = (rng.uniform(10, 13) if is_vein else rng.uniform(7, 9.5)) * s
        for sign in (-1.0, 1.0):
            arcade = np.array(
                [
                    (0.0, 0.03),
                    (0.05, 0.25),
                    (0.22, 0.5),
                    (0.55, 0.66),
                    (0.95, 0.66),
                    (1.35, 0.56),
                    (1.75, 0.44),
                    (2.2, 0.34),
                    (2.7, 0.26),
                ]
            )
            arcade[:, 1] *= rng.uniform(0.85, 1.2)
            arcade[1:] += rng.normal(0.0, 0.035, arcade[1:].shape)
            arcade[:, 1] *= sign
            nasal = np.array([(0.0, 0.03), (-0.08, 0.3), (-0.25, 0.6), (-0.45, 0.95), (-0.6, 1.3), (-0.7, 1.7)])
            rot = rng.normal(0.0, 0.3)
            c, sn = math.cos(rot), math.sin(rot)
            nasal = nasal @ np.array([[c, -sn], [sn, c]]).T
            nasal[1:] += rng.normal(0.0, 0.05, nasal[1:].shape)
            nasal[:, 1] *= sign
            for wp, w in ((arcade, w0), (nasal, w0 * rng.uniform(0.55, 0.8))):
                pts = _catmull_rom(to_image(wp), ctx.step)
                keep = np.linalg.norm(pts - f.centre, axis=1) < f.radius * 1.02
                pts = pts[: np.argmin(keep) if not keep.all() else len(pts)]
                if len(pts) > 3:
                    roots.append((pts, np.linspace(w, w * rng.uniform(0.35, 0.55), len(pts)), is_vein))
        for _ in range(rng.integers(1, 4)):  # smaller vessels leaving the disc nasally
            heading = math.atan2(-ex[1], -ex[0]) + rng.uniform(-1.3, 1.3)
            start = f.disc + rng.normal(0, 0.2 * f.disc_radius, 2)
            pts = _random_walk(rng, start, heading, rng.uniform(0.6, 1.5) * dist, ctx)
            if len(pts) > 3:
                w = w0 * rng.uniform(0.3, 0.5)
                roots.append((pts, np.linspace(w, ctx.min_width, len(pts)), is_vein))
    return roots


def _paint_trees(rng: np.random.Generator, roots: list, ctx: _TreeContext, size: int) -> tuple[np.ndarray, ...]:
    """Grows each root's tree and paints it at 2x; returns the (veins, arteries, reflex)
    coverage maps in [0, 1] at ``size``."""
    s = ctx.scale
    sup = 2  # supersampling factor
    canvases = {True: np.zeros((size * sup, size * sup), np.uint8), False: np.zeros((size * sup, size * sup), np.uint8)}
    reflex = np.zeros((size * sup, size * sup), np.uint8)
    shift = 3
    k = sup * (1 << shift)
    for root_pts, root_w, is_vein in roots:
        tree: list = []
        ends: list = []
        _grow_tree(rng, root_pts, root_w, 0, ctx, tree, ends)
        canvas = canvases[is_vein]
        for pts, widths in tree:
            thick = np.maximum(1, np.round(widths * sup)).astype(int)
            value = _vessel_value(widths, s)
            ipts = np.round(pts * k).astype(np.int32)
            cut = np.flatnonzero(np.diff(thick) != 0) + 1
            for a, b in zip(np.concatenate([[0], cut]), np.concatenate([cut, [len(pts)]])):
                seg = ipts[max(0, a - 1) : b]
                if len(seg) >= 2:
                    cv2.polylines(
                        canvas, [seg.reshape(-1, 1, 2)], False, int(value[a]), int(thick[a]), cv2.LINE_AA, shift
                    )
            if not is_vein and widths[0] > 4.5 * s:
                wide = widths > 4.5 * s
                seg = ipts[wide]
                if len(seg) >= 2:
                    cv2.polylines(
                        reflex,
                        [seg.reshape(-1, 1, 2)],
                        False,
                        255,
                        max(1, int(round(widths[0] * sup * 0.2))),
                        cv2.LINE_AA,
                        shift,
                    )
        for end, end_w in ends:  # a bulb continuing its own vessel, never an isolated dot
            r = end_w * rng.uniform(0.9, 1.6) * sup
            value = min(255, int(_vessel_value(np.array([end_w]), s)[0] * rng.uniform(1.0, 1.3)))
            cv2.circle(
                canvas, tuple(np.round(end * k).astype(int)), int(r * (1 << shift)), value, -1, cv2.LINE_AA, shift
            )

    def down(c: np.ndarray) -> np.ndarray:
        small = cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
        # rounder cross-section: dark core, fading walls
        return cv2.GaussianBlur(small, (0, 0), 0.5 * max(s, 0.5)) / 255

    return down(canvases[True]), down(canvases[False]), down(reflex)
