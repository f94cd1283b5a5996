"""training.evaluate: the user's inference path, scored at the original resolution."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from hydralanet import HydraLANet, load_model, predict, read_image, save_checkpoint
from hydralanet.config import CLASSES, CheckpointConfig, PreprocessConfig
from training.calibration import ECE_BINS
from training.data import read_mask
from training.evaluate import main
from training.prepare import main as prepare_main
from training.prepare import read_manifest
from training.synthetic import write_dataset

THRESHOLDS = {"EX": 0.11, "HE": 0.12, "MA": 0.125, "SE": 0.13}  # around sigmoid(-2): real TP, FP and FN


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval")
    write_dataset(root / "syn", n=8, seed=11, size=160)
    assert prepare_main(["--synthetic", str(root / "syn"), "--out", str(root / "manifest.csv")]) == 0
    # Relabel one test image so there are two source datasets to report on.
    with open(root / "manifest.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    first_test = next(i for i, r in enumerate(rows) if r[1] == "test")
    rows[first_test][0] = "other"
    with open(root / "manifest.csv", "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
    torch.manual_seed(0)
    model = HydraLANet(encoder="resnet18", decoder_channels=8)
    config = CheckpointConfig(preprocessing=PreprocessConfig(input_size=64), thresholds=THRESHOLDS, name="eval-test")
    save_checkpoint(model, root / "model", config)
    return {"root": root, "manifest": root / "manifest.csv", "model": root / "model"}


def test_evaluate_writes_metrics_per_class_and_source(setup):
    out = setup["root"] / "out"
    assert main(["--model", str(setup["model"]), "--manifest", str(setup["manifest"]), "--split", "test",
                 "--out", str(out)]) == 0  # fmt: skip
    report = json.loads((out / "metrics.json").read_text())
    assert report["split"] == "test" and report["thresholds"] == THRESHOLDS
    assert report["settings"]["resolution"] == "original" and report["settings"]["precision"] == "fp32"
    metrics = report["metrics"]
    assert set(metrics) == {"overall", "synthetic", "other"}
    assert report["images"]["all"] == report["images"]["synthetic"] + report["images"]["other"]
    for per_source in metrics.values():
        assert set(per_source) == {*CLASSES, "macro"}
        for values in per_source.values():
            assert set(values) == {"aupr", "f1", "iou", "precision", "recall", "aupr11"}
            assert all(v is None or 0.0 <= v <= 1.0 for v in values.values())
    test_rows = [r for r in read_manifest(setup["manifest"]) if r["split"] == "test"]
    positives = {c: sum(int(read_mask(r[c]).sum()) for r in test_rows) for c in CLASSES}
    assert any(positives.values())
    for c in CLASSES:  # AUPR exists exactly for the classes with lesion pixels
        assert (metrics["overall"][c]["aupr"] is None) == (positives[c] == 0)
    table = (out / "metrics.md").read_text()
    assert "| **macro** |" in table and "## other (1 images)" in table
    assert (out / "pr_curves.png").stat().st_size > 5_000
    assert (
        "**aupr11** is the 11-threshold AUPR" in table
        and "| lesion | f1 | iou | precision | recall | aupr | aupr11 |" in table
    )
    assert set(report["calibration_error"]) == set(CLASSES)
    assert all(0 <= v <= 1 for v in report["calibration_error"].values())
    assert (out / "reliability.png").stat().st_size > 5_000
    # The synthetic generator's disc and fovea reached the manifest: the reading is scored too.
    reading = report["reading"]
    n_test = report["images"]["all"]
    assert reading["images"] == n_test and reading["disc"]["labelled"] == n_test == reading["fovea"]["labelled"]
    assert reading["dme"]["graded"] == n_test and sum(map(sum, reading["dme"]["confusion"]["matrix"])) == n_test
    assert "## Reading: landmarks and DME risk" in table


def test_evaluate_matches_counting_by_hand_at_original_resolution(setup):
    """predict() per image, threshold with the checkpoint's values, compare with the masks as
    stored (full size): the pixel counts must give exactly the reported F1, IoU, P and R."""
    out = setup["root"] / "out-hand"
    assert main(["--model", str(setup["model"]), "--manifest", str(setup["manifest"]), "--out", str(out)]) == 0
    loaded = load_model(setup["model"], device="cpu")
    tp, fp, fn = (np.zeros(4) for _ in range(3))
    scores, labels = [], []
    for row in (r for r in read_manifest(setup["manifest"]) if r["split"] == "test"):
        image = read_image(row["image"])
        prediction = predict(loaded, image, precision="fp32")
        pred = prediction.masks(loaded.config.thresholds)
        truth = np.stack([read_mask(row[c], image.shape[:2]) for c in CLASSES])
        scores.append(prediction.probabilities.reshape(4, -1))
        labels.append(truth.reshape(4, -1))
        assert pred.shape == truth.shape == (4, *image.shape[:2])  # original resolution
        tp += (pred & truth).sum((1, 2))
        fp += (pred & ~truth).sum((1, 2))
        fn += (~pred & truth).sum((1, 2))
    assert tp.sum() > 0 and fp.sum() > 0 and fn.sum() > 0
    reported = json.loads((out / "metrics.json").read_text())["metrics"]["overall"]
    for i, c in enumerate(CLASSES):
        if tp[i] + fp[i] + fn[i] == 0:
            continue
        assert reported[c]["f1"] == pytest.approx(2 * tp[i] / (2 * tp[i] + fp[i] + fn[i]), abs=1e-12)
        assert reported[c]["iou"] == pytest.approx(tp[i] / (tp[i] + fp[i] + fn[i]), abs=1e-12)
        if tp[i] + fn[i]:
            assert reported[c]["recall"] == pytest.approx(tp[i] / (tp[i] + fn[i]), abs=1e-12)
    # AUPR: scikit-learn's exact average precision over the same pixels; the report's comes from
    # 65,536 logit-spaced bins, so it may differ where two probabilities share a bin.
    scores, labels = np.concatenate(scores, axis=1), np.concatenate(labels, axis=1)
    checked = 0
    for i, c in enumerate(CLASSES):
        if labels[i].any():
            assert reported[c]["aupr"] == pytest.approx(average_precision_score(labels[i], scores[i]), abs=2e-3), c
            checked += 1
    assert checked >= 2
    # Calibration error: equal-width probability bins over the same pixels, each bin's share of
    # the pixels times |fraction of lesion pixels - mean probability|.
    ece = json.loads((out / "metrics.json").read_text())["calibration_error"]
    for i, c in enumerate(CLASSES):
        which = np.minimum((scores[i] * ECE_BINS).astype(int), ECE_BINS - 1)
        count = np.bincount(which, minlength=ECE_BINS)
        hits = np.bincount(which, weights=labels[i], minlength=ECE_BINS)
        mass = np.bincount(which, weights=scores[i], minlength=ECE_BINS)
        used = count > 0
        by_hand = np.sum(np.abs(hits[used] - mass[used])) / count.sum()
        assert by_hand > 0.01, c  # an uncalibrated random model: far from zero, so the check can fail
        assert ece[c] == pytest.approx(by_hand, abs=5e-5), c  # 65,536 logit bins: within 2e-5 here


def test_evaluate_reports_what_it_marks_on_lesion_free_photos(setup, tmp_path, capsys):
    """Test rows given without any lesion mask: the share of each one's field of view marked at the
    model's thresholds, counted by hand, and its median, largest and photos over the aim."""
    with open(setup["manifest"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    for k, r in enumerate(rows):
        if r["split"] != "train" or k < 2:  # five photos, all scored as lesion-free
            r.update(dict.fromkeys(CLASSES, ""), split="test")
    manifest = setup["root"] / "lesion_free.csv"  # beside the other: the photos' relative paths hold
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    free = [r for r in read_manifest(manifest) if r["split"] == "test"]
    loaded = load_model(setup["model"], device="cpu")
    predictions = [predict(loaded, read_image(r["image"]), precision="fp32") for r in free]
    # Thresholds that mark 0.15 % of the first photo's field: the others land on either side of 0.1 %.
    first = predictions[0]
    thresholds = {c: float(np.quantile(first.probabilities[i][first.fov], 0.9985)) for i, c in enumerate(CLASSES)}
    model = tmp_path / "model"
    shutil.copytree(setup["model"], model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "thresholds": thresholds}))
    out = tmp_path / "out"
    assert main(["--model", str(model), "--manifest", str(manifest), "--out", str(out)]) == 0
    report = json.loads((out / "metrics.json").read_text())["lesion_free"]
    by_hand = {}
    for r, prediction in zip(free, predictions):
        masks, fov = prediction.masks(thresholds), prediction.fov
        by_hand[r["image"].name] = [100 * masks[i][fov].mean() for i in range(len(CLASSES))]
    assert report["photos"] == len(free) >= 4 and sorted(report["per_photo"]) == sorted(by_hand)
    for name, values in by_hand.items():
        assert [report["per_photo"][name][c] for c in CLASSES] == pytest.approx(values, abs=1e-3)
    table = np.array(list(by_hand.values()))
    over = (table > 0.1).sum(axis=0)
    assert 0 < over.sum() < table.size  # some photo-lesion pairs on either side of the aim
    for i, c in enumerate(CLASSES):
        found = report["coverage"][c]
        assert found["median_pct"] == pytest.approx(np.median(table[:, i]), abs=1e-3)
        assert found["max_pct"] == pytest.approx(table[:, i].max(), abs=1e-3)
        assert found["photos_over_aim"] == over[i]
    assert f"## Lesion-free photos ({len(free)})" in (out / "metrics.md").read_text()
    assert "| lesion | median % | largest % | photos over 0.1 % |" in capsys.readouterr().out


def test_evaluate_errors_are_one_line(setup, tmp_path, capsys):
    assert main(["--model", str(tmp_path / "nope"), "--manifest", str(setup["manifest"]), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope" in err and "\n" not in err
    assert main(["--model", str(setup["model"]), "--manifest", str(setup["manifest"]), "--split", "holdout",
                 "--out", str(tmp_path)]) == 2  # fmt: skip
    assert "no rows in split 'holdout'" in capsys.readouterr().err
