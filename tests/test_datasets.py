"""training.datasets: the IDRiD / DDR / TJDR parsers on tiny fake trees."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from training.data import read_mask
from training.datasets import (
    DEFAULT_TJDR_PALETTE,
    MASK_KEYS,
    decode_tjdr_label,
    image_size,
    load_tjdr_palette,
    parse_ddr,
    parse_idrid,
    parse_tjdr,
)

from .fixtures_datasets import SIZE, ddr_present, lesion_box, make_ddr, make_idrid, make_tjdr, tjdr_label, write_mask

# --------------------------------------------------------------------------- IDRiD


@pytest.mark.parametrize("inner", [False, True], ids=["parent", "A. Segmentation"])
def test_idrid_release_layout(tmp_path, inner):
    root = make_idrid(tmp_path, n_train=3, n_test=2)
    records = parse_idrid(root / "A. Segmentation" if inner else root)
    assert [(r.image.name, r.official_split) for r in records] == [
        ("IDRiD_01.jpg", "train"), ("IDRiD_02.jpg", "train"), ("IDRiD_03.jpg", "train"),
        ("IDRiD_04.jpg", "test"), ("IDRiD_05.jpg", "test"),
    ]  # fmt: skip
    assert {r.source for r in records} == {"idrid"}
    for number, record in enumerate(records, start=1):
        assert set(record.masks) == set(MASK_KEYS)
        assert record.masks["MA"].name == f"IDRiD_{number:02d}_MA.tif"
        assert record.masks["MA"].parent.name == "1. Microaneurysms"
        assert record.masks["OD"].parent.name == "5. Optic Disc"
        # SE only for even numbers: a missing file means the lesion is absent
        assert (record.masks["SE"] is None) == bool(number % 2)
        # RGB masks: the lesion is read from the red channel
        assert np.array_equal(read_mask(record.masks["EX"]), lesion_box(number, "EX"))


def test_idrid_upper_case_extension(tmp_path):
    records = parse_idrid(make_idrid(tmp_path, ext=".JPG", rgb_masks=False))
    assert records[0].image.name == "IDRiD_01.JPG"
    assert records[0].masks["HE"] is not None


def test_idrid_missing_lesion_folder_is_named(tmp_path):
    root = make_idrid(tmp_path)
    shutil.rmtree(root / "A. Segmentation" / "2. All Segmentation Groundtruths" / "b. Testing Set" / "4. Soft Exudates")
    with pytest.raises(FileNotFoundError, match=r"b\. Testing Set/4\. Soft Exudates"):
        parse_idrid(root)


def test_idrid_wrong_root_says_what_is_expected(tmp_path):
    (tmp_path / "something").mkdir()
    with pytest.raises(FileNotFoundError, match="1. Original Images"):
        parse_idrid(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        parse_idrid(tmp_path / "nope")


def test_idrid_mask_without_photo_names_the_file(tmp_path):
    root = make_idrid(tmp_path)
    folder = root / "A. Segmentation" / "2. All Segmentation Groundtruths" / "a. Training Set" / "1. Microaneurysms"
    write_mask(folder / "IDRiD_99_MA.tif", lesion_box(0, "MA"))
    write_mask(folder / "IDRiD_01_HE.tif", lesion_box(0, "MA"))  # wrong lesion suffix for the folder
    with pytest.raises(ValueError) as err:
        parse_idrid(root)
    assert "mask without its photo" in str(err.value) and "IDRiD_99_MA.tif" in str(err.value)
    assert "IDRiD_01_HE.tif" in str(err.value) and "<photo>_MA" in str(err.value)


def test_size_mismatch_names_both_files_and_sizes(tmp_path):
    root = make_idrid(tmp_path)
    mask = root / "A. Segmentation" / "2. All Segmentation Groundtruths" / "a. Training Set" / "3. Hard Exudates"
    write_mask(mask / "IDRiD_02_EX.tif", np.zeros((30, 39), dtype=bool), rgb=True)
    with pytest.raises(ValueError) as err:
        parse_idrid(root)
    message = str(err.value)
    assert "IDRiD_02.jpg is 40 x 30" in message and "IDRiD_02_EX.tif is 39 x 30" in message


def test_image_size_honours_exif_orientation(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: decoded as 30 wide, 40 high
    Image.new("RGB", SIZE).save(path, exif=exif)
    assert image_size(path) == (30, 40)


# --------------------------------------------------------------------------- DDR


@pytest.mark.parametrize("wrap", [True, False])
def test_ddr_layout(tmp_path, wrap):
    root = make_ddr(tmp_path, {"train": 3, "valid": 2, "test": 1})
    records = parse_ddr(root if wrap else root / "lesion_segmentation")
    assert [r.official_split for r in records] == ["train"] * 3 + ["valid"] * 2 + ["test"]
    assert all(r.masks["OD"] is None and r.source == "ddr" for r in records)
    for index, record in enumerate(records):
        assert record.image.stem == f"ddr_{index:03d}"
        for lesion in ("EX", "HE", "MA", "SE"):
            assert record.masks[lesion].name == f"ddr_{index:03d}.tif"
            assert read_mask(record.masks[lesion]).any() == ddr_present(index, lesion)


def test_ddr_accepts_partial_splits_but_not_none(tmp_path):
    root = make_ddr(tmp_path, {"train": 2})
    assert len(parse_ddr(root, source="synthetic")) == 2
    assert parse_ddr(root, source="synthetic")[0].source == "synthetic"
    with pytest.raises(FileNotFoundError, match="lesion_segmentation"):
        parse_ddr(tmp_path / "lesion_segmentation" / "train")


def test_ddr_missing_label_folder_is_named(tmp_path):
    root = make_ddr(tmp_path)
    shutil.rmtree(root / "lesion_segmentation" / "valid" / "label" / "MA")
    with pytest.raises(FileNotFoundError, match=r"valid/label/MA"):
        parse_ddr(root)


def test_ddr_photo_without_mask_and_mask_without_photo(tmp_path):
    root = make_ddr(tmp_path)
    base = root / "lesion_segmentation" / "train"
    (base / "label" / "SE" / "ddr_001.tif").unlink()
    write_mask(base / "label" / "HE" / "stray.tif", np.zeros(SIZE[::-1], dtype=bool))
    with pytest.raises(ValueError) as err:
        parse_ddr(root)
    message = str(err.value)
    assert "2 problem(s)" in message
    assert f"photo without its mask(s): {base / 'image' / 'ddr_001.jpg'}" in message
    assert str(base / "label" / "SE" / "ddr_001.tif") in message
    assert f"mask without its photo: {base / 'label' / 'HE' / 'stray.tif'}" in message


def test_ddr_reads_the_synthetic_generator_output(tmp_path):
    from training.synthetic import write_dataset

    write_dataset(tmp_path, n=2, seed=1, size=64, splits={"train": 0.5, "valid": 0.5})
    records = parse_ddr(tmp_path, source="synthetic")
    assert [r.official_split for r in records] == ["train", "valid"]
    assert all(r.masks[c] is not None for r in records for c in ("EX", "HE", "MA", "SE"))


# --------------------------------------------------------------------------- TJDR


@pytest.mark.parametrize("palette_mode", [False, True], ids=["rgb", "labelme-palette"])
def test_tjdr_labels_convert_to_exact_masks(tmp_path, palette_mode):
    root = make_tjdr(tmp_path / "tjdr", {"train": 3, "test": 2}, palette_mode=palette_mode)
    records = parse_tjdr(root, tmp_path / "masks")
    assert [r.official_split for r in records] == ["train"] * 3 + ["test"] * 2
    for index, record in enumerate(records):
        _, expected = tjdr_label(index)
        for lesion, mask in expected.items():
            path = record.masks[lesion]
            if mask.any():
                assert path == tmp_path / "masks" / record.official_split / lesion / f"tjdr_{index:03d}.png"
                assert np.array_equal(read_mask(path), mask)
            else:
                assert path is None
        assert record.masks["OD"] is None


def test_tjdr_stale_mask_is_removed_when_a_lesion_disappears(tmp_path):
    root = make_tjdr(tmp_path / "tjdr", {"train": 1, "test": 1})
    stale = tmp_path / "masks" / "train" / "EX" / "tjdr_000.png"  # image 0 has no EX
    write_mask(stale, np.ones(SIZE[::-1], dtype=bool))
    records = parse_tjdr(root, tmp_path / "masks")
    assert records[0].masks["EX"] is None and not stale.exists()


def test_tjdr_unknown_colours_are_listed_with_counts(tmp_path):
    label, _ = tjdr_label(1)
    label[0, :3] = (255, 255, 255)
    label[1, :2] = (1, 2, 3)
    path = tmp_path / "label.png"
    Image.fromarray(label).save(path)
    with pytest.raises(ValueError) as err:
        decode_tjdr_label(path, DEFAULT_TJDR_PALETTE, tolerance=(0, 0))  # exact colours only
    message = str(err.value)
    assert str(path) in message and "2 colour(s) not in the TJDR palette" in message
    assert "(255, 255, 255): 3 px" in message and "(1, 2, 3): 2 px" in message
    # With the default tolerance (1, 2, 3) is background; white is still far from every colour.
    with pytest.raises(ValueError, match=r"1 colour\(s\) not in the TJDR palette: \(255, 255, 255\): 3 px"):
        decode_tjdr_label(path, DEFAULT_TJDR_PALETTE)


def test_tjdr_near_palette_colours_are_snapped_and_counted(tmp_path):
    """Anti-aliased / re-encoded edges: within +-10 of a 0 channel and +-40 of a 128 one, a pixel
    joins that colour; the count is reported; the masks equal the clean label's plus those pixels."""
    clean, expected = tjdr_label(1)
    noisy = clean.copy()
    ex = np.argwhere(expected["EX"])[:5]
    for y, x in ex:
        noisy[y, x] = (128 + 35, 9, 0)  # still EX (128, 0, 0)
    se = np.argwhere(expected["SE"])[:3]
    for y, x in se:
        noisy[y, x] = (6, 10, 128 - 40)  # still SE (0, 0, 128)
    bg = np.argwhere(~np.any(list(expected.values()), axis=0))[:4]
    for y, x in bg[:2]:
        noisy[y, x] = (128 - 30, 128 - 30, 0)  # MA (128, 128, 0): a background pixel relabelled by the file
    for y, x in bg[2:]:
        noisy[y, x] = (8, 8, 8)  # background
    path = tmp_path / "noisy.png"
    Image.fromarray(noisy).save(path)
    masks, snapped = decode_tjdr_label(path, DEFAULT_TJDR_PALETTE)
    assert snapped == 5 + 3 + 4
    assert np.array_equal(masks["EX"], expected["EX"]) and np.array_equal(masks["SE"], expected["SE"])
    assert not masks["HE"].any()
    ma = expected["MA"].copy()
    ma[tuple(bg[:2].T)] = True
    assert np.array_equal(masks["MA"], ma)
    noisy[0, 0] = (128 + 41, 0, 0)  # one past the tolerance: an error, as before
    Image.fromarray(noisy).save(path)
    with pytest.raises(ValueError, match=r"\(169, 0, 0\): 1 px"):
        decode_tjdr_label(path, DEFAULT_TJDR_PALETTE)


def test_prepare_reports_snapped_pixels_per_file(tmp_path, capsys):
    from training.prepare import main as prepare_main

    root = make_tjdr(tmp_path / "tjdr", {"train": 2, "test": 1})
    label = root / "train" / "label" / "tjdr_001.png"
    array = np.asarray(Image.open(label).convert("RGB")).copy()
    array[0, :7] = (9, 9, 9)
    Image.fromarray(array).save(label)
    out = tmp_path / "m.csv"
    assert prepare_main(["--tjdr", str(root), "--out", str(out)]) == 0
    assert "snapped 7 off-palette pixel(s) to the palette in 1 of 3 label files" in capsys.readouterr().err
    report = (tmp_path / "tjdr_masks" / "snapped.csv").read_text().splitlines()
    assert report[0] == "label,snapped_pixels" and f"{label},7" in report and len(report) == 4
    with pytest.raises(ValueError, match=r"tjdr_001\.png.*\(9, 9, 9\): 7 px"):
        prepare_main(["--tjdr", str(root), "--out", str(out), "--tjdr-tolerance", "0,0"])
    with pytest.raises(SystemExit):
        prepare_main(["--tjdr", str(root), "--out", str(out), "--tjdr-tolerance", "ten"])


def test_tjdr_bad_label_is_reported_by_parse(tmp_path):
    root = make_tjdr(tmp_path / "tjdr", {"train": 2, "test": 1})
    label = root / "train" / "label" / "tjdr_001.png"
    array = np.asarray(Image.open(label).convert("RGB")).copy()
    array[0, 0] = (60, 200, 60)  # beyond the tolerance of every palette colour
    Image.fromarray(array).save(label)
    with pytest.raises(ValueError, match=r"tjdr_001\.png.*\(60, 200, 60\): 1 px"):
        parse_tjdr(root, tmp_path / "masks")


def test_tjdr_photo_without_label(tmp_path):
    root = make_tjdr(tmp_path / "tjdr", {"train": 2, "test": 1})
    (root / "test" / "label" / "tjdr_002.png").unlink()
    with pytest.raises(ValueError, match=r"photo without its label: .*tjdr_002\.jpg"):
        parse_tjdr(root, tmp_path / "masks")


def test_tjdr_palette_from_json(tmp_path):
    path = tmp_path / "palette.json"
    path.write_text(json.dumps({"background": [0, 0, 0], "EX": "#ff0000", "HE": [[0, 255, 0], [0, 200, 0]]}))
    assert load_tjdr_palette(path) == {(0, 0, 0): None, (255, 0, 0): "EX", (0, 255, 0): "HE", (0, 200, 0): "HE"}
    label = np.zeros((2, 3, 3), dtype=np.uint8)
    label[0, 0] = (255, 0, 0)
    label[1, :2] = (0, 200, 0)
    Image.fromarray(label).save(tmp_path / "l.png")
    masks, _ = decode_tjdr_label(tmp_path / "l.png", load_tjdr_palette(path))
    assert set(masks) == {"EX", "HE"}
    assert masks["EX"].sum() == 1 and masks["HE"].sum() == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"XX": [1, 2, 3]}, "unknown key 'XX'"),
        ({"EX": [1, 2, 300]}, "is not a colour"),
        ({"EX": "#12345"}, "is not a colour"),
        ({"EX": [1, 2, 3], "HE": [1, 2, 3]}, "given to both EX and HE"),
        ([1, 2, 3], "expected a JSON object"),
    ],
)
def test_tjdr_palette_errors(tmp_path, content, message):
    path = tmp_path / "palette.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        load_tjdr_palette(path)


def test_tjdr_palette_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="palette file"):
        load_tjdr_palette(tmp_path / "none.json")
