"""OpenVINO export (``python -m hydralanet export --format openvino``) and running the exported
folder with OpenVINO through the same loader, CLI and app as a PyTorch checkpoint."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest

from hydralanet import load_model, predict
from hydralanet.checkpoints.format import CheckpointError
from hydralanet.cli import main
from hydralanet.inference.openvino_model import OpenVinoNetwork, openvino_has_bf16
from hydralanet.io.images import read_image

from .exported import app_on_the_sample, assert_cli_matches_torch

IDRID = Path(__file__).resolve().parent / "fixtures" / "idrid"


@pytest.fixture(scope="module")
def tiny_ir(tiny_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("openvino") / "tiny"
    assert main(["export", str(tiny_checkpoint), "--format", "openvino", "--out", str(out)]) == 0
    return out


def test_export_writes_ir_config_and_card(tiny_ir: Path, tiny_checkpoint) -> None:
    assert sorted(p.name for p in tiny_ir.iterdir()) == ["README.md", "config.json", "model.bin", "model.xml"]
    source = json.loads((Path(tiny_checkpoint) / "config.json").read_text())
    exported = json.loads((tiny_ir / "config.json").read_text())
    for key in ("model", "preprocessing", "thresholds", "calibration", "classes", "name"):
        assert exported[key] == source[key], key
    info = exported["provenance"]["exported"]
    assert info["format"] == "openvino" and info["opset"] == 17 and info["max_prob_difference"] <= 1e-4
    # float32 weights on disk: about 4 bytes a parameter (fp16 would be half; BatchNorm is folded away)
    assert (tiny_ir / "model.bin").stat().st_size >= 3.5 * info["parameters"]
    card = (tiny_ir / "README.md").read_text()
    assert "(OpenVINO IR)" in card and "--format openvino" in card and "pip install 'hydralanet[openvino]'" in card
    assert "B x 3 x S x S" in card and "S = 128" in card


@pytest.mark.parametrize("name", ["IDRiD_59", "IDRiD_71", "IDRiD_75"])
def test_openvino_fp32_matches_pytorch_on_real_photos(tiny_ir: Path, tiny_checkpoint, name: str) -> None:
    """fp32 OpenVINO against fp32 PyTorch, calibrated probabilities at the photo's pixels."""
    torch_model, ir_model = load_model(tiny_checkpoint, device="cpu"), load_model(str(tiny_ir))
    assert isinstance(ir_model.model, OpenVinoNetwork) and ir_model.runtime == "OpenVINO"
    image = read_image(IDRID / f"{name}.jpg")
    expected = predict(torch_model, image, precision="fp32")
    got = predict(ir_model, image, precision="fp32")
    assert got.settings["precision"] == "fp32"
    assert np.abs(expected.probabilities - got.probabilities).max() <= 1e-4


def test_openvino_auto_precision_is_bf16_where_the_cpu_has_it(tiny_ir: Path) -> None:
    """``auto`` is bf16 on a CPU with native bf16 (OpenVINO then computes in bf16: the
    probabilities move by more than fp32 rounding, the masks hardly), else fp32."""
    loaded = load_model(str(tiny_ir))
    image = read_image(IDRID / "IDRiD_71.jpg")
    exact = predict(loaded, image, precision="fp32")
    auto = predict(loaded, image)
    if not openvino_has_bf16():
        assert loaded.resolve_precision("auto") == "fp32" and auto.settings["precision"] == "fp32"
        with pytest.raises(ValueError, match="OpenVINO runs this model in fp32 here"):
            loaded.resolve_precision("bf16")
        return
    assert loaded.resolve_precision("auto") == "bf16" and auto.settings["precision"] == "bf16"
    gap = np.abs(exact.probabilities - auto.probabilities).max()
    assert 1e-4 < gap < 0.05, gap
    with pytest.raises(ValueError, match="fp16' needs a CUDA GPU"):
        loaded.resolve_precision("fp16")


def test_openvino_folder_runs_through_predict_cli(tiny_ir: Path, tiny_checkpoint, tmp_path: Path) -> None:
    assert_cli_matches_torch(tiny_ir, tiny_checkpoint, tmp_path, "OpenVINO")


def test_app_runs_an_openvino_folder(tiny_ir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app_on_the_sample(tiny_ir, monkeypatch)
    assert any("with OpenVINO (exported to OpenVINO IR)" in m.value for m in at.caption)


def test_bad_openvino_folders_give_one_line_errors(
    tiny_ir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_ir / "config.json").read_text())
    (broken / "model.xml").write_text("<net>not a model")
    with pytest.raises(CheckpointError, match=r"broken: model\.xml is not a model OpenVINO can read") as err:
        load_model(str(broken))
    assert "\n" not in str(err.value)
    # An exported folder is not exported again.
    assert main(["export", str(tiny_ir), "--format", "openvino", "--out", str(tmp_path / "again")]) == 2
    assert not (tmp_path / "again").exists()

    real_import = builtins.__import__

    def no_runtime(name, *args, **kwargs):
        if name == "openvino":
            raise ImportError("No module named 'openvino'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_runtime)
    with pytest.raises(CheckpointError, match=r"need the OpenVINO runtime: pip install 'hydralanet\[openvino\]'"):
        load_model(str(tiny_ir))
    assert main(["export", "--format", "openvino", "--out", str(tmp_path / "never")]) == 2
    assert not (tmp_path / "never").exists()
