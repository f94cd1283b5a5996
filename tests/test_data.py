"""training.data: decode + FOV square + CLAHE + augmentation, and the on-disk cache."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from hydralanet.config import CLASSES
from training import data as data_module
from training import sampling as sampling_module
from training.config import load_config
from training.data import LesionDataset, SquareCache, build_augmentation, load_square, read_mask, split_rows
from training.synthetic import write_dataset

SIZE = 64


def ddr_rows(root: Path) -> list[dict]:
    """Manifest-like rows for a DDR-layout folder (what training.prepare produces)."""
    names = {"train": "train", "valid": "val", "test": "test"}
    rows = []
    for folder, split in names.items():
        for image in sorted((root / "lesion_segmentation" / folder / "image").glob("*.jpg")):
            row = {"source": "synthetic", "split": split, "image": image, "OD": None}
            for c in CLASSES:
                row[c] = root / "lesion_segmentation" / folder / "label" / c / f"{image.stem}.tif"
            rows.append(row)
    return rows


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> list[dict]:
    root = tmp_path_factory.mktemp("syn")
    write_dataset(root, n=6, seed=5, size=128, splits={"train": 0.5, "valid": 0.5})
    return ddr_rows(root)


@pytest.fixture
def cfg():
    return load_config("cpu-small", [f"preprocessing.input_size={SIZE}"])


def test_sample_shapes_and_binary_masks(rows, cfg):
    ds = LesionDataset(split_rows(rows, "train"), cfg.preprocessing, augmentation=build_augmentation(cfg), seed=1)
    assert len(ds) == 3
    for i in range(len(ds)):
        s = ds[i]
        assert s["image"].shape == (3, SIZE, SIZE) and s["image"].dtype == torch.float32
        assert s["masks"].shape == (4, SIZE, SIZE) and s["valid"].shape == (1, SIZE, SIZE)
        assert set(s["masks"].unique().tolist()) <= {0.0, 1.0}
        assert set(s["valid"].unique().tolist()) <= {0.0, 1.0}
        assert s["masks"].dtype == s["valid"].dtype == torch.uint8
        assert 0.3 < s["valid"].float().mean() < 1.0  # a disc inside a square
        assert s["source"] == "synthetic"
    with pytest.raises(ValueError, match="no rows in split 'nope'; splits present: train, val"):
        split_rows(rows, "nope")


def test_unaugmented_sample_is_the_inference_preprocessing(rows, cfg):
    """No train/serve skew: same FOV crop, CLAHE and normalisation as hydralanet.preprocess."""
    row = split_rows(rows, "val")[0]
    sample = LesionDataset([row], cfg.preprocessing)[0]
    from hydralanet import preprocess, read_image

    prepared = preprocess(read_image(row["image"]), cfg.preprocessing)  # the inference path itself
    assert torch.equal(sample["image"], prepared.tensor)
    geometry = prepared.geometry
    full = np.stack([read_mask(row[c]) for c in CLASSES], axis=-1)
    small = geometry.mask_to_square(full)
    for c, plane in zip(CLASSES, sample["masks"]):
        assert torch.equal(plane, torch.from_numpy(small[..., CLASSES.index(c)]).float())


def test_absent_mask_is_zeros_and_rgb_mask_uses_red(tmp_path, rows, cfg):
    row = dict(split_rows(rows, "val")[0])
    row["SE"] = None
    assert LesionDataset([row], cfg.preprocessing)[0]["masks"][3].sum() == 0

    rgb = np.zeros((80, 100, 3), np.uint8)
    rgb[10:20, 30:40, 0] = 255  # lesion in red
    rgb[50:60, 50:60, 1] = 255  # green only: not a lesion
    Image.fromarray(rgb).save(tmp_path / "m.tif")
    mask = read_mask(tmp_path / "m.tif", (80, 100))
    assert mask.sum() == 100 and mask[15, 35] and not mask[55, 55]
    with pytest.raises(ValueError, match="mask is 100 x 80 but its image is 90 x 80"):
        read_mask(tmp_path / "m.tif", (80, 90))


def _spot_row(tmp_path: Path) -> dict:
    """A fundus-like disc with one bright blue square whose EX mask marks exactly that square."""
    image = np.zeros((200, 240, 3), np.uint8)
    cv2.circle(image, (120, 100), 95, (170, 80, 30), -1)
    image[50:70, 140:160] = (60, 40, 255)
    mask = np.zeros((200, 240), np.uint8)
    mask[50:70, 140:160] = 255
    Image.fromarray(image).save(tmp_path / "spot.png")
    Image.fromarray(mask).save(tmp_path / "spot_EX.tif")
    row = {"source": "planted", "split": "train", "image": tmp_path / "spot.png", "OD": None}
    row.update(dict.fromkeys(CLASSES))
    row["EX"] = tmp_path / "spot_EX.tif"
    return row


def test_augmentation_moves_image_and_masks_together(tmp_path):
    cfg = load_config("cpu-small", ["preprocessing.input_size=128", "affine_p=1.0", "hflip_p=0.5", "vflip_p=0.5"])
    ds = LesionDataset([_spot_row(tmp_path)], cfg.preprocessing, augmentation=build_augmentation(cfg), seed=0)
    ds.set_epoch(0)
    plain = LesionDataset(ds.rows, cfg.preprocessing)[0]["masks"][0]
    moved = 0
    for epoch in range(6):
        ds.set_epoch(epoch)
        s = ds[0]
        blue = s["image"][2] > 1.5  # normalised blue channel: only the planted spot is that blue
        mask = s["masks"][0].bool()
        assert mask.sum() > 50
        iou = (blue & mask).sum() / (blue | mask).sum()
        assert iou > 0.8, (epoch, float(iou))
        assert not s["valid"][0][mask].eq(0).any()  # the spot stays inside the (moved) field of view
        moved += int(not torch.equal(mask.float(), plain))
    assert moved >= 5  # affine p = 1: the spot moves every time


def test_augmentation_is_a_function_of_seed_epoch_index_not_workers(rows, cfg):
    ds = LesionDataset(split_rows(rows, "train"), cfg.preprocessing, augmentation=build_augmentation(cfg), seed=7)
    ds.set_epoch(3)
    a = ds[1]
    assert torch.equal(a["image"], ds[1]["image"])
    ds.set_epoch(4)
    assert not torch.equal(a["image"], ds[1]["image"])

    def batches(workers: int) -> list[torch.Tensor]:
        ds.set_epoch(3)
        loader = DataLoader(ds, batch_size=2, num_workers=workers, worker_init_fn=data_module.worker_init_fn)
        return [torch.cat([b["image"], b["masks"]], 1) for b in loader]

    assert all(torch.equal(x, y) for x, y in zip(batches(0), batches(2)))
    assert build_augmentation(cfg).strict  # a misspelt argument fails instead of warning


def test_cache_hit_returns_identical_arrays(rows, cfg, tmp_path, monkeypatch):
    cache = SquareCache(tmp_path / "cache")
    row = split_rows(rows, "train")[0]
    first = cache.load(row, cfg.preprocessing)
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"

    fresh = load_square(row, cfg.preprocessing)
    monkeypatch.setattr(data_module, "load_square", lambda *a: pytest.fail("cache miss"))
    again = cache.load(row, cfg.preprocessing)
    for name in ("image", "masks", "fov"):
        assert again[name].dtype == fresh[name].dtype and np.array_equal(again[name], fresh[name])
        assert np.array_equal(first[name], again[name])

    # A changed input file or another input size is a different entry, never stale data.
    monkeypatch.undo()
    st = os.stat(row["MA"])
    os.utime(row["MA"], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    other = load_config("cpu-small", ["preprocessing.input_size=96"]).preprocessing
    assert cache.path(row, cfg.preprocessing) != files[0]
    assert cache.load(row, other)["image"].shape == (96, 96, 3)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_packed_masks_round_trip_and_presence():
    rng = np.random.default_rng(0)
    masks = (rng.random((40, 50, 4)) < 0.3).astype(np.uint8)
    masks[..., 2] = 0  # no MA anywhere
    packed = data_module.pack_masks(masks)
    assert packed.dtype == np.uint8 and packed.shape == (40, 50) and packed.max() <= 0b1011
    np.testing.assert_array_equal(data_module.unpack_masks(packed), masks.transpose(2, 0, 1))
    assert data_module.lesions_present(packed) == (True, True, False, True)
    assert data_module.lesions_present(np.zeros((3, 3), np.uint8)) == (False,) * 4


def test_crop_first_augmentation_keeps_image_and_masks_together(tmp_path):
    # The window is cut before the warp: the spot must still land where its mask says.
    cfg = load_config("cpu-small", ["crop_size=64", "preprocessing.input_size=128", "affine_p=1.0"])
    assert data_module.crop_window(cfg) == 96
    ds = LesionDataset([_spot_row(tmp_path)], cfg.preprocessing, augmentation=build_augmentation(cfg), seed=0)
    seen = 0
    for epoch in range(12):
        ds.set_epoch(epoch)
        s = ds[0]
        assert s["image"].shape == (3, 64, 64) and s["masks"].shape == (4, 64, 64) and s["valid"].shape == (1, 64, 64)
        blue = s["image"][2] > 1.5
        mask = s["masks"][0].bool()
        assert s["masks"][1:].sum() == 0  # only EX was planted: no bit leaks into another class
        if mask.sum() > 20:
            seen += 1
            assert (blue & mask).sum() / (blue | mask).sum() > 0.8
    assert seen >= 6  # half the windows are centred on the lesion


def test_lesion_presence_and_oversampling_weights(rows, cfg):
    ds = LesionDataset(split_rows(rows, "train"), cfg.preprocessing)
    presence = sampling_module.lesion_presence(ds, num_workers=0)
    expected = torch.tensor([[bool(ds[i]["masks"][c].any()) for c in range(4)] for i in range(len(ds))])
    assert torch.equal(presence, expected)
    weights = sampling_module.oversampling_weights(
        torch.tensor([[0, 0, 0, 0], [1, 0, 0, 1], [1, 1, 0, 0], [0, 0, 1, 0]]), (1.0, 2.0, 1.5, 3.0)
    )
    assert weights.tolist() == [1.0, 3.0, 2.0, 1.5]


def test_weighted_sampler_is_seeded_split_across_ranks_and_proportional():
    weights = torch.tensor([1.0, 3.0, 0.0, 1.0])
    a = sampling_module.WeightedEpochSampler(weights, seed=5)
    a.set_epoch(2)
    first = list(a)
    assert len(first) == len(a) == 4 and first == list(a)  # a function of (seed, epoch)
    draws = set()
    for epoch in range(3, 8):
        a.set_epoch(epoch)
        draws.add(tuple(a))
    assert len(draws) > 1  # drawn afresh each epoch
    ranks = [sampling_module.WeightedEpochSampler(weights, num_replicas=2, rank=r, seed=5) for r in (0, 1)]
    for s in ranks:
        s.set_epoch(2)
    assert len(ranks[0]) == 2 and sorted(list(ranks[0]) + list(ranks[1])) == sorted(first)
    big = sampling_module.WeightedEpochSampler(torch.tensor([1.0, 3.0, 0.0, 1.0]).repeat(2500), seed=0)
    counts = torch.bincount(torch.tensor(list(big)) % 4, minlength=4).double() / 10000
    assert counts[2] == 0  # weight 0 is never drawn
    assert abs(counts[1] - 0.6) < 0.02 and abs(counts[0] - 0.2) < 0.02 and abs(counts[3] - 0.2) < 0.02
    with pytest.raises(ValueError, match="positive sum"):
        sampling_module.WeightedEpochSampler(torch.zeros(3))
    with pytest.raises(ValueError, match="oversample factors must be finite and >= 1"):
        load_config("demo", ["oversample=1,1,1,0.5"])


def test_disc_crops_centre_the_window_on_the_brightest_region():
    cfg = load_config("cpu-small", ["crop_size=64", "preprocessing.input_size=256", "disc_crop_p=1.0", "affine_p=0"])
    augment = build_augmentation(cfg)
    image = np.full((256, 256, 3), 60, np.uint8)
    cv2.circle(image, (200, 40), 14, (230, 220, 200), -1)  # a pale disc near a corner
    assert data_module.brightest_point(image) == pytest.approx((200, 40), abs=4)
    mask = np.zeros((256, 256, 2), np.uint8)
    mask[120:130, 20:30, 0] = 0b1000  # an SE patch far from the disc
    for seed in range(10):
        augment.set_random_seed(seed)
        x0, y0 = augment.origin(image, mask[..., 0])
        assert x0 <= 200 < x0 + 96 and y0 <= 40 < y0 + 96  # the 96 px window holds the disc
    cfg = load_config("cpu-small", ["crop_size=64", "preprocessing.input_size=256"])
    plain = build_augmentation(cfg)
    on_disc = 0
    for seed in range(40):
        plain.set_random_seed(seed)
        x0, y0 = plain.origin(image, mask[..., 0])
        on_disc += x0 <= 200 < x0 + 96 and y0 <= 40 < y0 + 96
    assert on_disc < 20  # without disc_crop_p the disc is only in some random windows


def test_hard_negative_crops_centre_the_window_on_a_mined_point(tmp_path):
    import json

    from training.mine import false_centres

    # Mining: of two predicted blobs, the one touching no true pixel is the hard negative.
    truth = np.zeros((100, 100), bool)
    truth[20:30, 20:30] = True
    predicted = np.zeros_like(truth)
    predicted[18:24, 28:34] = True  # overlaps the truth: a true positive, however shifted
    predicted[70:75, 60:66] = True  # nothing there: false
    assert false_centres(predicted, truth, limit=5) == [[62.5, 72.0]]
    assert false_centres(predicted, truth, limit=0) == []

    # The file attaches points to the rows that it names, checked against the run's size.
    rows = [{"image": Path("/data/a.jpg")}, {"image": Path("/data/b.jpg")}]
    path = tmp_path / "neg.json"
    path.write_text(json.dumps({"input_size": 256, "images": {"/data/a.jpg": [[30.0, 220.0]]}}))
    got = data_module.with_hard_negatives(rows, path, 256, log=lambda *_: None)
    assert [r["hard_negatives"] for r in got] == [[[30.0, 220.0]], []]
    with pytest.raises(ValueError, match="mined on 256 px squares; this run trains on 512 px"):
        data_module.with_hard_negatives(rows, path, 512)
    path.write_text("{}")
    with pytest.raises(ValueError, match="not a file of `python -m training.mine`"):
        data_module.with_hard_negatives(rows, path, 256)

    # Crops: with hard_negative_p = 1 every window of an image with points holds one of them.
    cfg = load_config(
        "cpu-small",
        ["crop_size=64", "preprocessing.input_size=256", f"hard_negatives={path}", "hard_negative_p=1.0", "affine_p=0"],
    )
    augment = build_augmentation(cfg)
    image = np.full((256, 256, 3), 60, np.uint8)
    mask = np.zeros((256, 256, 2), np.uint8)
    mask[120:130, 120:130, 0] = 0b0001  # an exudate elsewhere
    for seed in range(10):
        augment.set_random_seed(seed)
        x0, y0 = augment.origin(image, mask[..., 0], [[30.0, 220.0]])
        assert x0 <= 30 < x0 + 96 and y0 <= 220 < y0 + 96
        out = augment(image=image, mask=mask, points=[[30.0, 220.0]])
        assert out["image"].shape == (64, 64, 3)
    # Without points the same sampler falls back to lesions and random windows.
    hits = 0
    for seed in range(20):
        augment.set_random_seed(seed)
        x0, y0 = augment.origin(image, mask[..., 0])
        hits += x0 <= 30 < x0 + 96 and y0 <= 220 < y0 + 96
    assert hits < 10
    either = load_config("cpu-small", ["hard_negative_p=0.3", f"hard_negatives={path}", "crop_size=64"])
    assert either.hard_negative_p == 0.3 and either.crop_size == 64  # settings apply together, in any order
    with pytest.raises(ValueError, match="hard_negative_p needs hard_negatives=FILE"):
        load_config("cpu-small", ["hard_negative_p=0.3"])
    with pytest.raises(ValueError, match="hard_negative_p centres training crops: it needs crop_size > 0"):
        load_config("cpu-small", [f"hard_negatives={path}", "hard_negative_p=0.3", "crop_size=0"])
    with pytest.raises(ValueError, match="disc_crop_p \\+ hard_negative_p must be <= 1"):
        load_config("cpu-small", ["crop_size=64", f"hard_negatives={path}", "hard_negative_p=0.8", "disc_crop_p=0.3"])


def test_epoch_repeats_draw_each_image_that_many_times_per_epoch_on_average():
    sampler = sampling_module.WeightedEpochSampler(torch.ones(5, dtype=torch.float64), seed=3, repeats=8)
    sampler.set_epoch(1)
    drawn = list(sampler)
    assert len(drawn) == len(sampler) == 40 and set(drawn) <= set(range(5))
    split = [sampling_module.WeightedEpochSampler(torch.ones(5), num_replicas=2, rank=r, repeats=3) for r in (0, 1)]
    assert [len(s) for s in split] == [8, 8]  # ceil(5 x 3 / 2) per rank
    assert load_config("demo", ["epoch_repeats=4"]).epoch_repeats == 4
    with pytest.raises(ValueError, match="epoch_repeats must be a whole number >= 1"):
        load_config("demo", ["epoch_repeats=0"])


def test_balanced_crops_centre_a_small_lesion_kind_as_often_as_a_large_one():
    image = np.full((256, 256, 3), 60, np.uint8)
    lesions = np.zeros((256, 256), np.uint8)
    lesions[0:100, 0:100] = 0b0001  # a large hard exudate patch (top left)
    lesions[200, 200] = 0b0100  # one microaneurysm pixel (bottom right)

    def windows_on_the_microaneurysm(balanced: bool) -> int:
        cfg = load_config("cpu-small", ["crop_size=64", "preprocessing.input_size=256", f"balanced_crops={balanced}"])
        augment = build_augmentation(cfg)
        hits = 0
        for seed in range(200):
            augment.set_random_seed(seed)
            x0, y0 = augment.origin(image, lesions)
            hits += x0 <= 200 < x0 + 96 and y0 <= 200 < y0 + 96
        return hits

    # Half the windows are lesion-centred; balanced, half of those pick the microaneurysm (about
    # 50 of 200, plus random windows that happen to hold it); unbalanced, 1 pixel in 10,001 is.
    balanced, plain = windows_on_the_microaneurysm(True), windows_on_the_microaneurysm(False)
    assert balanced >= 40 and plain <= balanced - 25, (balanced, plain)
