"""Input scales per lesion (``config.json`` ``"scales"``): under test-time augmentation each class
takes the geometric mean of its probabilities over the listed multiples of the input size, each
view run with flips and resized to the base square; calibration fits on all of a class's views."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hydralanet import load_model, predict
from hydralanet.config import CLASSES, CheckpointConfig
from hydralanet.inference.segment import predict_square
from training.calibrate import parse_scales

BUNDLED = Path(__file__).resolve().parents[1] / "weights"
SCALES = {"EX": [0.5, 1.0], "HE": [0.5], "MA": [1.0], "SE": [1.0, 1.5]}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """The bundled network at a 128 px input (views at other sizes see the eye differently):
    with the scales above and flips by default, and plain."""
    root = tmp_path_factory.mktemp("scales")
    for name, extra in (("scaled", {"tta": True, "scales": SCALES}), ("plain", {"tta": False})):
        shutil.copytree(BUNDLED, root / name)
        config = json.loads((root / name / "config.json").read_text())
        config["preprocessing"]["input_size"] = 128
        config.pop("scales", None)
        config.pop("edge_margin", None)  # tests/test_edge_margin.py covers the band
        config.update(extra)
        (root / name / "config.json").write_text(json.dumps(config))
    return root / "scaled", root / "plain"


def test_config_round_trip_and_checks() -> None:
    assert "scales" not in CheckpointConfig().to_dict()
    config = CheckpointConfig(scales={"EX": [1, 0.667], "HE": [0.667], "MA": [1], "SE": [1]})
    assert config.scales["EX"] == (0.667, 1.0)  # sorted
    assert config.extra_scales() == (0.667,)
    assert CheckpointConfig.from_dict(config.to_dict()).scales == config.scales
    assert CheckpointConfig(scales=dict.fromkeys(CLASSES, [1.0])).scales is None  # nothing but the input size
    with pytest.raises(ValueError, match="each of EX, HE, MA, SE"):
        CheckpointConfig(scales={"EX": [0.5]})
    with pytest.raises(ValueError, match=r"scales for HE must be one or more factors in \(0, 4\]"):
        CheckpointConfig(scales={**SCALES, "HE": [0.0]})
    with pytest.raises(ValueError, match="scales for MA must be a list of numbers"):
        CheckpointConfig(scales={**SCALES, "MA": ["big"]})


def _resized(probs: np.ndarray, size: int) -> np.ndarray:
    t = torch.nn.functional.interpolate(torch.from_numpy(probs)[None], size=(size, size), mode="bilinear")
    return t[0].numpy()


def test_each_class_averages_its_scales(checkpoints, retina) -> None:
    loaded, plain = (load_model(c, device="cpu") for c in checkpoints)
    got = predict_square(loaded, retina, precision="fp32")
    size = got.square.shape[-1]
    views = {1.0: predict_square(plain, retina, precision="fp32", tta=True).square}
    for factor in (0.5, 1.5):
        view = predict_square(plain, retina, precision="fp32", tta=True, scale=factor)
        assert view.square.shape[-1] == round(size * factor)
        views[factor] = _resized(view.square, size)
    for i, c in enumerate(CLASSES):
        expected = np.prod([views[f][i] for f in SCALES[c]], axis=0) ** (1.0 / len(SCALES[c]))
        np.testing.assert_allclose(got.square[i], expected, atol=1e-6, err_msg=c)
    assert np.abs(views[0.5][1] - views[1.0][1]).mean() > 1e-3  # views differ far beyond the tolerance above
    assert got.settings["scales"] == SCALES and got.settings["tta"]


def test_no_tta_or_an_explicit_size_runs_one_scale(checkpoints, retina) -> None:
    loaded, plain = (load_model(c, device="cpu") for c in checkpoints)
    off = predict(loaded, retina, precision="fp32", tta=False)
    assert "scales" not in off.settings
    np.testing.assert_array_equal(off.probabilities, predict(plain, retina, precision="fp32").probabilities)
    at_two = predict(loaded, retina, precision="fp32", scale=2.0)
    assert "scales" not in at_two.settings
    expected = predict(plain, retina, precision="fp32", scale=2.0, tta=True)
    np.testing.assert_array_equal(at_two.probabilities, expected.probabilities)


def test_parse_scales() -> None:
    assert parse_scales("EX=0.667,1 HE=0.667 MA=1 SE=1") == {
        "EX": [0.667, 1.0],
        "HE": [0.667],
        "MA": [1.0],
        "SE": [1.0],
    }
    with pytest.raises(ValueError, match="'XX=1' is not LESION=FACTOR"):
        parse_scales("XX=1")
    with pytest.raises(ValueError, match="'HE=a' has a factor that is not a number"):
        parse_scales("HE=a")
