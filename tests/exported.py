"""Checks shared by the tests of exported folders (ONNX, OpenVINO): the folder must run through
the CLI and the app exactly as the PyTorch checkpoint it came from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from hydralanet import CLASSES
from hydralanet.cli import main

IDRID = Path(__file__).resolve().parent / "fixtures" / "idrid"
APP = Path(__file__).resolve().parent.parent / "app.py"


def assert_cli_matches_torch(exported: Path, checkpoint, tmp_path: Path, runtime: str) -> None:
    """``predict --model`` on the exported folder writes the probabilities PyTorch writes for the
    checkpoint (fp32, within 1e-4), and its summary names the runtime."""
    photo = tmp_path / "in" / "photo.png"
    photo.parent.mkdir()
    Image.open(IDRID / "IDRiD_71.jpg").resize((512, 340)).save(photo)
    for label, model in (("torch", checkpoint), ("exported", exported)):
        code = main(
            ["predict", str(photo), "--out", str(tmp_path / label), "--model", str(model), "--precision", "fp32"]
            + ["--save-probabilities"]
        )
        assert code == 0
    for c in CLASSES:
        a = np.asarray(Image.open(tmp_path / "torch" / "photo" / f"prob_{c}.png")).astype(int)
        b = np.asarray(Image.open(tmp_path / "exported" / "photo" / f"prob_{c}.png")).astype(int)
        assert np.abs(a - b).max() <= 7, c  # 1e-4 of 65535
    summary = json.loads((tmp_path / "exported" / "summary.json").read_text())
    assert summary["model"]["runtime"] == runtime


def app_on_the_sample(exported: Path, monkeypatch) -> AppTest:
    """The app with ``HYDRALANET_MODEL`` set to the folder, after "Try a sample": no exception,
    no error, the overlay drawn."""
    monkeypatch.setenv("HYDRALANET_MODEL", str(exported))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    next(b for b in at.button if b.label == "Try a sample").click().run()
    assert not at.exception
    assert not [e.value for e in at.error]
    captions = [c for image in at.image for c in image.captions]
    assert "Lesion overlay" in captions and any(c.startswith("Original (1411 x 1411)") for c in captions)
    return at
