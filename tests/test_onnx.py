"""ONNX export (``python -m hydralanet export``) and running the exported folder with ONNX
Runtime through the same loader, CLI and app as a PyTorch checkpoint."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest

from hydralanet import load_model, predict
from hydralanet.checkpoints.format import CheckpointError
from hydralanet.cli import main
from hydralanet.inference.onnx_model import OnnxNetwork
from hydralanet.io.images import read_image

from .exported import app_on_the_sample, assert_cli_matches_torch

IDRID = Path(__file__).resolve().parent / "fixtures" / "idrid"


@pytest.fixture(scope="module")
def bundled_onnx(tmp_path_factory) -> Path:
    """The bundled model exported once for the module (about 15 s of CPU)."""
    out = tmp_path_factory.mktemp("onnx") / "bundled"
    assert main(["export", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def tiny_onnx(tiny_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "tiny"
    assert main(["export", str(tiny_checkpoint), "--out", str(out)]) == 0
    return out


def test_export_writes_graph_config_and_card(bundled_onnx: Path) -> None:
    assert sorted(p.name for p in bundled_onnx.iterdir()) == ["README.md", "config.json", "model.onnx"]
    source = json.loads((Path(__file__).resolve().parent.parent / "weights" / "config.json").read_text())
    exported = json.loads((bundled_onnx / "config.json").read_text())
    # Everything that decides the output is carried over unchanged: preprocessing, thresholds, calibration.
    for key in ("model", "preprocessing", "thresholds", "calibration", "classes", "name"):
        assert exported[key] == source[key], key
    info = exported["provenance"]["exported"]
    assert info["format"] == "onnx" and info["opset"] == 17
    assert info["max_prob_difference"] <= 1e-4
    card = (bundled_onnx / "README.md").read_text()
    assert card.startswith("---\n")  # the Hub's front matter stays on top
    assert "B x 3 x S x S" in card and "S = 1536" in card and "sigmoid(a * logit + b)" in card
    a, b = source["calibration"]["HE"]
    assert f"| HE (haemorrhages) | {a:.4f} | {b:.4f} |" in card


def test_onnx_matches_pytorch_on_real_photos(bundled_onnx: Path) -> None:
    """fp32 ONNX Runtime against fp32 PyTorch, calibrated probabilities, on two IDRiD photos at
    the model's 1536 px: every probability within 1e-4, and the masks the same."""
    torch_model = load_model(device="cpu")
    onnx_model = load_model(str(bundled_onnx))
    assert isinstance(onnx_model.model, OnnxNetwork) and onnx_model.runtime == "ONNX Runtime"
    for name in ("IDRiD_59", "IDRiD_75"):
        image = read_image(IDRID / f"{name}.jpg")
        expected = predict(torch_model, image, precision="fp32")
        got = predict(onnx_model, image)  # "auto" is fp32 for ONNX
        assert np.abs(expected.probabilities - got.probabilities).max() <= 1e-4, name
        assert expected.probabilities.max() > 0.9  # real lesions, not an all-background comparison
        thresholds = torch_model.config.thresholds
        differ = int((expected.masks(thresholds) != got.masks(thresholds)).sum())
        assert differ <= 10, f"{name}: {differ} mask pixels differ"


def test_onnx_folder_runs_through_predict_cli(tiny_onnx: Path, tiny_checkpoint, tmp_path: Path) -> None:
    assert_cli_matches_torch(tiny_onnx, tiny_checkpoint, tmp_path, "ONNX Runtime")


def test_app_runs_an_onnx_folder(tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app_on_the_sample(tiny_onnx, monkeypatch)
    assert any("with ONNX Runtime (exported to ONNX)" in m.value for m in at.caption)


def test_onnx_precision_other_than_fp32_is_refused(tiny_onnx: Path, tmp_path: Path) -> None:
    loaded = load_model(str(tiny_onnx))
    assert loaded.resolve_precision("auto") == "fp32"
    with pytest.raises(ValueError, match="ONNX Runtime runs this model in fp32"):
        loaded.resolve_precision("bf16")
    assert (
        main(
            ["predict", str(IDRID / "IDRiD_71.jpg"), "--out", str(tmp_path / "out"), "--model", str(tiny_onnx)]
            + ["--precision", "bf16"]
        )
        == 2
    )


def test_bad_onnx_folders_give_one_line_errors(
    tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_onnx / "config.json").read_text())
    (broken / "model.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(CheckpointError, match=r"broken: model\.onnx is not a graph ONNX Runtime can run") as err:
        load_model(str(broken))
    assert "\n" not in str(err.value)

    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "model.onnx").write_bytes((tiny_onnx / "model.onnx").read_bytes())
    with pytest.raises(CheckpointError, match="config.json is missing beside model.onnx"):
        load_model(str(lonely / "model.onnx"))

    real_import = builtins.__import__

    def no_runtime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_runtime)
    with pytest.raises(CheckpointError, match=r"ONNX models need ONNX Runtime: pip install 'hydralanet\[onnx\]'"):
        load_model(str(tiny_onnx))
    assert main(["export", "--out", str(tmp_path / "never")]) == 2
    assert not (tmp_path / "never").exists()
