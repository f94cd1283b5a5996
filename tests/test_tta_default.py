"""A checkpoint can ask for flip test-time augmentation by default (``config.json`` ``"tta":
true``): predict, the command line and evaluation follow it unless told otherwise."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hydralanet import load_model, predict
from hydralanet.cli import main
from hydralanet.config import CheckpointConfig


@pytest.fixture(scope="module")
def tta_checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tta") / "tiny_tta"
    shutil.copytree(tiny_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    config["tta"] = True
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_config_writes_tta_only_when_on() -> None:
    assert "tta" not in CheckpointConfig().to_dict()  # configs without it stay as they were
    on = CheckpointConfig(tta=True).to_dict()
    assert on["tta"] is True
    assert CheckpointConfig.from_dict(on).tta is True
    assert CheckpointConfig.from_dict(CheckpointConfig().to_dict()).tta is False


def test_predict_follows_the_checkpoint_unless_told(tta_checkpoint, tiny_checkpoint, retina) -> None:
    loaded = load_model(tta_checkpoint, device="cpu")
    default = predict(loaded, retina, precision="fp32")
    flips = predict(load_model(tiny_checkpoint, device="cpu"), retina, precision="fp32", tta=True)
    plain = predict(loaded, retina, precision="fp32", tta=False)
    assert default.settings["tta"] and not plain.settings["tta"]
    assert np.array_equal(default.probabilities, flips.probabilities)
    assert not np.array_equal(default.probabilities, plain.probabilities)


@pytest.mark.parametrize(("flag", "expected"), [([], True), (["--no-tta"], False), (["--tta"], True)])
def test_the_command_line_follows_the_checkpoint_unless_told(tta_checkpoint, retina, tmp_path, flag, expected) -> None:
    import cv2

    photo = tmp_path / "eye.png"
    cv2.imwrite(str(photo), cv2.cvtColor(retina, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    args = ["predict", str(photo), "--out", str(out), "--model", str(tta_checkpoint), "--workers", "0", *flag]
    assert main([*args, "--no-reading"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tta"] is expected


def test_a_plain_checkpoint_runs_without_flips_by_default(tiny_checkpoint, retina, tmp_path) -> None:
    import cv2

    photo = tmp_path / "eye.png"
    cv2.imwrite(str(photo), cv2.cvtColor(retina, cv2.COLOR_RGB2BGR))
    args = ["predict", str(photo), "--out", str(tmp_path / "o"), "--model", str(tiny_checkpoint), "--workers", "0"]
    assert main([*args, "--no-reading"]) == 0
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["tta"] is False


def test_the_app_starts_with_the_checkpoints_choice(tta_checkpoint, tiny_checkpoint, monkeypatch) -> None:
    from streamlit.testing.v1 import AppTest

    app_file = str(Path(__file__).resolve().parent.parent / "app.py")
    for checkpoint, expected in ((tta_checkpoint, True), (tiny_checkpoint, False)):
        monkeypatch.setenv("HYDRALANET_MODEL", str(checkpoint))
        app = AppTest.from_file(app_file, default_timeout=120).run()
        assert not app.exception
        assert app.toggle(key="tta").value is expected


@pytest.mark.parametrize(("flag", "expected"), [([], True), (["--no-tta"], False)])
def test_the_idrid_grading_measurement_follows_the_checkpoint(tta_checkpoint, retina, tmp_path, flag, expected) -> None:
    import cv2

    from training.idrid_reading import main as reading_main

    from .fixtures_datasets import make_idrid_reading

    root = make_idrid_reading(tmp_path / "idrid", n_train=2, n_test=1)
    eye = cv2.cvtColor(cv2.resize(retina, (256, 256), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
    for split in ("a. Training Set", "b. Testing Set"):  # part B's photos, named as part C's
        target = root / "B. Disease Grading" / "1. Original Images" / split
        target.mkdir(parents=True)
        for photo in (root / "C. Localization" / "1. Original Images" / split).glob("*.jpg"):
            cv2.imwrite(str(target / photo.name), eye)
    out = tmp_path / "grading"
    args = ["grading", "--idrid", str(root), "--model", str(tta_checkpoint), "--out", str(out), *flag]
    assert reading_main(args) == 0
    report = json.loads((out / "grading.json").read_text())
    assert report["tta"] is expected
    said = "with its test-time augmentation" if expected else "without test-time augmentation"
    assert said in (out / "grading.md").read_text()
