"""Tests for training/synthetic/: layout, determinism and the meaning of the masks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from training import synthetic
from training.synthetic import LESION_IDS

SIZE = 256
N_SAMPLES = 24  # in-memory samples for the mask checks (about 30 ms each at 256 px)


@pytest.fixture(scope="module")
def samples() -> list[synthetic.Sample]:
    return [synthetic.render_sample(synthetic.sample_rng(3, i), SIZE) for i in range(N_SAMPLES)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn") / "a"
    synthetic.main(
        ["--out", str(out), "--n", "6", "--seed", "5", "--size", str(SIZE), "--splits", "train=0.5,valid=0.2,test=0.3"]
    )
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _luminance(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def test_generate_sample_types_and_shapes():
    image, masks = synthetic.generate_sample(7, size=SIZE)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert masks.shape == (4, SIZE, SIZE) and masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 1}
    # a Generator and the same integer seed give the same sample
    image2, masks2 = synthetic.generate_sample(np.random.default_rng(7), size=SIZE)
    np.testing.assert_array_equal(image, image2)
    np.testing.assert_array_equal(masks, masks2)


def test_layout_matches_ddr(dataset: Path):
    root = dataset / "lesion_segmentation"
    expected_counts = {"train": 3, "valid": 1, "test": 2}
    assert sorted(p.name for p in root.iterdir()) == sorted(expected_counts)
    index = 0
    for split, count in expected_counts.items():
        images = sorted((root / split / "image").iterdir())
        stems = [f"syn_s5_{i:05d}" for i in range(index, index + count)]
        index += count
        assert [p.name for p in images] == [f"{s}.jpg" for s in stems]
        assert sorted(p.name for p in (root / split / "label").iterdir()) == sorted(LESION_IDS)
        for lesion in LESION_IDS:
            labels = sorted((root / split / "label" / lesion).iterdir())
            assert [p.name for p in labels] == [f"{s}.tif" for s in stems]
        for stem in stems:
            with Image.open(root / split / "image" / f"{stem}.jpg") as im:
                assert im.format == "JPEG" and im.mode == "RGB" and im.size == (SIZE, SIZE)
            for lesion in LESION_IDS:
                with Image.open(root / split / "label" / lesion / f"{stem}.tif") as im:
                    assert im.mode == "L" and im.size == (SIZE, SIZE)
                    assert set(np.unique(np.asarray(im))) <= {0, 255}
    meta = json.loads((dataset / "synthetic.json").read_text())
    assert meta["version"] == synthetic.GENERATOR_VERSION
    assert (meta["seed"], meta["n"], meta["size"]) == (5, 6, SIZE)
    assert meta["counts"] == expected_counts
    assert not list(dataset.rglob("*.tmp")), "temporary files left behind"


def test_written_masks_match_generator(dataset: Path):
    sample = synthetic.render_sample(synthetic.sample_rng(5, 4), SIZE)  # index 4 -> test
    for c, lesion in enumerate(LESION_IDS):
        written = cv2.imread(
            str(dataset / "lesion_segmentation" / "test" / "label" / lesion / "syn_s5_00004.tif"), cv2.IMREAD_UNCHANGED
        )
        np.testing.assert_array_equal(written, sample.masks[c] * 255)
    jpeg = cv2.imread(str(dataset / "lesion_segmentation" / "test" / "image" / "syn_s5_00004.jpg"))
    # only JPEG loss between the generated and the written image
    assert np.abs(jpeg[..., ::-1].astype(int) - sample.image).mean() < 4


def test_deterministic_and_independent_of_workers_and_n(dataset: Path, tmp_path: Path):
    splits = {"train": 0.5, "valid": 0.2, "test": 0.3}
    synthetic.write_dataset(tmp_path / "b", 6, 5, SIZE, splits, workers=2)
    assert _files(tmp_path / "b") == _files(dataset)
    # image i depends only on (seed, i): a smaller dataset holds the same first images
    synthetic.write_dataset(tmp_path / "c", 2, 5, SIZE, {"train": 1.0})
    small = _files(tmp_path / "c")
    big = _files(dataset)
    shared = [k for k in small if k.endswith((".jpg", ".tif"))]
    assert len(shared) == 10
    assert all(small[k] == big[k] for k in shared)
    # another seed gives other images
    synthetic.write_dataset(tmp_path / "d", 2, 6, SIZE, {"train": 1.0})
    other = _files(tmp_path / "d")
    a = (tmp_path / "c/lesion_segmentation/train/image/syn_s5_00000.jpg").read_bytes()
    b = other["lesion_segmentation/train/image/syn_s6_00000.jpg"]
    assert a != b


def test_counts_match_masks(samples):
    drawn = dict.fromkeys(LESION_IDS, 0)
    for s in samples:
        for c, lesion in enumerate(LESION_IDS):
            assert (s.lesion_counts[lesion] > 0) == bool(s.masks[c].any()), (lesion, s.lesion_counts)
            drawn[lesion] += s.lesion_counts[lesion] > 0
    assert all(v >= 2 for v in drawn.values()), drawn  # every lesion type is exercised
    assert any(not s.masks.any() for s in samples)  # and some images are lesion-free
    assert {s.background for s in samples} == {"photo", "procedural"}


def test_lesions_only_inside_fov(samples):
    for s in samples:
        assert not (s.masks.any(axis=0) & ~s.fov).any()
        # measured on the image too: a lesion pixel is never on the black surround
        lesion = s.masks.any(axis=0)
        if lesion.any():
            assert s.image.max(axis=2)[lesion].min() > 25


def test_no_lesion_on_optic_disc(samples):
    ys, xs = np.mgrid[:SIZE, :SIZE]
    for s in samples:
        (cx, cy), r = s.disc_centre, s.disc_radius
        on_disc = (xs - cx) ** 2 + (ys - cy) ** 2 <= (1.25 * r) ** 2  # disc and its rim
        assert not s.masks[:, on_disc].any()
        # the disc is really there as an unlabelled bright look-alike
        core = ((xs - cx) ** 2 + (ys - cy) ** 2 <= (0.5 * r) ** 2) & s.fov
        if core.sum() > 10:
            lum = _luminance(s.image)
            assert lum[core].mean() > lum[s.fov].mean() + 10


def test_lesion_contrast_on_the_image(samples):
    """EX and SE brighter, HE and MA darker than the retina right around them."""
    contrast = {lesion: [] for lesion in LESION_IDS}
    ring_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
    for s in samples:
        lum = _luminance(s.image)
        near_any = cv2.dilate(s.masks.max(axis=0), np.ones((3, 3), np.uint8)).astype(bool)
        for c, lesion in enumerate(LESION_IDS):
            if s.masks[c].any():
                ring = cv2.dilate(s.masks[c], ring_kernel).astype(bool) & ~near_any & s.fov
                contrast[lesion].append(lum[s.masks[c] > 0].mean() - lum[ring].mean())
    mean = {k: float(np.mean(v)) for k, v in contrast.items()}
    assert mean["EX"] > 20 and mean["SE"] > 10, mean
    assert mean["HE"] < -10 and mean["MA"] < -3, mean
    assert max(contrast["HE"]) < 0 and min(contrast["EX"]) > 0, contrast


def test_split_counts():
    assert synthetic.split_counts(10, synthetic.DEFAULT_SPLITS) == {"train": 6, "valid": 2, "test": 2}
    assert synthetic.split_counts(757, {"train": 383 / 757, "valid": 149 / 757, "test": 225 / 757}) == {
        "train": 383,
        "valid": 149,
        "test": 225,
    }
    assert sum(synthetic.split_counts(7, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}).values()) == 7
    with pytest.raises(ValueError, match="sum to 1"):
        synthetic.split_counts(10, {"train": 0.5, "test": 0.3})
    with pytest.raises(ValueError, match="non-negative"):
        synthetic.split_counts(10, {"train": 1.5, "test": -0.5})


@pytest.mark.parametrize("splits", ["train:0.5", "train=0.5,val=0.5", "train=0.5"])
def test_cli_rejects_bad_splits(tmp_path: Path, splits: str):
    with pytest.raises(SystemExit):
        synthetic.main(["--out", str(tmp_path), "--n", "1", "--seed", "0", "--splits", splits])
    assert not (tmp_path / "lesion_segmentation").exists()


# sha256 of every file of a small dataset (seed 5, 4 images of 128 px: both backgrounds, every
# lesion class, a lesion-free image, three splits), recorded with the single-file generator
# before it became a package. A change here means the generator's output changed: every
# figure measured on synthetic data (README, weights/README.md) would need measuring again.
GOLDEN = {
    "train/syn_s5_00000.jpg": "f32f2ef803918daa49a5d1b49c55a93ffa1bdb8326a58d7882685d6054875c7d",
    "train/syn_s5_00000 masks": "9298e5a44f2b1f2219e7b3f15181fb78818afc20d0ad6c962374bf0393990cd2",
    "train/syn_s5_00001.jpg": "9e83a80d24ced225c38fd8109b904a8fef9360a13f9845471b3d088ec90b3d35",
    "train/syn_s5_00001 masks": "7f389bcb7279b9c066e4991d7b28fcb2c196f0a4466f2c6bc023cc0c041300a5",
    "valid/syn_s5_00002.jpg": "f9c16308a2b4bc79b2a1e4008286da0b0b84fe5fef0e62f149af0da5063ff3d6",
    "valid/syn_s5_00002 masks": "700da9808752474e3b58725924697f6cf6f6fa7f17d012afe62afd138c67e43b",
    "test/syn_s5_00003.jpg": "db5c95e12c54479ec879df771cb7401e6f8124369edec9840f449a8b19ebc2dc",
    "test/syn_s5_00003 masks": "674f68ba6341e591438883352fda57f59e9432cfb17d81af417feb3c6a379b88",
    "landmarks.csv": "4ad366c11e1cec2156a715cb337cd46b0cabfc4cfc8eaed41bb5555a678dcb14",
    "synthetic.json": "5f884de20edc108ef786c6c5a7a2d766fd8107c5c6689882fac00bf16db24649",
}


def test_output_is_byte_for_byte_the_recorded_one(tmp_path: Path):
    synthetic.write_dataset(tmp_path, 4, 5, 128, {"train": 0.5, "valid": 0.25, "test": 0.25})

    def sha(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    got = {name: sha((tmp_path / name).read_bytes()) for name in ("landmarks.csv", "synthetic.json")}
    for jpg in (tmp_path / "lesion_segmentation").glob("*/image/*.jpg"):
        split, stem = jpg.parent.parent.name, jpg.stem
        got[f"{split}/{jpg.name}"] = sha(jpg.read_bytes())
        tifs = [jpg.parent.parent / "label" / lesion / f"{stem}.tif" for lesion in LESION_IDS]
        got[f"{split}/{stem} masks"] = sha("".join(sha(t.read_bytes()) for t in tifs).encode())
    changed = sorted(k for k in GOLDEN if got.get(k) != GOLDEN[k])
    assert not changed and got.keys() == GOLDEN.keys(), f"output changed: {changed or sorted(got)}"
