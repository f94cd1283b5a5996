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
