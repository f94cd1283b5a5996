"""training.losses: hand-computed values, stability, gradients and argument checks."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import DualLoss, FocalTverskyLoss, focal_tversky_loss, weighted_bce_with_logits

LN3 = math.log(3.0)


def hand_example() -> tuple[torch.Tensor, torch.Tensor]:
    """1 x 1 x 2 x 2: p = sigmoid(logits) = [[0.5, 0.75], [0.25, 0.5]], t = [[1, 0], [1, 0]]."""
    logits = torch.tensor([[[[0.0, LN3], [-LN3, 0.0]]]])
    targets = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    return logits, targets


# By hand, alpha = 0.4, beta = 0.6, gamma = 2 (the smoothing s = 1e-6 moves these by ~1e-6):
#   TP = 0.5 * 1 + 0.25 * 1            = 0.75
#   FP = 0.75 + 0.5 (p where t = 0)    = 1.25
#   FN = (1 - 0.5) + (1 - 0.25)        = 1.25
#   TI = 0.75 / (0.75 + 0.4 * 1.25 + 0.6 * 1.25) = 0.75 / 2.0 = 0.375
#   focal Tversky = (1 - 0.375) ** 2   = 0.390625
# BCE per pixel: -ln 0.5 = ln 2, -ln(1 - 0.75) = ln 4, -ln 0.25 = ln 4, -ln 0.5 = ln 2
#   mean = (2 ln 2 + 2 ln 4) / 4       = 1.5 ln 2
# With pos_weight 2 the positive pixels (ln 2 and ln 4) count double: (6 ln 2 + 3 ln 2) / 4.
HAND_TVERSKY = 0.390625
HAND_BCE = 1.5 * math.log(2.0)


def test_focal_tversky_by_hand():
    logits, targets = hand_example()
    loss = focal_tversky_loss(logits, targets, alpha=0.4, beta=0.6, gamma=2.0)
    assert loss.item() == pytest.approx(HAND_TVERSKY, abs=1e-6)


def test_focal_tversky_over_the_batch_by_hand():
    # Image 0 is the hand example; image 1 has no lesion and p = 0.5 on its 4 pixels (FP 2).
    logits, targets = hand_example()
    logits = torch.cat([logits, torch.zeros(1, 1, 2, 2)])
    targets = torch.cat([targets, torch.zeros(1, 1, 2, 2)])
    # Over the batch: TP 0.75, FP 1.25 + 2, FN 1.25 -> TI = 0.75 / (0.75 + 0.4 * 3.25 + 0.6 * 1.25).
    ti = 0.75 / (0.75 + 0.4 * 3.25 + 0.6 * 1.25)
    batch = focal_tversky_loss(logits, targets, alpha=0.4, beta=0.6, gamma=2.0, over="batch")
    assert batch.item() == pytest.approx((1 - ti) ** 2, abs=1e-6)
    # Per image: the empty image's TI is s / (0.4 * 2 + s) ~ 0, its term ~1.
    image = focal_tversky_loss(logits, targets, alpha=0.4, beta=0.6, gamma=2.0)
    assert image.item() == pytest.approx((HAND_TVERSKY + 1.0) / 2, abs=1e-5)


def test_batch_tversky_punishes_false_positives_in_images_without_the_lesion():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 8, 8, requires_grad=True)
    targets = torch.zeros(3, 4, 8, 8)
    targets[0, 3, 2:4, 2:4] = 1  # soft exudate in image 0 only
    grads = {}
    for over in ("image", "batch"):
        loss = DualLoss(bce_weight=0.0, tversky_over=over)(logits, targets)
        (grad,) = torch.autograd.grad(loss, logits)
        grads[over] = grad[1:, 3]
    # Per image, the SE term of images 1 and 2 is saturated at 1: (almost) no gradient.
    assert grads["image"].abs().max() < 1e-8
    # Over the batch, every predicted SE pixel there is pushed down (positive gradient on its
    # logit), each thousands of times harder than per image.
    assert grads["batch"].min() > 1000 * grads["image"].abs().max()
    assert grads["batch"].min() > 1e-7


def test_bce_by_hand_and_pos_weight():
    logits, targets = hand_example()
    assert weighted_bce_with_logits(logits, targets).item() == pytest.approx(HAND_BCE, rel=1e-6)
    weighted = weighted_bce_with_logits(logits, targets, pos_weight=2.0)
    assert weighted.item() == pytest.approx(9 * math.log(2.0) / 4, rel=1e-6)


def test_bce_matches_the_textbook_formula():
    torch.manual_seed(3)
    logits, targets = torch.randn(2, 4, 5, 5) * 3, (torch.rand(2, 4, 5, 5) > 0.7).float()
    weights, pos_weight = torch.tensor([1.0, 2.0, 5.0, 0.5]), torch.tensor([1.0, 3.0, 10.0, 1.0])
    p = torch.sigmoid(logits.double())
    pw = pos_weight.double().view(1, 4, 1, 1)
    manual = -(pw * targets * torch.log(p) + (1 - targets) * torch.log(1 - p))  # B x C x H x W
    expected = (manual.mean(dim=(0, 2, 3)) * weights.double()).mean()
    got = weighted_bce_with_logits(logits, targets, class_weights=weights, pos_weight=pos_weight)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_dual_loss_by_hand_one_class():
    logits, targets = hand_example()
    loss = DualLoss(alpha=0.4, beta=0.6, class_weights=1.0, num_classes=1)(logits, targets)
    assert loss.item() == pytest.approx(0.8 * HAND_TVERSKY + 0.2 * HAND_BCE, rel=1e-5)


def test_class_weights_multiply_then_average_over_classes():
    logits, targets = (x.repeat(2, 4, 1, 1) for x in hand_example())  # B=2, the same example in all 4 classes
    parts = DualLoss(alpha=0.4, beta=0.6).components(logits, targets)  # class weights (1, 1, 5, 1): mean 2
    assert parts["focal_tversky"].item() == pytest.approx(2 * HAND_TVERSKY, rel=1e-5)
    assert parts["bce"].item() == pytest.approx(2 * HAND_BCE, rel=1e-6)
    assert parts["loss"].item() == pytest.approx(0.8 * parts["focal_tversky"].item() + 0.2 * parts["bce"].item())


def test_default_alpha_beta_are_per_class():
    logits, targets = (x.repeat(1, 4, 1, 1) for x in hand_example())
    per_class = FocalTverskyLoss(class_weights=(1, 0, 0, 0))(logits, targets) * 4  # EX alone: 0.4 / 0.6
    assert per_class.item() == pytest.approx(HAND_TVERSKY, rel=1e-5)
    ma = FocalTverskyLoss(class_weights=(0, 0, 1, 0))(logits, targets) * 4  # MA: alpha 0.2, beta 0.8
    assert ma.item() == pytest.approx((1 - 0.75 / (0.75 + 0.2 * 1.25 + 0.8 * 1.25)) ** 2, rel=1e-5)


def test_perfect_prediction_gives_zero():
    torch.manual_seed(0)
    targets = (torch.rand(2, 4, 8, 8) > 0.7).float()
    targets[1, 3] = 0  # a lesion absent from an image: empty target, empty prediction
    logits = (targets * 2 - 1) * 60
    parts = DualLoss().components(logits, targets)
    assert parts["focal_tversky"].item() < 1e-9 and parts["bce"].item() < 1e-9 and parts["loss"].item() < 1e-9
    wrong = DualLoss()(-logits, targets)
    assert wrong.item() > 1.0


def test_stable_for_huge_logits_and_gradients_flow():
    torch.manual_seed(1)
    targets = (torch.rand(2, 4, 6, 6) > 0.5).float()
    logits = (torch.randint(0, 2, targets.shape) * 200 - 100).float().requires_grad_()
    loss = DualLoss(pos_weight=(2, 2, 10, 2))(logits, targets)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all()

    soft = torch.randn(2, 4, 6, 6, requires_grad=True)
    DualLoss()(soft, targets).backward()
    assert torch.isfinite(soft.grad).all() and soft.grad.abs().sum() > 0
    # gradient pushes each pixel's logit towards its target
    assert (soft.grad[targets == 1] < 0).all() and (soft.grad[targets == 0] > 0).all()


def test_fractional_gamma_stays_finite_for_perfect_prediction():
    targets = torch.ones(1, 4, 3, 3)
    loss = FocalTverskyLoss(gamma=0.75)(torch.full_like(targets, 100.0), targets)
    assert torch.isfinite(loss) and loss.item() < 1e-6


def test_valid_mask_removes_pixels_from_both_terms():
    torch.manual_seed(2)
    logits, targets = torch.randn(2, 4, 6, 8), (torch.rand(2, 4, 6, 8) > 0.6).float()
    valid = torch.zeros(2, 1, 6, 8)
    valid[..., :5] = 1  # only the left 5 columns are inside the field of view
    loss_fn = DualLoss()
    masked = loss_fn.components(logits, targets, valid)
    cropped = loss_fn.components(logits[..., :5].contiguous(), targets[..., :5].contiguous())
    for key in ("loss", "focal_tversky", "bce"):
        assert masked[key].item() == pytest.approx(cropped[key].item(), rel=1e-5)
    scrambled = logits.clone()
    scrambled[..., 5:] = 50.0  # anything outside the valid area is ignored
    assert loss_fn(scrambled, targets, valid).item() == pytest.approx(masked["loss"].item(), rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": (0.4, 0.4, 0.2)}, "alpha needs one value per class"),
        ({"class_weights": (1, 1, -5, 1)}, "class_weights values must be finite and >= 0"),
        ({"alpha": 0.0, "beta": (0.0, 0.6, 0.8, 0.6)}, "alpha \\+ beta must be > 0"),
        ({"beta": (0.6, float("nan"), 0.8, 0.6)}, "beta values"),
        ({"gamma": 0.0}, "gamma must be a positive number"),
        ({"smooth": 0.0}, "smooth must be in"),
        ({"pos_weight": (1, 1, 0, 1)}, "pos_weight values must be finite and > 0"),
        ({"tversky_weight": -0.1}, "tversky_weight must be a finite number >= 0"),
        ({"tversky_weight": 0.0, "bce_weight": 0.0}, "both 0"),
        ({"tversky_over": "pixel"}, "tversky_over must be one of"),
    ],
)
def test_bad_arguments_fail_in_init(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DualLoss(**kwargs)


def test_shape_errors_name_the_shapes():
    loss_fn = DualLoss()
    with pytest.raises(ValueError, match=r"\(1, 4, 2, 2\) and \(1, 4, 2, 3\)"):
        loss_fn(torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 3))
    with pytest.raises(ValueError, match="valid must be 1 x 1 x 2 x 2"):
        loss_fn(torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2), torch.ones(1, 2, 2, 2))
    with pytest.raises(ValueError, match="one value per class \\(4\\)"):
        focal_tversky_loss(torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2), alpha=(0.4, 0.6), beta=0.6)


def test_buffers_follow_the_module_and_skip_the_state_dict():
    loss_fn = DualLoss(pos_weight=(1, 1, 3, 1)).to(torch.float64)
    assert loss_fn.state_dict() == {}  # nothing of the loss leaks into checkpoints
    assert loss_fn.tversky.alpha.tolist() == pytest.approx([0.4, 0.4, 0.2, 0.4])
