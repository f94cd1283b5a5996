"""training.bundle: packaging a run as the demonstration model, with every figure measured on
the fp16 weights it ships (test split, second generator, normal-eye photo, timing)."""

from __future__ import annotations

import json

import pytest

from hydralanet import load_model
from training.bundle import bundle
from training.prepare import main as prepare_main
from training.synthetic import write_dataset
from training.untrained import make_untrained


def test_bundle_measures_and_documents_what_it_ships(tmp_path):
    run = tmp_path / "run"
    make_untrained(run / "best", decoder_channels=8, input_size=64)
    write_dataset(tmp_path / "syn", n=2, seed=1000, size=128, splits={"test": 1.0})
    assert prepare_main(["--synthetic", str(tmp_path / "syn"), "--out", str(tmp_path / "test.csv")]) == 0
    result = bundle(
        run,
        tmp_path / "test.csv",
        tmp_path / "weights",
        command="bash training/make_bundled.sh",
        train_seconds=90,
        machine="a test machine",
        train_machine="a GPU",
        crosscheck_n=1,
    )
    shipped = load_model(tmp_path / "weights", device="cpu")
    prov = shipped.config.provenance
    assert shipped.config.name == "hydralanet-demo-synthetic" and prov["demonstration"] == "synthetic data only"
    for split in ("test", "crosscheck"):
        overall = prov["metrics"][split]["overall"]
        assert set(overall) == {"EX", "HE", "MA", "SE", "macro"}
        assert overall["EX"]["aupr"] == pytest.approx(result[split]["overall"]["EX"]["aupr"], nan_ok=True)
    assert "training/crosscheck.py (seed 7)" in prov["metrics_note"]["crosscheck"]
    assert set(prov["real_normal_eye"]["coverage_pct"]) == {"EX", "HE", "MA", "SE"}
    card = (tmp_path / "weights" / "README.md").read_text()
    assert "Not for clinical use" in card and "1.5 min on a GPU" in card
    assert "below the demonstration model's targets" in card  # an untrained model is below all of them
    assert "AUPR on a second, independent lesion generator (`training/crosscheck.py`, 1 photos)" in card
    config = json.loads((tmp_path / "weights" / "config.json").read_text())
    assert config["provenance"]["command"] == "bash training/make_bundled.sh"
