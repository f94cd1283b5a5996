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


def test_bundle_of_a_model_trained_on_idrid_names_the_data_and_its_test_set(tmp_path):
    run = tmp_path / "run"
    make_untrained(run / "best", decoder_channels=8, input_size=64)
    config = json.loads((run / "best" / "config.json").read_text())
    config["provenance"]["datasets"] = {"idrid": {"train": 44, "val": 10}}
    (run / "best" / "config.json").write_text(json.dumps(config))
    # Photos large enough for the model, indexed as IDRiD's (the parser's own tests cover its layout).
    write_dataset(tmp_path / "syn", n=3, seed=1000, size=128, splits={"test": 1.0})
    assert prepare_main(["--synthetic", str(tmp_path / "syn"), "--out", str(tmp_path / "syn.csv")]) == 0
    text = (tmp_path / "syn.csv").read_text()
    (tmp_path / "idrid.csv").write_text(text.replace("\nsynthetic,", "\nidrid,"))
    # The same photos given as lesion-free (no mask columns): what the card reports of healthy eyes.
    lines = text.splitlines()
    header = lines[0].split(",")
    masks = [header.index(c) for c in ("EX", "HE", "MA", "SE")]
    healthy = [",".join("" if k in masks else v for k, v in enumerate(line.split(","))) for line in lines[1:]]
    (tmp_path / "healthy.csv").write_text("\n".join([lines[0], *healthy]) + "\n")
    bundle(
        run,
        tmp_path / "idrid.csv",
        tmp_path / "weights",
        command="bash training/make_bundled.sh data/idrid",
        train_seconds=60,
        machine="a test machine",
        bootstrap=50,
        pretraining="the synthetic demonstration model",
        lesion_free_manifest=tmp_path / "healthy.csv",
    )
    shipped = load_model(tmp_path / "weights", device="cpu")
    prov = shipped.config.provenance
    assert shipped.config.name == "hydralanet-idrid" and "demonstration" not in prov
    assert "crosscheck" not in prov["metrics"]  # the second generator is for synthetic models only
    assert prov["metrics_note"]["test"].startswith("IDRiD's official segmentation test set (3 photos")
    test = prov["metrics"]["test"]["overall"]
    assert test["EX"]["aupr_95"] is None  # no hard exudate drawn on these photos: no interval
    low, high = test["HE"]["aupr_95"]
    assert 0.0 <= low <= test["HE"]["aupr"] <= high <= 1.0 and low < high
    card = (tmp_path / "weights" / "README.md").read_text()
    assert "Training data: IDRiD" in card and "CC BY 4.0" in card and "doi.org/10.3390/data3030025" in card
    assert "Trained only on synthetic data" not in card and "below the demonstration model's targets" not in card
    assert "initialised from: the synthetic demonstration model" in card
    assert "beside the IDRiD challenge's best 11-threshold AUPR" in card and "EX" in card
    found = prov["lesion_free"]
    assert found["photos"] == 3 and "per_photo" not in found
    cov = found["coverage"]
    assert (
        f"- on 3 healthy eyes it was not trained on (graded free of retinopathy), % of the field of view marked, "
        f"median (largest): EX {cov['EX']['median_pct']:.3f} % ({cov['EX']['max_pct']:.3f} %)"
    ) in card
    assert "photos over 0.1 %: EX " + str(cov["EX"]["photos_over_aim"]) in card
