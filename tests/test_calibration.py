"""Calibration (docs/architecture.md#probabilities-and-calibration): Platt scaling fitted on PR histograms, applied in predict, fitted
for an existing checkpoint by ``training.calibrate``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from hydralanet import HydraLANet, load_model, predict, read_image, save_checkpoint
from hydralanet.config import CLASSES, CheckpointConfig, PreprocessConfig
from training.calibrate import main as calibrate_main
from training.calibration import ECE_BINS, calibrate_threshold, fit_platt, reliability
from training.metrics import PRAccumulator
from training.prepare import main as prepare_main
from training.synthetic import write_dataset


def miscalibrated(a0: float, b0: float, n: int = 400_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw probabilities sigmoid(z) whose true lesion rate is sigmoid(a0 z + b0): overconfident
    for a0 < 1, as Focal-Tversky models are."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, generator=g) * 6
    labels = torch.rand(n, generator=g) < torch.sigmoid(a0 * z + b0)
    shape = (1, 1, 1, n)
    probs = torch.sigmoid(z).view(shape).expand(1, 4, 1, n).contiguous()
    return probs, labels.view(shape).expand(1, 4, 1, n).contiguous()


def test_platt_fit_recovers_the_true_calibration_and_lowers_ece():
    probs, labels = miscalibrated(0.3, -1.0)
    pr = PRAccumulator()
    pr.update(probs, labels)
    fitted = fit_platt(pr)
    for c in CLASSES:
        a, b = fitted[c]
        assert a == pytest.approx(0.3, abs=0.02) and b == pytest.approx(-1.0, abs=0.05)
    before, after = reliability(pr), reliability(pr, fitted)
    for c in CLASSES:
        assert before[c]["ece"] > 0.1 and after[c]["ece"] < 0.01  # measured: ~0.2 -> ~0.003
    # The raw ECE by hand over the same pixels: 15 equal-width bins, each bin's share of the
    # pixels times |fraction of lesion pixels - mean probability| (spread over every bin here).
    p, y = probs[0, 0, 0].double().numpy(), labels[0, 0, 0].numpy()
    which = np.minimum((p * ECE_BINS).astype(int), ECE_BINS - 1)
    count = np.bincount(which, minlength=ECE_BINS)
    gaps = np.abs(np.bincount(which, weights=y, minlength=ECE_BINS) - np.bincount(which, weights=p, minlength=ECE_BINS))
    assert (count > 1000).all()
    assert before["EX"]["ece"] == pytest.approx(gaps.sum() / count.sum(), abs=1e-4)
    # (the histograms hold logit bins: a pixel within 2e-4 of a bin edge may fall on the other side)
    assert np.abs(before["EX"]["count"] - count).max() <= 5e-3 * count.min()
    # A class without lesion pixels keeps the identity.
    empty = PRAccumulator()
    empty.update(probs, torch.zeros_like(labels))
    assert fit_platt(empty) == dict.fromkeys(CLASSES, (1.0, 0.0))


def test_calibrated_threshold_cuts_the_same_pixels():
    z = torch.linspace(-12.0005, 12.0005, 2001, dtype=torch.float64)  # no grid point on the cut itself
    ab = (0.25, -0.7)
    raw_t = float(torch.sigmoid(torch.tensor(9.0, dtype=torch.float64)))  # a saturated model's threshold, 0.99988
    t = calibrate_threshold(raw_t, ab)
    assert 0.05 < t < 0.95
    assert torch.equal(torch.sigmoid(z) >= raw_t, torch.sigmoid(ab[0] * z + ab[1]) >= t)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("calib")
    write_dataset(root / "syn", n=10, seed=21, size=160)
    assert prepare_main(["--synthetic", str(root / "syn"), "--out", str(root / "manifest.csv")]) == 0
    torch.manual_seed(0)
    model = HydraLANet(encoder="resnet18", decoder_channels=8)
    with torch.no_grad():  # spread the logits so the raw sigmoid is far from calibrated
        for branch in model.head.branches.values():
            branch[-1].weight.mul_(40.0)
    save_checkpoint(model, root / "model", CheckpointConfig(preprocessing=PreprocessConfig(input_size=64), name="c"))
    return root


def test_predict_applies_the_calibration_monotonically(tiny, retina):
    import cv2

    from hydralanet.inference.forward import run_model

    loaded = load_model(tiny / "model", device="cpu")
    calibration = {"EX": (0.5, -1.0), "HE": (2.0, 0.5), "MA": (0.1, 0.0), "SE": (1.0, 3.0)}
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = loaded.model(x).double()
    raw = run_model(loaded.model, x).double()
    cal = run_model(loaded.model, x, calibration=calibration).double()
    assert torch.allclose(raw, torch.sigmoid(logits), atol=1e-6)
    for i, c in enumerate(CLASSES):
        a, b = calibration[c]
        assert torch.allclose(cal[:, i], torch.sigmoid(a * logits[:, i] + b), atol=1e-6)
        # Monotone: ordered by raw probability (ties broken by the calibrated one), the calibrated
        # probabilities never decrease, so every threshold on one is a threshold on the other.
        r, k = raw[:, i].flatten().numpy(), cal[:, i].flatten().numpy()
        order = np.lexsort((k, r))
        assert np.all(np.diff(k[order]) >= 0)

    # Through predict, at the photo's resolution: the maps are calibrated; the ranking survives up
    # to the bilinear resize back to the photo (interpolated between calibrated pixels).
    loaded.config.calibration = calibration
    image = cv2.resize(retina, (200, 200))
    calibrated = predict(loaded, image, precision="fp32")
    plain = predict(loaded, image, precision="fp32", calibrated=False)
    assert calibrated.settings["calibrated"] and not plain.settings["calibrated"]
    truth = np.random.default_rng(0).random(plain.fov.sum()) < 0.1
    for i in range(len(CLASSES)):
        p_raw, p_cal = plain.probabilities[i][plain.fov], calibrated.probabilities[i][plain.fov]
        assert not np.allclose(p_raw, p_cal)
        assert average_precision_score(truth, p_raw) == pytest.approx(average_precision_score(truth, p_cal), abs=1e-3)


def test_calibrate_command_writes_calibration_thresholds_and_card(tiny, tmp_path):
    out = tmp_path / "calibrated"
    assert (
        calibrate_main(
            [
                "--model",
                str(tiny / "model"),
                "--manifest",
                str(tiny / "manifest.csv"),
                "--split",
                "train",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert set(config["calibration"]) == set(CLASSES)
    # The written thresholds are the best-F1 cut of the fitting photos' raw probabilities, moved
    # onto the calibrated scale: found here from predict's raw maps at the photos' resolution.
    from training.data import read_mask
    from training.prepare import read_manifest

    before = load_model(tiny / "model", device="cpu")
    pr = PRAccumulator()
    for row in (r for r in read_manifest(tiny / "manifest.csv") if r["split"] == "train"):
        image = read_image(row["image"])
        shape = image.shape[:2]
        targets = np.stack([read_mask(row[c], shape) if row.get(c) else np.zeros(shape, bool) for c in CLASSES])
        raw = predict(before, image, precision="fp32", calibrated=False).probabilities
        pr.update(torch.from_numpy(raw)[None], torch.from_numpy(targets)[None])
    raw_best = pr.best_thresholds(default=0.5)
    for i, c in enumerate(CLASSES):
        expected = round(calibrate_threshold(raw_best[i], tuple(config["calibration"][c])), 4)
        assert config["thresholds"][c] == pytest.approx(expected, abs=1e-4), c
        assert abs(config["thresholds"][c] - raw_best[i]) > 1e-3  # the calibration moved it
    assert all(ab[0] > 0 for ab in config["calibration"].values())
    record = config["provenance"]["calibration"]
    assert record["fitted_on"]["split"] == "train" and set(record["ece"]) == {"train", "test"}
    for c in CLASSES:  # fitted on train: its ECE cannot get worse there
        assert record["ece"]["train"][c]["after"] <= record["ece"]["train"][c]["before"] + 1e-9
    digest = hashlib.sha256
    assert (
        digest((out / "model.safetensors").read_bytes()).digest()
        == digest((tiny / "model" / "model.safetensors").read_bytes()).digest()
    )
    card = (out / "README.md").read_text()
    assert "## Calibration" in card and "| lesion | a | b | threshold before | threshold now |" in card
    loaded = load_model(out, device="cpu")
    assert loaded.config.calibration == {c: tuple(v) for c, v in config["calibration"].items()}
    # Calibrating again replaces the section instead of adding a second one.
    assert calibrate_main(["--model", str(out), "--manifest", str(tiny / "manifest.csv"), "--split", "train"]) == 0
    assert (out / "README.md").read_text().count("## Calibration") == 1


def test_calibrate_refuses_what_is_not_a_checkpoint_folder(tmp_path, tiny, capsys):
    assert calibrate_main(["--model", str(tmp_path), "--manifest", str(tiny / "manifest.csv")]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err


@pytest.mark.parametrize("tile", [None, 128], ids=["whole", "tiled"])
def test_cli_probability_files_are_the_calibrated_ones(tiny, tmp_path, retina, tile):
    """predict's 16-bit probability files hold predict(calibrated=True)'s maps of a calibrated
    checkpoint, whole or in tiles, not the raw sigmoid."""
    import shutil

    import cv2

    from hydralanet.cli import main

    model = tmp_path / "model"
    shutil.copytree(tiny / "model", model)
    config = json.loads((model / "config.json").read_text())
    config["calibration"] = {"EX": [0.5, -1.0], "HE": [2.0, 0.5], "MA": [0.3, 0.0], "SE": [1.0, 3.0]}
    (model / "config.json").write_text(json.dumps(config))
    photos = tmp_path / "photos"
    photos.mkdir()
    image = cv2.resize(retina, (200, 200), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(photos / "eye.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    args = ["predict", str(photos), "--out", str(tmp_path / "out"), "--model", str(model), "--device", "cpu"]
    args += ["--precision", "fp32", "--workers", "0", "--save-probabilities", "--no-reading"]
    assert main(args + (["--tile", str(tile)] if tile else [])) == 0
    loaded = load_model(model, device="cpu")
    calibrated = predict(loaded, read_image(photos / "eye.png"), precision="fp32", tile=tile)
    raw = predict(loaded, read_image(photos / "eye.png"), precision="fp32", tile=tile, calibrated=False)
    assert calibrated.settings["calibrated"] and calibrated.settings["tile"] == tile
    for i, c in enumerate(CLASSES):
        written = cv2.imread(str(tmp_path / "out" / "eye" / f"prob_{c}.png"), cv2.IMREAD_UNCHANGED)
        assert written.dtype == np.uint16
        expected = np.round(calibrated.probabilities[i] * 65535.0)
        assert np.abs(written.astype(np.float64) - expected).max() <= 1, c  # rounding only
        assert np.abs(written / 65535.0 - raw.probabilities[i]).max() > 0.01, c  # not the raw sigmoid


def test_calibrate_stores_scales_and_fits_on_every_view(tiny, tmp_path, capsys) -> None:
    model, manifest = str(tiny / "model"), str(tiny / "manifest.csv")
    spec = "EX=0.5,1 HE=0.5 MA=1 SE=1"
    assert calibrate_main(["--model", model, "--manifest", manifest, "--split", "train", "--scales", spec]) == 2
    assert "give --tta with --scales" in capsys.readouterr().err
    out = tmp_path / "scaled"
    args = ["--model", model, "--manifest", manifest, "--split", "train", "--tta", "--scales", spec, "--out", str(out)]
    assert calibrate_main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["tta"] is True
    assert config["scales"] == {"EX": [0.5, 1.0], "HE": [0.5], "MA": [1.0], "SE": [1.0]}
    assert "input scales per lesion" in config["provenance"]["calibration"]["thresholds_tuned_with"]
    plain = tmp_path / "plain"
    base = ["--model", model, "--manifest", manifest, "--split", "train", "--tta", "--out", str(plain)]
    assert calibrate_main(base) == 0
    plain_config = json.loads((plain / "config.json").read_text())
    assert "scales" not in plain_config
    # MA and SE run at the input size alone in both, so their fit is the same; HE is fitted on
    # the half-size view only, and EX on both views pooled: both differ.
    for c in ("MA", "SE"):
        assert config["calibration"][c] == pytest.approx(plain_config["calibration"][c]), c
    for c in ("EX", "HE"):
        assert config["calibration"][c] != pytest.approx(plain_config["calibration"][c], rel=1e-3), c


def test_calibrate_stores_an_edge_margin_and_fits_with_it(tiny, tmp_path) -> None:
    model, manifest = str(tiny / "model"), str(tiny / "manifest.csv")
    runs = {}
    for name, extra in (("plain", []), ("band", ["--edge-margin", "EX=0.2 HE=0"])):
        out = tmp_path / name
        assert (
            calibrate_main(["--model", model, "--manifest", manifest, "--split", "train", "--out", str(out), *extra])
            == 0
        )
        runs[name] = json.loads((out / "config.json").read_text())
    band, plain = runs["band"], runs["plain"]
    assert band["edge_margin"] == {"EX": 0.2} and "edge_margin" not in plain
    assert band["provenance"]["calibration"]["edge_margin"] == {"EX": 0.2}
    # Fitted with the band in force: EX's pixels differ, so does its fit; the other lesions' do not.
    assert band["calibration"]["EX"] != pytest.approx(plain["calibration"]["EX"], rel=1e-3)
    for c in ("HE", "MA", "SE"):
        assert band["calibration"][c] == pytest.approx(plain["calibration"][c]), c
    kept = tmp_path / "kept"  # without --edge-margin the checkpoint keeps its own band
    assert (
        calibrate_main(
            ["--model", str(tmp_path / "band"), "--manifest", manifest, "--split", "train", "--out", str(kept)]
        )
        == 0
    )
    assert json.loads((kept / "config.json").read_text())["edge_margin"] == {"EX": 0.2}
