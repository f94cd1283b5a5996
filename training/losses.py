"""DualLoss = 0.8 x focal Tversky + 0.2 x BCE (the published *recipe*, docs/training.md): the math in plain functions,
the ``nn.Module`` s thin wrappers that check their arguments once.

Shapes: ``logits`` and ``targets`` are ``B x C x H x W`` (C = 4: EX, HE, MA, SE), targets in
{0, 1}. ``valid`` (optional) is ``B x 1 x H x W`` or ``B x C x H x W`` in {0, 1}: pixels where it
is 0 (outside the field of view, or the black border of an augmentation) count in neither term.
Per-class settings are sequences of length C or a single number for every class.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hydralanet.config import CLASSES

from .config import TVERSKY_OVER, TrainConfig

DEFAULT_ALPHA: tuple[float, ...] = (0.4, 0.4, 0.2, 0.4)  # recipe: weight of false positives
DEFAULT_BETA: tuple[float, ...] = (0.6, 0.6, 0.8, 0.6)  # recipe: weight of misses; MA punishes them most
DEFAULT_GAMMA = 2.0  # recipe: focal exponent
DEFAULT_CLASS_WEIGHTS: tuple[float, ...] = (1.0, 1.0, 5.0, 1.0)  # recipe: MA x 5
DEFAULT_SMOOTH = 1e-6  # recipe: keeps an empty target with an empty prediction at TI = 1

PerClass = float | Sequence[float] | Tensor


def _per_class(value: PerClass | None, reference: Tensor, default: float = 1.0) -> Tensor:
    """A ``C``-vector on ``reference`` 's device (``C`` = its channel count)."""
    num_classes = reference.shape[1]
    if value is None:
        value = default
    out = torch.as_tensor(value, dtype=torch.float32, device=reference.device).flatten()
    if out.numel() == 1:
        out = out.expand(num_classes)
    if out.numel() != num_classes:
        raise ValueError(f"expected one value per class ({num_classes}), got {out.numel()}: {value!r}")
    return out


def _check_shapes(logits: Tensor, targets: Tensor, valid: Tensor | None) -> None:
    if logits.ndim != 4 or logits.shape != targets.shape:
        raise ValueError(
            f"logits and targets must both be B x C x H x W; got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    if valid is not None:
        b, c, h, w = logits.shape
        if valid.ndim != 4 or valid.shape[0] != b or valid.shape[1] not in (1, c) or valid.shape[2:] != (h, w):
            raise ValueError(f"valid must be {b} x 1 x {h} x {w} (or {b} x {c} x {h} x {w}), got {tuple(valid.shape)}")


def focal_tversky_loss(
    logits: Tensor,
    targets: Tensor,
    alpha: PerClass,
    beta: PerClass,
    gamma: float = DEFAULT_GAMMA,
    class_weights: PerClass | None = None,
    smooth: float = DEFAULT_SMOOTH,
    valid: Tensor | None = None,
    over: str = "image",
) -> Tensor:
    """Scalar focal Tversky loss.

    Per image and class over pixels, with p = sigmoid(logits) and t = targets:
    TP = sum p t, FP = sum p (1 - t), FN = sum (1 - p) t; TI = (TP + s) / (TP + a FP + b FN + s);
    loss = (1 - TI) ** gamma, averaged over the batch, times the class weight, averaged over
    classes (a plain mean of C weighted terms, so weights (1, 1, 5, 1) make MA count 5 / 4).

    ``over="batch"`` sums TP, FP and FN over the whole batch before the index (one TI per
    class). Per image (recipe), an image without class c has TI = s / (a FP + s): any false
    positive at all saturates it at loss 1, with no gradient, so false positives in images
    without the lesion go unpunished by this term. Over the batch they count as long as some
    image in it has the lesion.
    """
    _check_shapes(logits, targets, valid)
    p = torch.sigmoid(logits.float())
    t = targets.float()
    if valid is not None:  # zeroing both p and t removes a pixel from TP, FP and FN alike
        v = valid.float()
        p, t = p * v, t * v
    if over not in TVERSKY_OVER:
        raise ValueError(f"over must be one of {TVERSKY_OVER}, got {over!r}")
    dims = (2, 3) if over == "image" else (0, 2, 3)
    tp = (p * t).sum(dim=dims)  # B x C, or C over the batch
    fp = p.sum(dim=dims) - tp
    fn = t.sum(dim=dims) - tp
    a, b = _per_class(alpha, logits), _per_class(beta, logits)
    tversky = (tp + smooth) / (tp + a * fp + b * fn + smooth)
    # rounding can push TI a hair above 1; a fractional gamma would turn that into NaN
    per_class = (1 - tversky).clamp_min(0).pow(gamma)
    if over == "image":
        per_class = per_class.mean(dim=0)  # C
    return (per_class * _per_class(class_weights, logits)).mean()


def weighted_bce_with_logits(
    logits: Tensor,
    targets: Tensor,
    class_weights: PerClass | None = None,
    pos_weight: PerClass | None = None,
    valid: Tensor | None = None,
) -> Tensor:
    """Scalar binary cross-entropy from logits (numerically stable for any logit).

    Mean over the batch's (valid) pixels per class, times the class weight, averaged over
    classes. ``pos_weight`` multiplies the positive term per class, as in torch.
    """
    _check_shapes(logits, targets, valid)
    pw = None if pos_weight is None else _per_class(pos_weight, logits).view(1, -1, 1, 1)
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), pos_weight=pw, reduction="none")
    if valid is None:
        per_class = loss.mean(dim=(0, 2, 3))
    else:
        v = valid.float().expand_as(loss)
        per_class = (loss * v).sum(dim=(0, 2, 3)) / v.sum(dim=(0, 2, 3)).clamp_min(1)
    return (per_class * _per_class(class_weights, logits)).mean()


def _checked(name: str, value: PerClass | None, num_classes: int, *, allow_zero: bool = True) -> tuple[float, ...]:
    values = torch.as_tensor(1.0 if value is None else value, dtype=torch.float64).flatten().tolist()
    if len(values) == 1:
        values = values * num_classes
    if len(values) != num_classes:
        raise ValueError(f"{name} needs one value per class ({', '.join(CLASSES)}) or a single number, got {value!r}")
    if any(not v >= 0 or (v == 0 and not allow_zero) or v == float("inf") for v in values):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} values must be finite and {bound}, got {value!r}")
    return tuple(values)


class FocalTverskyLoss(nn.Module):
    """:func:`focal_tversky_loss` with its settings checked once; ``forward`` -> scalar."""

    def __init__(
        self,
        alpha: PerClass = DEFAULT_ALPHA,
        beta: PerClass = DEFAULT_BETA,
        gamma: float = DEFAULT_GAMMA,
        class_weights: PerClass | None = DEFAULT_CLASS_WEIGHTS,
        smooth: float = DEFAULT_SMOOTH,
        num_classes: int = len(CLASSES),
        over: str = "image",
    ) -> None:
        super().__init__()
        if over not in TVERSKY_OVER:
            raise ValueError(f"tversky_over must be one of {TVERSKY_OVER} (image published), got {over!r}")
        self.over = over
        a = _checked("alpha", alpha, num_classes)
        b = _checked("beta", beta, num_classes)
        if any(x + y <= 0 for x, y in zip(a, b)):
            raise ValueError(f"alpha + beta must be > 0 for every class, got alpha={a}, beta={b}")
        if not 0 < gamma < float("inf"):
            raise ValueError(f"gamma must be a positive number (2.0 published), got {gamma!r}")
        if not 0 < smooth < 1:
            raise ValueError(f"smooth must be in (0, 1) so empty masks stay defined (1e-6 published), got {smooth!r}")
        self.gamma, self.smooth = float(gamma), float(smooth)
        self.register_buffer("alpha", torch.tensor(a), persistent=False)
        self.register_buffer("beta", torch.tensor(b), persistent=False)
        self.register_buffer("class_weights", torch.tensor(_checked("class_weights", class_weights, num_classes)),
                             persistent=False)  # fmt: skip

    def forward(self, logits: Tensor, targets: Tensor, valid: Tensor | None = None) -> Tensor:
        return focal_tversky_loss(
            logits,
            targets,
            self.alpha,
            self.beta,
            self.gamma,
            self.class_weights,
            self.smooth,
            valid=valid,
            over=self.over,
        )


class DualLoss(nn.Module):
    """``tversky_weight`` x focal Tversky + ``bce_weight`` x weighted BCE (docs/training.md#the-published-recipe).

    ``forward(logits, targets, valid=None)`` -> scalar; :meth:`components` also returns the
    two terms (for logging). The same class weights scale both terms.
    """

    def __init__(
        self,
        tversky_weight: float = 0.8,
        bce_weight: float = 0.2,
        alpha: PerClass = DEFAULT_ALPHA,
        beta: PerClass = DEFAULT_BETA,
        gamma: float = DEFAULT_GAMMA,
        class_weights: PerClass = DEFAULT_CLASS_WEIGHTS,
        pos_weight: PerClass | None = None,
        smooth: float = DEFAULT_SMOOTH,
        num_classes: int = len(CLASSES),
        tversky_over: str = "image",
    ) -> None:
        super().__init__()
        for name, value in (("tversky_weight", tversky_weight), ("bce_weight", bce_weight)):
            if not 0 <= value < float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if tversky_weight + bce_weight <= 0:
            raise ValueError("tversky_weight and bce_weight are both 0: the loss would be constant")
        self.tversky_weight, self.bce_weight = float(tversky_weight), float(bce_weight)
        self.tversky = FocalTverskyLoss(alpha, beta, gamma, class_weights, smooth, num_classes, tversky_over)
        if pos_weight is None:
            self.pos_weight = None
        else:
            pos = _checked("pos_weight", pos_weight, num_classes, allow_zero=False)
            self.register_buffer("pos_weight", torch.tensor(pos), persistent=False)

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> DualLoss:
        """The loss a training config asks for (training and ``training.average`` build it here)."""
        return cls(
            tversky_weight=cfg.tversky_weight,
            bce_weight=cfg.bce_weight,
            alpha=cfg.alpha,
            beta=cfg.beta,
            gamma=cfg.gamma,
            class_weights=cfg.class_weights,
            pos_weight=cfg.pos_weight,
            tversky_over=cfg.tversky_over,
        )

    def components(self, logits: Tensor, targets: Tensor, valid: Tensor | None = None) -> dict[str, Tensor]:
        """``{"loss", "focal_tversky", "bce"}``: the weighted total and its unweighted terms."""
        tversky = self.tversky(logits, targets, valid)
        bce = weighted_bce_with_logits(logits, targets, self.tversky.class_weights, self.pos_weight, valid=valid)
        return {"loss": self.tversky_weight * tversky + self.bce_weight * bce, "focal_tversky": tversky, "bce": bce}

    def forward(self, logits: Tensor, targets: Tensor, valid: Tensor | None = None) -> Tensor:
        return self.components(logits, targets, valid)["loss"]
