"""training.metrics: confusion counts by hand, AP against scikit-learn, bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, precision_recall_curve

from training.metrics import ConfusionAccumulator, MetricSuite, PRAccumulator


def hand_batch() -> tuple[np.ndarray, np.ndarray]:
    """1 x 4 x 2 x 3 probabilities and targets; at threshold 0.35:
    EX: TP 2, FP 1, FN 0 -- HE: nothing predicted, nothing there -- MA: one missed pixel --
    SE: 6 false positives, no target."""
    probs = np.zeros((1, 4, 2, 3), dtype=np.float32)
    targets = np.zeros((1, 4, 2, 3), dtype=np.float32)
    probs[0, 0] = [[0.9, 0.4, 0.2], [0.6, 0.1, 0.0]]
    targets[0, 0] = [[1, 1, 0], [0, 0, 0]]
    probs[0, 1] = 0.1
    probs[0, 2] = 0.1
    targets[0, 2, 1, 1] = 1
    probs[0, 3] = 0.5
    return probs, targets


def test_confusion_by_hand_with_empty_conventions():
    acc = ConfusionAccumulator(thresholds=0.35)
    acc.update(*hand_batch())
    assert acc.tp.tolist() == [2, 0, 0, 0] and acc.fp.tolist() == [1, 0, 0, 6]
    assert acc.fn.tolist() == [0, 0, 1, 0] and acc.tn.tolist() == [3, 6, 5, 0]
    scores = acc.compute()
    assert scores["iou"].tolist() == pytest.approx([2 / 3, 1, 0, 0])
    assert scores["f1"].tolist() == pytest.approx([4 / 5, 1, 0, 0])
    assert scores["precision"].tolist() == pytest.approx([2 / 3, 1, 0, 0])
    assert scores["recall"].tolist() == pytest.approx([1, 1, 0, 0])
    assert scores["macro"]["f1"] == pytest.approx((4 / 5 + 1) / 4)


def test_confusion_torch_numpy_thresholds_and_valid():
    probs, targets = hand_batch()
    from_numpy, from_torch = ConfusionAccumulator(), ConfusionAccumulator()
    from_numpy.update(probs, targets)
    from_torch.update(torch.from_numpy(probs), torch.from_numpy(targets))
    assert from_numpy.tp.tolist() == from_torch.tp.tolist() and from_numpy.fp.tolist() == from_torch.fp.tolist()

    per_class = ConfusionAccumulator(thresholds=[0.5, 0.35, 0.35, 0.6])  # EX 0.4 drops out, SE 0.5 too
    per_class.update(probs, targets)
    assert per_class.tp.tolist() == [1, 0, 0, 0] and per_class.fp.tolist() == [1, 0, 0, 0]

    valid = np.ones((1, 1, 2, 3), dtype=np.float32)
    valid[..., 0] = 0  # the first column is outside the field of view
    masked = ConfusionAccumulator()
    masked.update(probs, targets, valid)
    assert masked.tp.tolist() == [1, 0, 0, 0] and masked.fp.tolist() == [0, 0, 0, 4]
    assert (masked.tp + masked.fp + masked.fn + masked.tn).tolist() == [4] * 4


def test_rejects_logits_and_bad_shapes():
    acc = PRAccumulator()
    with pytest.raises(ValueError, match="sigmoid"):
        acc.update(torch.randn(1, 4, 3, 3) * 5, torch.zeros(1, 4, 3, 3))
    with pytest.raises(ValueError, match=r"B x 4 x H x W; got \(1, 3, 3, 3\)"):
        acc.update(torch.rand(1, 3, 3, 3), torch.zeros(1, 3, 3, 3))
    with pytest.raises(ValueError, match="thresholds"):
        ConfusionAccumulator(thresholds=[0.3, 0.4])


def random_split(seed: int, shape=(6, 4, 64, 64)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = (rng.random(shape) < np.array([0.05, 0.1, 0.01, 0.2]).reshape(1, 4, 1, 1)).astype(np.float32)
    scores = 1 / (1 + np.exp(-(rng.normal(size=shape) * 1.5 + 2.5 * targets - 2)))
    return scores.astype(np.float32), targets


def test_average_precision_matches_sklearn_on_random_data():
    probs, targets = random_split(0)
    acc = PRAccumulator(bins=10000)
    for i in range(len(probs)):  # several updates accumulate into one histogram
        acc.update(torch.from_numpy(probs[i : i + 1]), torch.from_numpy(targets[i : i + 1]))
    ap = acc.average_precision()
    for c in range(4):
        expected = average_precision_score(targets[:, c].ravel(), probs[:, c].ravel())
        assert ap[c] == pytest.approx(expected, abs=1e-3)


def test_average_precision_is_exact_on_the_bin_grid():
    bins = 1000
    rng = np.random.default_rng(1)
    targets = (rng.random((3, 4, 40, 40)) < 0.1).astype(np.float32)
    k = np.clip(rng.normal(500 + 150 * targets, 120), 0, bins - 1).astype(int)  # many ties per bin
    probs = ((k + 0.5) / bins).astype(np.float32)
    acc = PRAccumulator(bins=bins, scale="linear")
    acc.update(probs, targets)
    for c in range(4):
        y, s = targets[:, c].ravel(), probs[:, c].ravel().astype(np.float64)
        assert acc.average_precision()[c] == pytest.approx(average_precision_score(y, s), abs=1e-12)
        precision, recall, thresholds = precision_recall_curve(y, s)
        curve = acc.curve(c)
        np.testing.assert_allclose(curve.precision, precision[:-1][::-1], rtol=0, atol=1e-12)
        np.testing.assert_allclose(curve.recall, recall[:-1][::-1], rtol=0, atol=1e-12)
        np.testing.assert_allclose(curve.thresholds, np.floor(thresholds[::-1] * bins) / bins, atol=1e-12)


def test_logit_bins_keep_saturated_probabilities_apart():
    # A Tversky-trained model puts most lesion pixels above p = 0.9999, where equal-width
    # probability bins make them ties; logit-width bins still rank them (sklearn = exact).
    rng = np.random.default_rng(5)
    targets = (rng.random((2, 4, 64, 64)) < 0.1).astype(np.float32)
    logits = rng.normal(9 + 5 * targets, 2.5)  # mostly p > 0.999, positives higher
    probs = torch.sigmoid(torch.from_numpy(logits).float()).numpy()
    linear, logit = PRAccumulator(bins=10000, scale="linear"), PRAccumulator()
    linear.update(probs, targets)
    logit.update(probs, targets)
    assert logit.bins == 65536 and logit.scale == "logit"
    for c in range(4):
        exact = average_precision_score(targets[:, c].ravel(), probs[:, c].ravel())
        assert logit.average_precision()[c] == pytest.approx(exact, abs=2e-3)
        assert linear.average_precision()[c] < exact - 0.05  # the ties cost the linear bins
    # tuned thresholds sit on bin edges, read back exactly, and reproduce the histogram's F1
    best = logit.best_thresholds()
    assert (best > 0.999).all() and (best < 1).all()
    assert [logit.threshold_index(t) for t in best] == [
        int(np.argmin(np.abs(logit.edges(np.arange(logit.bins + 1)) - t))) for t in best
    ]
    confusion = ConfusionAccumulator(thresholds=best)
    confusion.update(probs, targets)
    for c in range(4):
        assert confusion.compute()["f1"][c] == pytest.approx(logit.curve(c).f1.max(), abs=1e-9)
    assert logit.threshold_index(0.0) == 0 and logit.threshold_index(1.0) == logit.bins
    with pytest.raises(ValueError, match="scale must be one of logit, linear"):
        PRAccumulator(scale="log")
    with pytest.raises(ValueError, match="cannot merge linear histograms"):
        logit.merge(PRAccumulator(bins=65536, scale="linear"))


def test_step_wise_not_eleven_point():
    # ranked: positive (0.9), negative (0.8), positive (0.7)
    probs = np.array([0.9, 0.8, 0.7], dtype=np.float32).reshape(1, 1, 1, 3)
    targets = np.array([1, 0, 1], dtype=np.float32).reshape(1, 1, 1, 3)
    acc = PRAccumulator(num_classes=1, bins=100)
    acc.update(probs, targets)
    step = 0.5 * 1 + 0.5 * (2 / 3)  # recall 0 -> .5 at precision 1, .5 -> 1 at precision 2/3
    eleven_point = (6 * 1 + 5 * (2 / 3)) / 11  # interpolated precision at recall 0, .1, ..., 1
    ap = acc.average_precision()[0]
    assert ap == pytest.approx(step, abs=1e-12)
    assert ap == pytest.approx(average_precision_score([1, 0, 1], [0.9, 0.8, 0.7]), abs=1e-12)
    assert abs(ap - eleven_point) > 0.01


def test_memory_does_not_grow_with_updates():
    acc = PRAccumulator(bins=2000)
    probs, targets = (torch.from_numpy(x) for x in random_split(2, shape=(1, 4, 16, 16)))
    acc.update(probs, targets)
    size = acc.positives.nbytes + acc.negatives.nbytes
    tracemalloc.start()
    try:
        acc.update(probs, targets)
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(300):
            acc.update(probs, targets)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 4096, grown
    assert acc.positives.nbytes + acc.negatives.nbytes == size
    assert int(acc.positives.sum() + acc.negatives.sum()) == 302 * probs.numel()


def test_best_thresholds_maximise_f1_and_reproduce_with_confusion():
    bins = 200
    rng = np.random.default_rng(3)
    targets = (rng.random((2, 4, 30, 30)) < 0.15).astype(np.float32)
    targets[:, 3] = 0  # SE never present: the default threshold comes back
    k = np.clip(rng.normal(80 + 60 * targets, 30), 0, bins - 1).astype(int)
    probs = ((k + 0.5) / bins).astype(np.float32)
    acc = PRAccumulator(bins=bins, scale="linear")
    acc.update(probs, targets)
    best = acc.best_thresholds()
    assert best[3] == pytest.approx(0.35)
    confusion = ConfusionAccumulator(thresholds=best)
    confusion.update(probs, targets)
    f1 = confusion.compute()["f1"]
    for c in range(3):
        y, s = targets[:, c].ravel() > 0, probs[:, c].ravel()
        brute = max(2 * (y & (s >= t)).sum() / ((s >= t).sum() + y.sum()) for t in np.unique(s))
        assert f1[c] == pytest.approx(brute, abs=1e-12)
        assert acc.curve(c).f1.max() == pytest.approx(brute, abs=1e-12)


def test_metric_suite_per_source_and_overall():
    probs, targets = random_split(4, shape=(4, 4, 16, 16))
    sources = ["idrid", "ddr", "idrid", "tjdr"]
    suite = MetricSuite(["idrid", "ddr", "tjdr"], bins=1000)
    suite.update(torch.from_numpy(probs[:2]), torch.from_numpy(targets[:2]), sources[:2])
    suite.update(probs[2:], targets[2:], sources[2:])
    report = suite.compute()
    assert list(report) == ["overall", "idrid", "ddr", "tjdr"]
    assert list(report["overall"]) == ["EX", "HE", "MA", "SE", "macro"]
    assert set(report["overall"]["MA"]) == {"aupr", "f1", "iou", "precision", "recall", "aupr11"}

    def alone(index: list[int]) -> tuple[np.ndarray, dict]:
        pr, confusion = PRAccumulator(bins=1000), ConfusionAccumulator()
        pr.update(probs[index], targets[index])
        confusion.update(probs[index], targets[index])
        return pr.average_precision(), confusion.compute()

    for name, index in (("overall", [0, 1, 2, 3]), ("idrid", [0, 2]), ("tjdr", [3])):
        ap, scores = alone(index)
        for c, lesion in enumerate(["EX", "HE", "MA", "SE"]):
            got = report[name][lesion]
            assert got["aupr"] == pytest.approx(ap[c], nan_ok=True) and got["f1"] == pytest.approx(scores["f1"][c])
        assert report[name]["macro"]["aupr"] == pytest.approx(np.nanmean(ap))

    with pytest.raises(ValueError, match="unknown source 'messidor'"):
        suite.update(probs[:1], targets[:1], "messidor")


def test_no_positives_gives_nan_ap():
    acc = PRAccumulator(num_classes=2, bins=10)
    acc.update(np.full((1, 2, 2, 2), 0.3), np.zeros((1, 2, 2, 2)))
    assert np.isnan(acc.average_precision()).all()


def test_eleven_point_aupr_by_hand():
    """Five pixels, three lesion: the literature's 11-threshold AUPR worked out by hand."""
    from training.metrics import ElevenPointAccumulator

    probs = torch.tensor([0.95, 0.85, 0.55, 0.35, 0.15]).view(1, 1, 1, 5)
    targets = torch.tensor([1, 0, 1, 0, 1]).view(1, 1, 1, 5)
    acc = ElevenPointAccumulator(num_classes=1)
    acc.update(probs, targets)
    precision, recall = acc.curve(0)
    # p > t: t = 0, 0.1 all five (P 3/5, R 1); 0.2, 0.3 four (P 1/2, R 2/3); 0.4, 0.5 three (P 2/3, R 2/3);
    # 0.6-0.8 two (P 1/2, R 1/3); 0.9 one (P 1, R 1/3); 1.0 none (P 1 by definition, R 0).
    assert np.allclose(precision, [0.6, 0.6, 0.5, 0.5, 2 / 3, 2 / 3, 0.5, 0.5, 0.5, 1, 1])
    assert np.allclose(recall, [1, 1, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 0])
    # From t = 1 down: (0,1)->(1/3,1) = 1/3; (1/3,1/2)->(2/3,2/3) = 7/36; (2/3,1/2)->(1,3/5) = 11/60.
    assert acc.aupr()[0] == pytest.approx(32 / 45)
    exact = PRAccumulator(num_classes=1)
    exact.update(probs, targets)
    # Exact AP for the same pixels: 1/3 x 1 + 1/3 x 2/3 + 1/3 x 3/5 = 0.7556; here the 11-point one is lower,
    # on real maps (thousands of pixels per bin) it reads higher: the point is they differ.
    assert exact.average_precision()[0] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3, abs=1e-6)
    none = ElevenPointAccumulator(num_classes=1)
    none.update(probs, torch.zeros_like(targets))
    assert np.isnan(none.aupr()[0])


def _image_accumulator(rng: np.random.Generator, lesion_share: float, separation: float) -> PRAccumulator:
    targets = rng.random((1, 4, 32, 32)) < lesion_share
    probs = np.clip(rng.normal(0.3 + separation * targets, 0.15), 0, 1).astype(np.float32)
    one = PRAccumulator()
    one.update(probs, targets.astype(np.float32))
    return one


def test_bootstrap_interval_holds_the_pooled_ap_and_widens_with_disagreeing_images():
    from training.metrics import bootstrap_average_precision

    rng = np.random.default_rng(0)
    same = [_image_accumulator(np.random.default_rng(1), 0.1, 0.3) for _ in range(6)]
    pooled = PRAccumulator()
    for a in same:
        pooled.merge(a)
    tight = bootstrap_average_precision(same, resamples=200)
    # Identical images: every resample pools the same histogram shape, so the interval is the AP itself.
    np.testing.assert_allclose(tight[:, 0], pooled.average_precision(), atol=1e-12)
    np.testing.assert_allclose(tight[:, 1], pooled.average_precision(), atol=1e-12)
    mixed = [_image_accumulator(rng, 0.1, s) for s in (0.05, 0.1, 0.4, 0.6, 0.8, 0.2)]
    pooled = PRAccumulator()
    for a in mixed:
        pooled.merge(a)
    wide = bootstrap_average_precision(mixed, resamples=400, seed=1)
    ap = pooled.average_precision()
    assert np.all(wide[:, 1] - wide[:, 0] > 0.05)
    assert np.all(wide[:, 0] <= ap) and np.all(ap <= wide[:, 1])
    with pytest.raises(ValueError, match="at least one image"):
        bootstrap_average_precision([])
