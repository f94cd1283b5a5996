from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from hydralanet import load_model, predict, read_image, render_overlay
from hydralanet.config import CheckpointConfig, PreprocessConfig
from hydralanet.inference.loaded import LoadedModel
from hydralanet.inference.segment import lesion_statistics, threshold_masks
from hydralanet.preprocessing import BlankImageError
from hydralanet.report.overlay import COLOURS

from .test_preprocessing import synthetic_fundus


class YellowDetector(torch.nn.Module):
    """A stand-in network with a known answer: EX logit is high where the input pixel is
    yellow (R and G high, B low), the other classes are always negative. It lets the test
    check the real preprocessing and inverse mapping, whatever a trained net would do."""

    def __init__(self, config: PreprocessConfig) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = x * self.std + self.mean
        yellow = torch.minimum(rgb[:, 0], rgb[:, 1]) - rgb[:, 2]
        ex = 40.0 * (yellow - 0.6)
        return torch.cat([ex[:, None], torch.full_like(x[:, :3], -10.0)], dim=1)


def test_planted_spot_lands_at_the_same_place_after_exif_rotation():
    # Displayed image: 620 x 900, the fundus disc off-centre; a yellow spot at a known place.
    shown = synthetic_fundus(620, 900, centre=(330, 560), radius=270, seed=1)
    cy, cx, r = 250, 470, 9
    cv2.circle(shown, (cx, cy), r, (255, 230, 0), -1)
    truth = np.zeros(shown.shape[:2], np.uint8)
    cv2.circle(truth, (cx, cy), r, 1, -1)

    # Stored rotated, with EXIF orientation 6 telling viewers to rotate it back.
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(shown).transpose(Image.Transpose.ROTATE_90).save(buf, format="PNG", exif=exif.tobytes())
    image = read_image(buf.getvalue())
    assert image.shape == shown.shape

    config = CheckpointConfig(preprocessing=PreprocessConfig(input_size=256, clahe="off"))
    loaded = LoadedModel(model=YellowDetector(config.preprocessing).eval(), config=config)
    prediction = predict(loaded, image, precision="fp32")
    assert prediction.probabilities.shape == (4, 620, 900)

    ex = prediction.masks({"EX": 0.5})[0]
    ys, xs = np.nonzero(ex)
    assert abs(ys.mean() - cy) < 0.5 and abs(xs.mean() - cx) < 0.5
    iou = np.logical_and(ex, truth).sum() / np.logical_or(ex, truth).sum()
    assert iou > 0.85, iou
    stats = prediction.statistics({"EX": 0.5})
    assert stats[0]["count"] == 1 and stats[1]["pixels"] == 0
    assert abs(stats[0]["pixels"] - int(truth.sum())) / int(truth.sum()) < 0.15


def test_statistics_count_components_and_coverage():
    fov = np.zeros((100, 100), bool)
    fov[:, :50] = True  # 5000 px
    masks = np.zeros((4, 100, 100), bool)
    masks[0, 10:20, 10:20] = True  # 100 px
    masks[0, 40:42, 30:35] = True  # 10 px, separate
    masks[2, 5, 5] = masks[2, 6, 6] = True  # diagonal neighbours: one 8-connected lesion
    rows = lesion_statistics(masks, fov, {"EX": 0.4})
    assert [r["lesion"] for r in rows] == ["EX", "HE", "MA", "SE"]
    assert rows[0] == {
        "lesion": "EX",
        "threshold": 0.4,
        "pixels": 110,
        "coverage_pct": 2.2,
        "count": 2,
        "largest_px": 100,
    }
    assert rows[1]["count"] == 0 and rows[1]["threshold"] == 0.35
    assert rows[2]["count"] == 1 and rows[2]["pixels"] == 2
    # A tuned threshold near 1 keeps the digits that tell it from 1 (the bundled MA: 0.999995).
    assert lesion_statistics(masks, fov, {"MA": 0.9999951234})[2]["threshold"] == 0.9999951  # 2 digits of 1 - t


def test_threshold_masks_per_class_and_fov():
    probs = np.zeros((4, 2, 3), np.float32)
    probs[:, 0, :] = [[0.2], [0.5], [0.9], [0.35]]
    fov = np.ones((2, 3), bool)
    fov[0, 2] = False
    m = threshold_masks(probs, {"EX": 0.1, "HE": 0.6}, fov)
    assert m[0, 0].tolist() == [True, True, False]  # 0.2 >= 0.1, outside FOV dropped
    assert not m[1].any()  # 0.5 < 0.6
    assert m[3, 0, :2].all()  # 0.35 >= default 0.35
    with pytest.raises(ValueError, match="unknown lesion 'XX'"):
        threshold_masks(probs, {"XX": 0.5})


def test_overlay_colours_visibility_and_opacity():
    image = np.full((40, 40, 3), 100, np.uint8)
    masks = np.zeros((4, 40, 40), bool)
    masks[0, 10:30, 10:30] = True
    full = render_overlay(image, masks, opacity=1.0, outline=False)
    assert tuple(full[20, 20]) == COLOURS["EX"] and tuple(full[0, 0]) == (100, 100, 100)
    half = render_overlay(image, masks, opacity=0.5, outline=False)
    assert np.allclose(half[20, 20], (np.array(COLOURS["EX"]) + 100) / 2, atol=1)
    hidden = render_overlay(image, masks, opacity=1.0, visible={"EX": False})
    assert np.array_equal(hidden, image)


def test_real_model_on_real_photo(tiny_checkpoint, retina):
    loaded = load_model(tiny_checkpoint, device="cpu")
    exact = predict(loaded, retina, precision="fp32")
    assert exact.probabilities.shape == (4, 1411, 1411) and exact.probabilities.dtype == np.float32
    assert exact.probabilities.min() >= 0 and exact.probabilities.max() <= 1
    assert exact.probabilities[:, ~exact.fov].max() == 0  # nothing outside the field of view
    assert exact.enhanced.shape == (128, 128, 3)
    again = predict(loaded, retina, precision="fp32")
    assert np.array_equal(exact.probabilities, again.probabilities)  # deterministic
    tta = predict(loaded, retina, precision="fp32", tta=True)
    assert tta.settings["tta"] and not np.array_equal(tta.probabilities, exact.probabilities)


def test_clahe_override_changes_what_the_model_sees(tiny_checkpoint, retina):
    loaded = load_model(tiny_checkpoint, device="cpu")
    a = predict(loaded, retina, precision="fp32")
    b = predict(loaded, retina, clahe="off", precision="fp32")
    assert a.settings["clahe"] == "green" and b.settings["clahe"] == "off"
    assert not np.array_equal(a.enhanced, b.enhanced)


def test_all_black_image_is_refused(tiny_checkpoint):
    loaded = load_model(tiny_checkpoint, device="cpu")
    with pytest.raises(BlankImageError):
        predict(loaded, np.zeros((200, 300, 3), np.uint8))


def _overlay_reference(image, masks, opacity):
    """The overlay the plain way: the whole photo in float32, each class blended in turn, rounded."""
    out = image.astype(np.float32)
    for c, mask in zip(("EX", "HE", "MA", "SE"), masks):
        out[mask] = (1.0 - opacity) * out[mask] + opacity * np.asarray(COLOURS[c], np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("opacity", [0.0, 0.3, 0.5, 1.0])
def test_overlay_blends_only_lesion_pixels_exactly(opacity):
    # Overlapping classes (later drawn over earlier, blended from the unrounded value), odd
    # opacities: the same bytes as blending the whole photo in float32.
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    masks = rng.random((4, 60, 90)) < 0.3
    masks[:, :20] = True  # every class over the same pixels
    masks[2] = False  # a class with nothing
    got = render_overlay(image, masks, opacity=opacity, outline=False)
    assert np.array_equal(got, _overlay_reference(image, masks, opacity))
    assert not np.shares_memory(got, image)
    untouched = ~masks.any(axis=0)
    assert np.array_equal(got[untouched], image[untouched])


def test_tta_is_the_mean_of_the_three_views_with_their_flips_undone():
    from hydralanet.inference.forward import run_model

    class Lopsided(torch.nn.Module):
        """Logits that depend on the pixels and on where they are: no flip leaves them alone."""

        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 4, 5, padding=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h, w = x.shape[-2:]
            ramp = torch.linspace(-3, 3, w).view(1, 1, 1, w) + torch.linspace(0, 2, h).view(1, 1, h, 1)
            return self.conv(x) + ramp

    model = Lopsided().eval()
    batch = torch.randn(1, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    calibration = {"EX": (0.5, -1.0), "HE": (1.0, 0.0), "MA": (2.0, 0.5), "SE": (0.8, 0.2)}

    def plain(x: torch.Tensor) -> torch.Tensor:
        return run_model(model, x, precision="fp32", calibration=calibration)

    by_hand = (plain(batch) + plain(batch.flip(-1)).flip(-1) + plain(batch.flip(-2)).flip(-2)) / 3
    tta = run_model(model, batch, precision="fp32", tta=True, calibration=calibration)
    assert torch.allclose(tta, by_hand, atol=1e-6)
    wrong = (plain(batch) + plain(batch.flip(-1)) + plain(batch.flip(-2))) / 3  # views left flipped
    assert (tta - wrong).abs().max() > 0.1


def test_thresholds_outside_zero_to_one_are_refused():
    from hydralanet.config import DEFAULT_THRESHOLD, validate_thresholds

    for bad in (-0.01, 1.01, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"threshold for EX must be in \[0, 1\]"):
            validate_thresholds({"EX": bad})
    with pytest.raises(ValueError, match="unknown lesion 'XX'"):
        validate_thresholds({"XX": 0.5})
    assert validate_thresholds({"EX": 1.0, "HE": 0.0}) == {
        "EX": 1.0,
        "HE": 0.0,
        "MA": DEFAULT_THRESHOLD,
        "SE": DEFAULT_THRESHOLD,
    }


def test_square_masks_use_each_class_threshold_as_the_full_maps_do():
    """Full-resolution masks from the model's square (what the batch pipeline and the app's
    downloads write) equal thresholding the full maps, each class at its own threshold."""
    from hydralanet.inference.segment import SquarePrediction
    from hydralanet.preprocessing import fov_geometry, fov_mask

    image = synthetic_fundus(240, 300, (150, 120), 110)
    fov = fov_mask(image)
    geometry = fov_geometry(fov, 64)
    rng = np.random.default_rng(3)
    square = rng.random((4, 64, 64), dtype=np.float32)
    prediction = SquarePrediction.make(square, fov, image, geometry.to_square(image), geometry, {})
    thresholds = {"EX": 0.2, "HE": 0.4, "MA": 0.6, "SE": 0.8}
    masks = prediction.masks(thresholds)
    assert np.array_equal(masks, prediction.full().masks(thresholds))
    covered = masks.sum(axis=(1, 2)) / fov.sum()
    assert np.all(np.diff(covered) < -0.1)  # each class at its own cut: 80 %, 60 %, 40 %, 20 % of the field
