"""Per-class probability calibration (docs/architecture.md#probabilities-and-calibration), fitted and measured on PR histograms.

A model trained with Focal-Tversky saturates: most lesion pixels sit above p = 0.9999 and its
F1-optimal thresholds at 0.99999, unusable in a slider and not a probability anyone can read.
Platt scaling per class, ``p = sigmoid(a * logit + b)`` with ``a > 0``, is monotone (AUPR and
the ranking of pixels are unchanged) and fits in two numbers a class in ``config.json``.

Everything here reads :class:`training.metrics.PRAccumulator` histograms in logit bins (65,536
bins over [-17, 17], 0.0005 wide): fitting weighs each bin's centre by its positive and
negative pixel counts, so a whole split of pixels is fitted exactly in bounded memory.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from hydralanet.config import CLASSES

from .metrics import LOGIT_RANGE, PRAccumulator
from .runfolder import save_figure

ECE_BINS = 15  # equal-width probability bins, the usual choice for expected calibration error


def bin_logits(pr: PRAccumulator) -> np.ndarray:
    """The logit at the centre of each bin of a logit-scale accumulator."""
    if pr.scale != "logit":
        raise ValueError("calibration needs PR histograms in logit bins (scale='logit')")
    return -LOGIT_RANGE + (np.arange(pr.bins) + 0.5) * (2 * LOGIT_RANGE / pr.bins)


def fit_platt(pr: PRAccumulator, *, iterations: int = 100) -> dict[str, tuple[float, float]]:
    """Per class ``(a, b)`` minimising the binary cross-entropy of ``sigmoid(a z + b)`` over the
    histograms' pixels (Newton's method: the loss is convex in (a, b)). A class without
    positive or without negative pixels keeps the identity ``(1, 0)``."""
    z = bin_logits(pr)
    out = {}
    for c, name in enumerate(CLASSES[: pr.num_classes]):
        pos, neg = pr.positives[c].astype(np.float64), pr.negatives[c].astype(np.float64)
        keep = (pos + neg) > 0
        if pos.sum() == 0 or neg.sum() == 0:
            out[name] = (1.0, 0.0)
            continue
        out[name] = _newton(z[keep], pos[keep], neg[keep], iterations)
    return out


def _newton(z: np.ndarray, pos: np.ndarray, neg: np.ndarray, iterations: int) -> tuple[float, float]:
    total = pos.sum() + neg.sum()
    pos, neg = pos / total, neg / total
    x = np.stack([z, np.ones_like(z)], axis=1)
    theta = np.array([1.0, 0.0])

    def loss(t: np.ndarray) -> float:
        s = x @ t
        return float(np.sum(pos * np.logaddexp(0, -s) + neg * np.logaddexp(0, s)))

    current = loss(theta)
    for _ in range(iterations):
        p = _sigmoid(x @ theta)
        grad = x.T @ ((pos + neg) * p - pos)
        hess = (x * ((pos + neg) * p * (1 - p))[:, None]).T @ x + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-6:  # backtracking: Newton can overshoot on nearly separable classes
            candidate = theta - scale * step
            value = loss(candidate)
            if value <= current:
                break
            scale /= 2
        if scale <= 1e-6 or current - value < 1e-12:
            theta = candidate if value <= current else theta
            break
        theta, current = candidate, value
    a, b = float(theta[0]), float(theta[1])
    if not (math.isfinite(a) and math.isfinite(b) and a > 0):
        return (1.0, 0.0)  # never reorder pixels: a non-increasing fit falls back to the identity
    return a, b


def calibrate_threshold(threshold: float, ab: tuple[float, float]) -> float:
    """A raw-probability threshold as the calibrated probability of the same pixels' cut."""
    t = min(max(float(threshold), 1e-12), 1 - 1e-12)
    a, b = ab
    return float(1 / (1 + math.exp(-(a * (math.log(t) - math.log1p(-t)) + b))))


def reliability(
    pr: PRAccumulator, calibration: dict[str, tuple[float, float]] | None = None, bins: int = ECE_BINS
) -> dict[str, dict[str, np.ndarray | float]]:
    """Per class: ``confidence`` (mean predicted probability), ``accuracy`` (fraction of lesion
    pixels) and ``count`` per equal-width probability bin, and ``ece`` = sum over bins of
    count share x |accuracy - confidence|. The histograms' probabilities are taken as they
    are, or through ``calibration`` when given (raw histograms, calibrated view)."""
    z = bin_logits(pr)
    out = {}
    for c, name in enumerate(CLASSES[: pr.num_classes]):
        a, b = calibration[name] if calibration else (1.0, 0.0)
        p = _sigmoid(a * z + b)
        which = np.minimum((p * bins).astype(int), bins - 1)
        pos, neg = pr.positives[c].astype(np.float64), pr.negatives[c].astype(np.float64)
        n = pos + neg
        count = np.bincount(which, weights=n, minlength=bins)
        hits = np.bincount(which, weights=pos, minlength=bins)
        mass = np.bincount(which, weights=n * p, minlength=bins)
        with np.errstate(divide="ignore", invalid="ignore"):
            confidence, accuracy = mass / count, hits / count
        total = count.sum()
        ece = float(np.nansum(count / total * np.abs(accuracy - confidence))) if total else float("nan")
        out[name] = {"confidence": confidence, "accuracy": accuracy, "count": count, "ece": ece}
    return out


def plot_reliability(curves: dict[str, dict], path: Path, *, title: str) -> None:
    """Reliability diagram: fraction of lesion pixels against predicted probability per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hydralanet.report.overlay import COLOURS

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for name, curve in curves.items():
        seen = curve["count"] > 0
        colour = np.asarray(COLOURS[name]) / 255
        ax.plot(
            curve["confidence"][seen],
            curve["accuracy"][seen],
            "o-",
            color=colour,
            markeredgecolor="black",
            label=f"{name}: ECE {curve['ece']:.4f}",
        )
    ax.set(xlabel="predicted probability", ylabel="fraction of lesion pixels", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _sigmoid(s: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * s))  # no overflow for large |s|, unlike 1 / (1 + exp(-s))
