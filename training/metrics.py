"""Pixel metrics over a whole split, in bounded memory (docs/training.md#the-published-recipe).

* :class:`ConfusionAccumulator`: TP / FP / FN / TN per class at fixed thresholds -> IoU,
  F1 (Dice), precision, recall. Counts are summed over every pixel of the split, so a
  metric is the dataset-level ("micro over pixels") value, not a mean of per-image values.
* :class:`PRAccumulator`: per-class histograms of positive and negative pixels over
  quantised probability -> exact step-wise average precision (AUPR, the IDRiD challenge
  metric, sklearn's ``average_precision_score``), the PR curve, and F1-optimal thresholds.
* :class:`ElevenPointAccumulator`: the 11-threshold AUPR of the IDRiD/DDR literature (the
  challenge, M2MRF, HRDecoder), comparable with published numbers but not with exact AP.
* :class:`MetricSuite`: one set of accumulators per source dataset, plus their sum.

Inputs are torch tensors (any device) or numpy arrays: probabilities and targets
``B x C x H x W`` (C = 4: EX, HE, MA, SE), optional ``valid`` ``B x 1 x H x W`` (pixels where it
is 0, outside the field of view, are not counted). Targets and ``valid`` are binarised at 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hydralanet.config import CLASSES, DEFAULT_THRESHOLD

METRICS: tuple[str, ...] = ("aupr", "f1", "iou", "precision", "recall", "aupr11")
ELEVEN_THRESHOLDS = np.linspace(0.0, 1.0, 11)


def _as_tensor(x: Any) -> torch.Tensor:
    return x.detach() if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))


def _prepare(
    probs: Any, targets: Any, valid: Any, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Checked ``(probs float, targets bool, valid bool broadcastable or None)`` on probs' device."""
    p, t = _as_tensor(probs), _as_tensor(targets)
    if p.ndim != 4 or p.shape != t.shape or p.shape[1] != num_classes:
        raise ValueError(
            f"probabilities and targets must both be B x {num_classes} x H x W; "
            f"got {tuple(p.shape)} and {tuple(t.shape)}"
        )
    p = p.float()
    if p.numel() and (torch.isnan(p).any() or p.min() < 0 or p.max() > 1):
        raise ValueError("probabilities must lie in [0, 1] without NaN (pass sigmoid(logits), not logits)")
    t = t.to(p.device) > 0.5
    v = None
    if valid is not None:
        v = _as_tensor(valid).to(p.device)
        b, c, h, w = p.shape
        if v.ndim != 4 or v.shape[0] != b or v.shape[1] not in (1, c) or v.shape[2:] != (h, w):
            raise ValueError(f"valid must be {b} x 1 x {h} x {w} (or {b} x {c} x {h} x {w}), got {tuple(v.shape)}")
        v = v > 0.5
    return p, t, v


def _ratio(num: np.ndarray, den: np.ndarray, both_empty: np.ndarray) -> np.ndarray:
    """num / den; where den is 0 the value is 1 if prediction and target are both empty, else 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    return np.where(den > 0, out, np.where(both_empty, 1.0, 0.0))


class ConfusionAccumulator:
    """Per-class TP / FP / FN / TN at ``thresholds`` (one, or one per class); a pixel is
    predicted positive when its probability is ``>=`` the threshold.

    Empty denominators: when a class has neither predicted nor target pixels, IoU, F1,
    precision and recall are all 1 (nothing to find, nothing falsely found); any other zero
    denominator (e.g. precision with no prediction but a missed lesion) gives 0.
    """

    def __init__(
        self, num_classes: int = len(CLASSES), thresholds: float | Sequence[float] = DEFAULT_THRESHOLD
    ) -> None:
        values = np.asarray(thresholds, dtype=np.float64).ravel()
        if values.size == 1:
            values = np.full(num_classes, values[0])
        if values.size != num_classes or not np.all((values >= 0) & (values <= 1)):
            raise ValueError(f"thresholds must be one value or {num_classes} values in [0, 1], got {thresholds!r}")
        self.num_classes, self.thresholds = num_classes, values
        self.tp, self.fp, self.fn, self.tn = (np.zeros(num_classes, dtype=np.int64) for _ in range(4))

    def update(self, probs: Any, targets: Any, valid: Any = None) -> None:
        p, t, v = _prepare(probs, targets, valid, self.num_classes)
        pred = p >= torch.as_tensor(self.thresholds, dtype=p.dtype, device=p.device).view(1, -1, 1, 1)
        if v is not None:
            pred, t = pred & v, t & v
            counted = v.expand_as(pred).sum(dim=(0, 2, 3))
        else:
            counted = torch.full((self.num_classes,), p[:, 0].numel(), device=p.device)
        tp = (pred & t).sum(dim=(0, 2, 3))
        fp = pred.sum(dim=(0, 2, 3)) - tp
        fn = t.sum(dim=(0, 2, 3)) - tp
        counts = torch.stack([tp, fp, fn, counted - tp - fp - fn]).cpu().numpy().astype(np.int64)
        self.tp += counts[0]
        self.fp += counts[1]
        self.fn += counts[2]
        self.tn += counts[3]

    def merge(self, other: ConfusionAccumulator) -> ConfusionAccumulator:
        """Add another accumulator's counts (same thresholds) into this one; returns self."""
        if other.num_classes != self.num_classes or not np.array_equal(other.thresholds, self.thresholds):
            raise ValueError("can only merge accumulators with the same classes and thresholds")
        for name in ("tp", "fp", "fn", "tn"):
            getattr(self, name)[:] += getattr(other, name)
        return self

    def compute(self) -> dict[str, Any]:
        """``{"iou", "f1", "precision", "recall"}`` -> float arrays of length C, plus
        ``"macro"`` -> their class means (floats)."""
        tp, fp, fn = (x.astype(np.float64) for x in (self.tp, self.fp, self.fn))
        both_empty = (tp + fp + fn) == 0
        scores = {
            "iou": _ratio(tp, tp + fp + fn, both_empty),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn, both_empty),
            "precision": _ratio(tp, tp + fp, both_empty),
            "recall": _ratio(tp, tp + fn, both_empty),
        }
        return {**scores, "macro": {k: float(v.mean()) for k, v in scores.items()}}


@dataclass(frozen=True)
class PRCurve:
    """One class's precision-recall curve, one point per distinct quantised threshold,
    thresholds descending (recall ascending). A pixel is positive when ``p >= threshold``."""

    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray
    positives: int  # target pixels of the class

    @property
    def f1(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = 2 * self.precision * self.recall / (self.precision + self.recall)
        return np.nan_to_num(out, nan=0.0)


LOGIT_RANGE = 17.0  # float32 sigmoid is exactly 1 beyond a logit of ~16.6; bins span [-17, 17]
SCALES = ("logit", "linear")


class PRAccumulator:
    """Histograms of positive / negative pixel counts per class over ``bins`` probability bins.

    ``scale="logit"`` (default): bins of equal width in logit(p) over [-17, 17], the range of
    float32 probabilities; bin k holds ``edge(k) <= p < edge(k + 1)``, ``edge(k) =
    sigmoid(-17 + 34 k / bins)``. Models trained with a Tversky loss put most lesion pixels
    above p = 0.9999, where equal-width probability bins lump them together as ties
    (understating AP: on the bundled model's test split EX read 0.77 binned vs 0.83 exact);
    in logit space they stay apart. ``scale="linear"``: bin k holds ``k / bins <= p < (k + 1)
    / bins`` (p = 1 in the last).

    Memory is ``2 x C x bins`` counters whatever the number of updates. Average precision is
    sklearn's step-wise AP = sum_n (R_n - R_{n-1}) P_n over the distinct thresholds, no
    interpolation; it is exact when no bin holds two different probabilities, and otherwise
    treats values sharing a bin as ties.
    """

    def __init__(self, num_classes: int = len(CLASSES), bins: int = 65536, scale: str = "logit") -> None:
        if isinstance(bins, bool) or int(bins) != bins or bins < 2:
            raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
        self.num_classes, self.bins, self.scale = num_classes, int(bins), scale
        self.positives = np.zeros((num_classes, bins), dtype=np.int64)
        self.negatives = np.zeros((num_classes, bins), dtype=np.int64)

    def _index(self, p: torch.Tensor) -> torch.Tensor:
        if self.scale == "linear":
            position = p * self.bins
        else:  # logit(0) = -inf and logit(1) = inf land in the first and last bin
            position = (torch.logit(p) + LOGIT_RANGE) * (self.bins / (2 * LOGIT_RANGE))
            position = position.nan_to_num(nan=0.0, posinf=float(self.bins), neginf=0.0)
        return position.floor().clamp_(0, self.bins - 1).long()

    def edges(self, k: np.ndarray | int) -> np.ndarray:
        """The lower probability edge of bin(s) ``k``: the threshold ``p >= edge`` that keeps bins k and up."""
        k = np.asarray(k, dtype=np.float64)
        if self.scale == "linear":
            return k / self.bins
        return 1.0 / (1.0 + np.exp(-(-LOGIT_RANGE + 2 * LOGIT_RANGE * k / self.bins)))

    def threshold_index(self, threshold: float) -> int:
        """The bin whose lower edge is ``threshold`` (thresholds from :meth:`best_thresholds`
        always are one), else the nearest edge."""
        t = min(max(float(threshold), 0.0), 1.0)
        if self.scale == "linear":
            return int(round(t * self.bins))
        if t <= 0.0:
            return 0
        if t >= 1.0:
            return self.bins
        position = (np.log(t) - np.log1p(-t) + LOGIT_RANGE) * self.bins / (2 * LOGIT_RANGE)
        return int(min(max(round(position), 0), self.bins))

    def update(self, probs: Any, targets: Any, valid: Any = None) -> None:
        p, t, v = _prepare(probs, targets, valid, self.num_classes)
        index = self._index(p)
        channel = torch.arange(self.num_classes, device=p.device).view(1, -1, 1, 1)
        code = index + self.bins * (2 * channel + t.long())
        if v is not None:
            code = code[v.expand_as(code)]
        if code.is_cuda and torch.are_deterministic_algorithms_enabled():
            code = code.cpu()  # CUDA bincount is flagged non-deterministic and would raise
        counts = torch.bincount(code.flatten(), minlength=2 * self.num_classes * self.bins)
        counts = counts.view(self.num_classes, 2, self.bins).cpu().numpy()
        self.negatives += counts[:, 0]
        self.positives += counts[:, 1]

    def merge(self, other: PRAccumulator) -> PRAccumulator:
        """Add another accumulator's histograms (same shape) into this one; returns self."""
        if other.positives.shape != self.positives.shape or other.scale != self.scale:
            raise ValueError(
                f"cannot merge {other.scale} histograms of shape {other.positives.shape} into "
                f"{self.scale} ones of shape {self.positives.shape}"
            )
        self.positives += other.positives
        self.negatives += other.negatives
        return self

    def curve(self, c: int) -> PRCurve:
        """The precision-recall curve of class ``c`` (recall is NaN when it has no positives)."""
        pos, neg = self.positives[c, ::-1], self.negatives[c, ::-1]  # highest threshold first
        seen = (pos + neg) > 0
        tp, fp = np.cumsum(pos)[seen], np.cumsum(neg)[seen]
        total = int(pos.sum())
        thresholds = self.edges(np.arange(self.bins - 1, -1, -1))[seen]
        precision = tp / np.maximum(tp + fp, 1)  # tp + fp > 0 at every seen threshold
        recall = tp / total if total else np.full(tp.shape, np.nan)
        return PRCurve(precision=precision, recall=recall, thresholds=thresholds, positives=total)

    def average_precision(self) -> np.ndarray:
        """Step-wise AP per class (length C); NaN for a class without positive pixels."""
        out = np.full(self.num_classes, np.nan)
        for c in range(self.num_classes):
            curve = self.curve(c)
            if curve.positives:
                out[c] = float(np.sum(np.diff(curve.recall, prepend=0.0) * curve.precision))
        return out

    def best_thresholds(self, default: float = DEFAULT_THRESHOLD) -> np.ndarray:
        """Per class the threshold (``p >= t``) with the highest F1 on the data seen; the
        highest such threshold on ties, ``default`` for a class without positive pixels."""
        out = np.full(self.num_classes, float(default))
        for c in range(self.num_classes):
            curve = self.curve(c)
            if curve.positives:
                out[c] = curve.thresholds[int(np.argmax(curve.f1))]
        return out


class ElevenPointAccumulator:
    """The literature's AUPR (docs/architecture.md#probabilities-and-calibration): precision and recall at the 11 thresholds 0, 0.1,
    ..., 1 (a pixel is predicted when ``p > t``), precision 1 where nothing is predicted, and
    the trapezoidal area under those points from the highest threshold to the lowest. At t = 1 nothing is predicted,
    so the curve always reaches (recall 0, precision 1): on a coarse grid that corner adds area
    exact AP does not have, which is why it reads several points higher.
    """

    def __init__(self, num_classes: int = len(CLASSES), thresholds: Sequence[float] = ELEVEN_THRESHOLDS) -> None:
        self.num_classes, self.thresholds = num_classes, np.asarray(thresholds, dtype=np.float64)
        k = len(self.thresholds)
        self.tp = np.zeros((num_classes, k), dtype=np.int64)
        self.fp = np.zeros((num_classes, k), dtype=np.int64)
        self.positives = np.zeros(num_classes, dtype=np.int64)

    def update(self, probs: Any, targets: Any, valid: Any = None) -> None:
        p, t, v = _prepare(probs, targets, valid, self.num_classes)
        if v is not None:
            t = t & v
        self.positives += t.sum(dim=(0, 2, 3)).cpu().numpy().astype(np.int64)
        for k, threshold in enumerate(self.thresholds):
            pred = p > float(threshold)
            if v is not None:
                pred = pred & v
            tp = (pred & t).sum(dim=(0, 2, 3))
            self.tp[:, k] += tp.cpu().numpy().astype(np.int64)
            self.fp[:, k] += (pred.sum(dim=(0, 2, 3)) - tp).cpu().numpy().astype(np.int64)

    def merge(self, other: ElevenPointAccumulator) -> ElevenPointAccumulator:
        if other.tp.shape != self.tp.shape or not np.array_equal(other.thresholds, self.thresholds):
            raise ValueError("can only merge 11-point accumulators with the same classes and thresholds")
        self.tp += other.tp
        self.fp += other.fp
        self.positives += other.positives
        return self

    def curve(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """``(precision, recall)`` at each threshold, in threshold order."""
        tp, fp = self.tp[c].astype(np.float64), self.fp[c].astype(np.float64)
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
        recall = tp / self.positives[c] if self.positives[c] else np.full(tp.shape, np.nan)
        return precision, recall

    def aupr(self) -> np.ndarray:
        """Per class (length C); NaN for a class without positive pixels."""
        out = np.full(self.num_classes, np.nan)
        for c in range(self.num_classes):
            if self.positives[c]:
                precision, recall = self.curve(c)
                order = np.argsort(-self.thresholds)  # highest threshold first: recall never decreases
                out[c] = float(np.trapezoid(precision[order], recall[order]))
        return out


class MetricSuite:
    """Confusion and PR accumulators per source dataset; ``overall`` is their sum.

    ``compute()`` -> ``{"overall": {"EX": {"aupr", "f1", "iou", "precision", "recall"}, ...,
    "macro": {...}}, "<source>": {...}}``. The macro AUPR averages the classes that have
    positive pixels (NaN if none do); the other macros average all classes.
    """

    def __init__(
        self,
        sources: Sequence[str],
        thresholds: float | Sequence[float] = DEFAULT_THRESHOLD,
        bins: int = 65536,
        class_names: Sequence[str] = CLASSES,
        scale: str = "logit",
    ) -> None:
        if not sources or len(set(sources)) != len(sources) or "overall" in sources:
            raise ValueError(f"sources must be distinct names other than 'overall', got {list(sources)!r}")
        self.class_names = tuple(class_names)
        n = len(self.class_names)
        self.confusion = {s: ConfusionAccumulator(n, thresholds) for s in sources}
        self.pr = {s: PRAccumulator(n, bins, scale) for s in sources}
        self.eleven = {s: ElevenPointAccumulator(n) for s in sources}
        self.thresholds, self.bins, self.scale = thresholds, bins, scale

    def update(self, probs: Any, targets: Any, sources: str | Sequence[str], valid: Any = None) -> None:
        """Add a batch; ``sources`` names each image's dataset (or one name for the batch)."""
        names = [sources] * len(probs) if isinstance(sources, str) else list(sources)
        if len(names) != len(probs):
            raise ValueError(f"got {len(names)} source names for a batch of {len(probs)} images")
        for name in dict.fromkeys(names):
            if name not in self.pr:
                raise ValueError(f"unknown source {name!r}; this suite tracks {', '.join(self.pr)}")
            rows = [i for i, n in enumerate(names) if n == name]
            select = (lambda x, rows=rows: None if x is None else x[rows]) if len(rows) < len(names) else (lambda x: x)
            self.confusion[name].update(select(probs), select(targets), select(valid))
            self.pr[name].update(select(probs), select(targets), select(valid))
            self.eleven[name].update(select(probs), select(targets), select(valid))

    def _report(
        self, confusion: ConfusionAccumulator, pr: PRAccumulator, eleven: ElevenPointAccumulator
    ) -> dict[str, dict[str, float]]:
        scores, aupr, aupr11 = confusion.compute(), pr.average_precision(), eleven.aupr()
        report = {
            name: {"aupr": float(aupr[i]), **{k: float(scores[k][i]) for k in METRICS[1:5]}, "aupr11": float(aupr11[i])}
            for i, name in enumerate(self.class_names)
        }
        report["macro"] = {"aupr": _nanmean(aupr), **scores["macro"], "aupr11": _nanmean(aupr11)}
        return report

    def compute(self) -> dict[str, dict[str, dict[str, float]]]:
        n = len(self.class_names)
        confusion, pr = ConfusionAccumulator(n, self.thresholds), PRAccumulator(n, self.bins, self.scale)
        eleven = ElevenPointAccumulator(n)
        for name in self.pr:
            confusion.merge(self.confusion[name])
            pr.merge(self.pr[name])
            eleven.merge(self.eleven[name])
        per_source = {s: self._report(self.confusion[s], self.pr[s], self.eleven[s]) for s in self.pr}
        return {"overall": self._report(confusion, pr, eleven), **per_source}

    def overall_pr(self) -> PRAccumulator:
        """The PR histograms of all sources together."""
        pr = PRAccumulator(len(self.class_names), self.bins, self.scale)
        for part in self.pr.values():
            pr.merge(part)
        return pr


def _nanmean(values: np.ndarray) -> float:
    """The mean of the finite values (a class without lesion pixels has no AUPR), NaN if none."""
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def bootstrap_average_precision(
    images: Sequence[PRAccumulator], *, resamples: int = 1000, level: float = 0.95, seed: int = 0, chunk: int = 64
) -> np.ndarray:
    """Percentile bootstrap interval of the pooled AP over images: ``images`` holds one
    accumulator per image; each resample draws as many images with replacement, pools their
    histograms and computes AP. Returns ``C x 2`` (low, high) at ``level``; NaN for a class
    that no resample gives any lesion pixel."""
    if not images:
        raise ValueError("bootstrap needs at least one image")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    first = images[0]
    # Only bins that some image uses matter: the rest stay zero in every pooled histogram.
    pos = np.stack([a.positives for a in images]).astype(np.float64)  # N x C x bins
    neg = np.stack([a.negatives for a in images]).astype(np.float64)
    used = (pos.sum(axis=0) + neg.sum(axis=0)).sum(axis=0) > 0
    pos, neg = pos[:, :, used], neg[:, :, used]
    n, c, k = pos.shape
    rng = np.random.default_rng(seed)
    aps = np.full((resamples, c), np.nan)
    pool = PRAccumulator(c, bins=k, scale=first.scale)
    for start in range(0, resamples, chunk):
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(chunk, resamples - start)).astype(np.float64)
        pooled_pos = np.tensordot(counts, pos, axes=1)  # chunk x C x k
        pooled_neg = np.tensordot(counts, neg, axes=1)
        for j in range(len(counts)):
            pool.positives = pooled_pos[j].astype(np.int64)
            pool.negatives = pooled_neg[j].astype(np.int64)
            aps[start + j] = pool.average_precision()
    tail = (1.0 - level) / 2 * 100
    out = np.full((c, 2), np.nan)
    for i in range(c):
        values = aps[:, i][np.isfinite(aps[:, i])]
        if values.size:
            out[i] = np.percentile(values, [tail, 100 - tail])
    return out
