"""training.prepare: the split, the manifest round trip and the command line."""

from __future__ import annotations

import csv
import shutil
from collections import Counter

import pytest

from training.datasets import parse_ddr, parse_idrid
from training.prepare import (
    COLUMNS,
    assign_splits,
    lesion_presence,
    main,
    read_manifest,
    summary_table,
    write_manifest,
)

from .fixtures_datasets import ddr_present, make_ddr, make_idrid, make_tjdr

PATTERNS = [
    (True, True, True, False), (True, True, True, True), (False, True, True, False), (True, False, False, False),
]  # fmt: skip


def published_keys() -> tuple[list[str], list[str], list[tuple[bool, ...]]]:
    """The published image counts (docs/training.md#data) with lesion patterns cycling through PATTERNS."""
    counts = [("idrid", "train", 54), ("idrid", "test", 27), ("ddr", "train", 383), ("ddr", "valid", 149),
              ("ddr", "test", 225), ("tjdr", "train", 448), ("tjdr", "test", 113)]  # fmt: skip
    sources, officials, patterns = [], [], []
    for source, official, n in counts:
        for i in range(n):
            sources.append(source)
            officials.append(official)
            patterns.append(PATTERNS[i % len(PATTERNS)])
    return sources, officials, patterns


def test_published_split_gives_827_207_365():
    sources, officials, patterns = published_keys()
    splits = assign_splits(sources, officials, patterns)
    assert Counter(splits) == {"train": 827, "val": 207, "test": 365}
    assert all((s == "test") == (o == "test") for s, o in zip(splits, officials))
    per_source = Counter((src, s) for src, s in zip(sources, splits))
    # stratified by source: 20 % of each pool, give or take the rounding of one image
    for source, pool in (("idrid", 54), ("ddr", 383 + 149), ("tjdr", 448)):
        assert abs(per_source[source, "val"] - 0.2 * pool) <= 1, (source, per_source[source, "val"])


def test_split_is_stratified_by_lesion_pattern():
    patterns = [PATTERNS[0]] * 50 + [PATTERNS[1]] * 25 + [PATTERNS[2]] * 25
    splits = assign_splits(["ddr"] * 100, ["train"] * 100, patterns)
    val = Counter(p for p, s in zip(patterns, splits) if s == "val")
    assert val == {PATTERNS[0]: 10, PATTERNS[1]: 5, PATTERNS[2]: 5}


def test_small_strata_fall_back_to_the_source():
    # one image with a unique pattern, two with another: too small for their own stratum
    patterns = [PATTERNS[0]] * 20 + [PATTERNS[3]] + [PATTERNS[2]] * 2 + [PATTERNS[1]] * 7
    splits = assign_splits(["idrid"] * 30, ["train"] * 30, patterns)
    assert Counter(splits) == {"train": 24, "val": 6}


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_tiny_pools_still_split(n):
    sources = ["idrid"] * n + ["tjdr"]
    splits = assign_splits(sources, ["train"] * (n + 1), [PATTERNS[0]] * (n + 1))
    assert len(splits) == n + 1 and set(splits) <= {"train", "val"}
    assert splits.count("train") >= 1


def test_split_is_reproducible_and_seeded():
    sources, officials, patterns = published_keys()
    first = assign_splits(sources, officials, patterns, seed=42)
    assert first == assign_splits(sources, officials, patterns, seed=42)
    other = assign_splits(sources, officials, patterns, seed=7)
    assert Counter(other) == Counter(first) and other != first


def test_random_split_takes_test_first_stratified_by_source():
    sources, officials, patterns = published_keys()
    splits = assign_splits(sources, officials, patterns, mode="random")
    assert Counter(splits) == {"test": 364, "val": 207, "train": 828}  # ceil(.26 * 1399), ceil(.2 * 1035)
    assert any(o == "test" and s != "test" for o, s in zip(officials, splits))  # official splits ignored
    for source, total in Counter(sources).items():
        tested = sum(1 for src, s in zip(sources, splits) if src == source and s == "test")
        assert abs(tested - 0.26 * total) <= 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "kfold"}, "choose one of published, random"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"test_fraction": 0}, "test_fraction"),
    ],  # fmt: skip
)
def test_split_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        assign_splits(["ddr"], ["train"], [PATTERNS[0]], **kwargs)


def test_lesion_presence_reads_mask_content(tmp_path):
    records = parse_ddr(make_ddr(tmp_path / "ddr", {"train": 5}))
    assert lesion_presence(records, workers=2) == [
        tuple(ddr_present(i, c) for c in ("EX", "HE", "MA", "SE")) for i in range(5)
    ]
    idrid = parse_idrid(make_idrid(tmp_path / "idrid", n_train=2, n_test=0))
    assert lesion_presence(idrid) == [(True, True, True, False), (True, True, True, True)]  # SE file only for even


def test_summary_table_counts_and_alignment():
    table = summary_table(
        ["train", "train", "val", "test"], ["idrid", "ddr", "ddr", "ddr"],
        [PATTERNS[0], PATTERNS[1], PATTERNS[2], PATTERNS[3]],
    )  # fmt: skip
    lines = table.splitlines()
    assert lines[0].split() == ["split", "source", "images", "EX", "HE", "MA", "SE"]
    assert [line.split() for line in lines[1:]] == [
        ["train", "idrid", "1", "1", "1", "1", "0"],
        ["train", "ddr", "1", "1", "1", "1", "1"],
        ["train", "all", "2", "2", "2", "2", "1"],
        ["val", "ddr", "1", "0", "1", "1", "0"],
        ["val", "all", "1", "0", "1", "1", "0"],
        ["test", "ddr", "1", "1", "0", "0", "0"],
        ["test", "all", "1", "1", "0", "0", "0"],
    ]
    assert len({len(line) for line in lines}) == 1  # aligned columns


def test_cli_end_to_end(tmp_path, capsys):
    data = tmp_path / "data"
    make_idrid(data / "idrid", n_train=6, n_test=2)
    make_ddr(data / "ddr", {"train": 6, "valid": 4, "test": 3})
    make_tjdr(data / "tjdr", {"train": 5, "test": 2})
    out = tmp_path / "run" / "manifest.csv"
    args = ["--idrid", str(data / "idrid"), "--ddr", str(data / "ddr"), "--tjdr", str(data / "tjdr"), "--out", str(out)]
    assert main(args) == 0

    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == ["split", "source", "images", "EX", "HE", "MA", "SE"]
    assert "wrote 28 images" in printed
    assert sorted(p.name for p in out.parent.iterdir()) == ["manifest.csv", "tjdr_masks"]  # no temp file left

    with out.open(newline="") as fh:
        raw = list(csv.reader(fh))
    assert tuple(raw[0]) == COLUMNS
    by_source = Counter((r[0], r[1]) for r in raw[1:])
    assert by_source["idrid", "test"] == 2 and by_source["ddr", "test"] == 3 and by_source["tjdr", "test"] == 2
    assert sum(n for (_, split), n in by_source.items() if split == "val") == 5  # ceil(0.2 * 21)
    tjdr_rows = [r for r in raw[1:] if r[0] == "tjdr"]
    assert all(not r[3].startswith("/") for r in tjdr_rows if r[3])  # masks inside the run folder: relative
    assert all(r[2].startswith(str(data)) for r in tjdr_rows)  # photos outside it: absolute
    idrid_rows = [r for r in raw[1:] if r[0] == "idrid"]
    assert sum(1 for r in idrid_rows if r[6] == "") == 4  # SE absent for odd image numbers

    rows = read_manifest(out)
    assert len(rows) == 28
    for row in rows:
        assert row["image"].is_absolute() and row["image"].is_file()
        for key in ("EX", "HE", "MA", "SE", "OD"):
            assert row[key] is None or (row[key].is_absolute() and row[key].is_file())


def test_manifest_with_relative_paths_survives_a_move(tmp_path):
    root = tmp_path / "project"
    records = parse_ddr(make_ddr(root / "ddr", {"train": 2}))
    rows = [{"source": r.source, "split": "train", "image": r.image, **r.masks} for r in records]
    write_manifest(root / "manifest.csv", rows)
    assert (root / "manifest.csv").read_text().splitlines()[1].startswith("ddr,train,ddr/lesion_segmentation/")
    shutil.move(root, tmp_path / "moved")
    moved = read_manifest(tmp_path / "moved" / "manifest.csv")
    assert moved[0]["image"] == tmp_path / "moved" / "ddr" / "lesion_segmentation" / "train" / "image" / "ddr_000.jpg"
    assert moved[0]["OD"] is None


def test_read_manifest_errors(tmp_path):
    path = tmp_path / "m.csv"
    with pytest.raises(FileNotFoundError, match="training.prepare"):
        read_manifest(path)
    path.write_text("source,split,image\n")
    with pytest.raises(ValueError, match="expected source, split, image, EX, HE, MA, SE, OD"):
        read_manifest(path)
    path.write_text(",".join(COLUMNS) + "\nddr,training,a.jpg,,,,,\n")
    with pytest.raises(ValueError, match="line 2: split 'training'"):
        read_manifest(path)
    path.write_text(",".join(COLUMNS) + "\nddr,train,a.jpg,b.tif,,,,\n")
    with pytest.raises(FileNotFoundError, match=r"2 file\(s\) missing"):
        read_manifest(path)
    assert read_manifest(path, check_files=False)[0]["EX"] == tmp_path / "b.tif"


def test_cli_needs_a_dataset(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", "m.csv"])
    assert exit_info.value.code == 2
    assert "at least one dataset" in capsys.readouterr().err


def test_idrid_reading_labels_reach_the_manifest(tmp_path):
    """IDRiD's disc and fovea markups and DME grades, in the release's exact layout, become the
    manifest's label columns; the photos carry no lesion masks."""
    from training.prepare import main as prepare_main

    from .fixtures_datasets import make_idrid_reading

    root = make_idrid_reading(tmp_path / "IDRiD")
    out = tmp_path / "reading.csv"
    assert prepare_main(["--idrid-reading", str(root), "--out", str(out)]) == 0
    rows = {r["image"].stem: r for r in read_manifest(out)}
    assert sorted(rows) == [f"IDRiD_{k:03d}" for k in range(1, 6)]
    for k in range(1, 6):
        r = rows[f"IDRiD_{k:03d}"]
        assert (r["disc_x"], r["disc_y"], r["fovea_x"], r["fovea_y"]) == (10 + k, 20 + k, 30 + k, 25 + k)
        assert r["dme_grade"] == k % 3 and r["disc_diameter"] is None
        assert all(r[c] is None for c in ("EX", "HE", "MA", "SE", "OD"))
    assert {rows[f"IDRiD_{k:03d}"]["split"] for k in (4, 5)} == {"test"}  # the official test set
    bad = (
        root
        / "C. Localization"
        / "2. Groundtruths"
        / "2. Fovea Center Location"
        / "IDRiD_Fovea_Center_Testing Set_Markups.csv"
    )
    bad.write_text("Image No,X- Coordinate,Y - Coordinate\nIDRiD_004,abc,3\nIDRiD_999,1,2\n")
    with pytest.raises(ValueError) as err:
        prepare_main(["--idrid-reading", str(root), "--out", str(out)])
    assert "IDRiD_004: coordinates 'abc', '3' are not numbers" in str(err.value)
    assert "'IDRiD_999' is not a photo in b. Testing Set" in str(err.value)


def test_idrid_normals_join_as_lesion_free_photos_without_moving_other_splits(tmp_path):
    """The grading part's photos graded retinopathy 0 and macular-edema risk 0 join the manifest
    with every lesion known absent, split on their own; a grading photo that is byte for byte a
    segmentation photo is left out; the segmentation photos keep the split they had."""
    from training.prepare import main as prepare_main

    from .fixtures_datasets import write_photo

    root = make_idrid(tmp_path / "IDRiD", n_train=6, n_test=2)
    grading = root / "B. Disease Grading"
    photos = grading / "1. Original Images" / "a. Training Set"
    photos.mkdir(parents=True)
    rows = ["Image name,Retinopathy grade,Risk of macular edema ,,"]
    for k, grades in enumerate(["0,0", "0,0", "2,1", "0,1", "0,0", "0,0", "0,0"], start=1):
        write_photo(photos / f"IDRiD_{k:03d}.jpg", seed=100 + k)
        rows.append(f"IDRiD_{k:03d},{grades},,")
    a_photo = root / "A. Segmentation" / "1. Original Images" / "a. Training Set" / "IDRiD_01.jpg"
    shutil.copyfile(a_photo, photos / "IDRiD_007.jpg")  # the same photo in both parts
    (grading / "2. Groundtruths").mkdir()
    (grading / "2. Groundtruths" / "a. IDRiD_Disease Grading_Training Labels.csv").write_text("\n".join(rows) + "\n")

    plain, with_normals = tmp_path / "plain.csv", tmp_path / "normals.csv"
    assert prepare_main(["--idrid", str(root), "--out", str(plain), "--val-fraction", "0.34"]) == 0
    args = ["--idrid", str(root), "--idrid-normals", str(root), "--out", str(with_normals), "--val-fraction", "0.34"]
    assert prepare_main(args) == 0
    before = {r["image"].name: r["split"] for r in read_manifest(plain)}
    after = {r["image"].name: r for r in read_manifest(with_normals)}
    assert {name: after[name]["split"] for name in before} == before
    normals = {name: r for name, r in after.items() if name not in before}
    assert sorted(normals) == ["IDRiD_001.jpg", "IDRiD_002.jpg", "IDRiD_005.jpg", "IDRiD_006.jpg"]  # 0/0, not a copy
    assert all(r[c] is None for r in normals.values() for c in ("EX", "HE", "MA", "SE"))
    assert Counter(r["split"] for r in normals.values()) == {"train": 3, "val": 1}  # round(4 x 0.34)
    assert prepare_main(args[:-2] + ["--normals", "2", "--out", str(tmp_path / "two.csv")]) == 0
    assert len(read_manifest(tmp_path / "two.csv")) == len(before) + 2


def test_idrid_test_normals_stand_alone_in_the_test_split(tmp_path, capsys):
    """--normals-from test: the grading part's test photos graded 0 and 0, every one in the test
    split (scored, never trained on), with no other dataset needed; it needs --idrid-normals."""
    from training.prepare import main as prepare_main

    from .fixtures_datasets import write_photo

    grading = tmp_path / "IDRiD" / "B. Disease Grading"
    photos = grading / "1. Original Images" / "b. Testing Set"
    photos.mkdir(parents=True)
    rows = ["Image name,Retinopathy grade,Risk of macular edema "]
    for k, grades in enumerate(["0,0", "1,0", "0,0", "0,2", "0,0"], start=1):
        write_photo(photos / f"IDRiD_{k:03d}.jpg", seed=200 + k)
        rows.append(f"IDRiD_{k:03d},{grades}")
    (grading / "2. Groundtruths").mkdir()
    (grading / "2. Groundtruths" / "b. IDRiD_Disease Grading_Testing Labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "test_normals.csv"
    args = ["--idrid-normals", str(tmp_path / "IDRiD"), "--normals-from", "test", "--out", str(out)]
    assert prepare_main(args) == 0
    found = {r["image"].name: r for r in read_manifest(out)}
    assert sorted(found) == ["IDRiD_001.jpg", "IDRiD_003.jpg", "IDRiD_005.jpg"]
    assert {r["split"] for r in found.values()} == {"test"}
    assert all(r[c] is None for r in found.values() for c in ("EX", "HE", "MA", "SE"))
    with pytest.raises(SystemExit):
        prepare_main(["--normals-from", "test", "--synthetic", str(tmp_path), "--out", str(out)])
    assert "--normals-from needs --idrid-normals" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):  # the training set is not there: said, not skipped
        prepare_main(args[:2] + ["--out", str(out)])
