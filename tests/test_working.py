"""The page's working grid (hydralanet.inference.working) and what is read on it, against the photo's own pixels."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from hydralanet import CLASSES, lesion_statistics
from hydralanet.inference.segment import SquarePrediction
from hydralanet.inference.working import working_photo, working_side
from hydralanet.preprocessing import FovGeometry, fov_geometry, fov_mask
from hydralanet.reading.grading import DME_EXUDATE_MIN_COUNT
from hydralanet.reading.landmarks import Fovea, Landmarks, OpticDisc
from hydralanet.reading.photo import LESION_EXCLUSION_P, findings, moved_landmarks, read_photo, read_working
from hydralanet.reading.zones import ETDRS_ZONES

THRESHOLDS = dict.fromkeys(CLASSES, 0.5)


def wide_photo(h: int = 600, w: int = 900) -> np.ndarray:
    """A round field of view in a wider frame, cut at top and bottom (as a camera's 3:2 frame)."""
    yy, xx = np.mgrid[:h, :w]
    image = np.zeros((h, w, 3), np.uint8)
    image[(yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (0.36 * w) ** 2] = (170, 80, 40)
    return image


def prediction_of(image: np.ndarray, size: int, square: np.ndarray | None = None) -> SquarePrediction:
    fov = fov_mask(image)
    geometry = fov_geometry(fov, size)
    if square is None:
        rng = np.random.default_rng(1)
        square = np.stack([cv2.GaussianBlur(rng.random((size, size), dtype=np.float32), (0, 0), 2) for _ in CLASSES])
        square = np.clip((square - 0.5) * 6 + 0.5, 0, 1).astype(np.float32)  # blobs above and below 0.5
    enhanced = geometry.to_square(image)
    return SquarePrediction.make(square, fov, image, enhanced, geometry, {"clahe": "green"})


def test_region_is_the_full_map_cut_out() -> None:
    rng = np.random.default_rng(0)
    maps = rng.random((2, 128, 128), dtype=np.float32)
    geometry = FovGeometry((600, 900), (0, 600, 126, 774), 648, 24, 0, 128)  # cut at top and bottom: padded
    full = geometry.to_original(maps)
    for top, bottom, left, right in [(0, 600, 0, 900), (10, 74, 100, 164), (500, 600, 700, 900), (0, 50, 0, 120)]:
        region = geometry.region(maps, top, bottom, left, right)
        assert region.shape == (2, bottom - top, right - left)
        assert np.abs(region - full[:, top:bottom, left:right]).max() < 1e-5
    assert not geometry.region(maps, 0, 50, 0, 120).any()  # left of the crop box: 0


def test_masks_in_a_region_are_the_full_masks_cut_out() -> None:
    prediction = prediction_of(wide_photo(), 128)
    full = prediction.masks(THRESHOLDS)
    part = prediction.masks_in(THRESHOLDS, 100, 356, 300, 556)
    assert full[:, 100:356, 300:556].any() and (~full[:, 100:356, 300:556]).any()
    assert np.array_equal(part, full[:, 100:356, 300:556])


@pytest.mark.parametrize(
    ("fov_side", "model_side", "expected"),
    [(3417, 1536, 1536), (1411, 128, 1024), (3417, 512, 1024), (648, 128, 648), (900, 1024, 900)],
)
def test_working_side_is_the_models_square_or_1024_never_finer_than_the_photo(fov_side, model_side, expected) -> None:
    geometry = FovGeometry((fov_side, fov_side), (0, fov_side, 0, fov_side), fov_side, 0, 0, model_side)
    prediction = SquarePrediction(
        np.zeros((4, 1, 1), np.float32), np.zeros(1, np.uint8), np.zeros((1, 1, 3)), None, geometry
    )
    assert working_side(prediction) == expected


def test_statistics_on_the_grid_are_in_the_photos_pixels() -> None:
    image = wide_photo(1200, 1800)
    prediction = prediction_of(image, 256)
    work = working_photo(prediction, side=256)
    assert work.geometry.size == 256 and work.scale == pytest.approx(prediction.geometry.side / 256)
    assert work.probabilities is prediction.square and work.nbytes == work.fov.nbytes  # shared, not copied
    assert work.fov_pixels == int(prediction.fov.sum())
    full = {r["lesion"]: r for r in lesion_statistics(prediction.masks(THRESHOLDS), prediction.fov, THRESHOLDS)}
    grid = {r["lesion"]: r for r in work.statistics(work.masks(THRESHOLDS), THRESHOLDS)}
    for c in CLASSES:
        assert full[c]["pixels"] > 10_000
        assert grid[c]["pixels"] == pytest.approx(full[c]["pixels"], rel=0.03), c
        assert grid[c]["coverage_pct"] == pytest.approx(full[c]["coverage_pct"], rel=0.03), c
        assert grid[c]["largest_px"] == pytest.approx(full[c]["largest_px"], rel=0.05), c


def test_one_working_pixel_shows_on_the_preview_where_it_lies_in_the_photo() -> None:
    image = wide_photo(1200, 1800)
    square = np.zeros((4, 1024, 1024), np.float32)
    square[2, 400, 720] = 1.0  # one microaneurysm pixel on the model's grid, 4 times finer than the preview
    prediction = prediction_of(image, 1024, square)
    work = working_photo(prediction)
    assert work.geometry.size == 1024 and work.preview_size(360) == (360, 240)
    full = prediction.masks(THRESHOLDS)[2]
    ys, xs = np.nonzero(full)
    small = work.to_preview(work.masks(THRESHOLDS), 360)
    assert small.shape == (4, 240, 360) and not small[[0, 1, 3]].any()
    py, px = np.nonzero(small[2])
    q = 360 / 1800
    assert 1 <= len(py) <= 4  # a few preview pixels, not lost in the shrink
    assert abs(py.mean() - ys.mean() * q) <= 1.0 and abs(px.mean() - xs.mean() * q) <= 1.0
    quick = work.preview_masks(THRESHOLDS, 360)  # from each preview pixel's highest probability
    assert quick.shape == small.shape and not quick[[0, 1, 3]].any()
    qy, qx = np.nonzero(quick[2])
    assert len(qy) == 1 and abs(qy[0] - ys.mean() * q) <= 1.0 and abs(qx[0] - xs.mean() * q) <= 1.0


def test_preview_masks_are_the_working_masks_shrunk() -> None:
    """A preview pixel is set exactly when a working pixel starting under it is (thresholds 0 to 1)."""
    prediction = prediction_of(wide_photo(1200, 1800), 1024)
    work = working_photo(prediction)
    masks = work.masks(THRESHOLDS)
    assert masks.any() and (~masks).any()
    side = round(work.geometry.side * 0.2)
    starts = np.floor(np.arange(side) * 1024 / side).astype(int)
    owner = np.searchsorted(starts, np.arange(1024), side="right") - 1  # preview pixel of each working pixel
    for thresholds in (THRESHOLDS, dict.fromkeys(CLASSES, 0.0), dict.fromkeys(CLASSES, 1.0)):
        masks = work.masks(thresholds)
        square = np.zeros((4, side, side), bool)
        cs, ys, xs = np.nonzero(masks)
        square[cs, owner[ys], owner[xs]] = True
        quick = work.preview_masks(thresholds, 360)
        g = work.geometry
        top, left = round((g.box[0] - g.pad_top) * 0.2), round((g.box[2] - g.pad_left) * 0.2)
        inside = quick[:, max(0, top) : top + side, left : left + side]
        assert np.array_equal(inside, square[:, max(0, -top) : max(0, -top) + inside.shape[1]])
        assert not quick[:, :, :left].any() and not quick[:, :, left + side :].any()


def test_moved_landmarks_go_through_the_photo_and_back() -> None:
    a = FovGeometry((600, 900), (0, 600, 126, 774), 648, 24, 0, 512)
    b = dataclasses.replace(a, size=1296 // 2)
    found = Landmarks(
        OpticDisc(100.0, 200.0, 60.0, 0.9, "assumed"),
        Fovea(300.0, 210.0, 0.8),
        "left",
        "image",
        400.0,
        ("the optic disc's size could not be measured: 1 DD is assumed to be 0.11 of the field's diameter (60 px)",),
    )
    photo = moved_landmarks(found, a, None)
    s = 648 / 512
    assert (photo.disc.x, photo.disc.y) == (round(100 * s + 126, 1), round(200 * s - 24, 1))
    assert photo.disc.diameter_px == round(60 * s, 1) and photo.fov_diameter_px == pytest.approx(400 * s)
    assert photo.notes[0].endswith(f"({60 * s:.0f} px)")
    back = moved_landmarks(moved_landmarks(photo, None, b), b, None)
    assert back.fovea.x == pytest.approx(photo.fovea.x, abs=0.1) and back.disc.y == pytest.approx(photo.disc.y, abs=0.1)


def test_the_reading_on_the_grid_finds_what_the_full_reading_finds(retina: np.ndarray) -> None:
    """The CC0 sample photo with a lesion model's made-up probabilities: disc, fovea, quality and
    DME grade as at full resolution; zone pixels in the photo's pixels."""
    square = np.zeros((4, 512, 512), np.float32)
    # hard exudates, one near the fovea; as many as the DME rule needs to count sure ones
    spots = [(200, 300), (260, 240), (330, 150), (120, 200), (150, 330), (380, 260), (220, 400), (300, 330)]
    assert len(spots) >= DME_EXUDATE_MIN_COUNT
    for y, x in spots:
        cv2.circle(square[0], (x, y), 4, 0.97, -1)  # above DME_EXUDATE_PEAK: counted
    prediction = prediction_of(retina, 512, square)
    full = prediction.full()
    masks = full.masks(THRESHOLDS)
    whole = findings(read_photo(retina, full.fov, probabilities=full.probabilities), masks)
    work = working_photo(prediction, side=512)
    lesions = full.probabilities.max(axis=0) >= LESION_EXCLUSION_P
    grid = findings(read_working(work, retina, full.fov, lesions=lesions), work.masks(THRESHOLDS))
    for key in ("optic_disc", "fovea", "eye", "quality", "scale", "dme_risk"):  # the photo's own
        assert grid[key] == whole[key], key
    assert whole["optic_disc"]["reliable"] and whole["dme_risk"] == 2

    def zone_pixels(found: dict) -> dict:
        return {(r["lesion"], r["zone"]): r["pixels"] for r in found["zones"]}

    a, b = zone_pixels(whole), zone_pixels(grid)
    assert a.keys() == b.keys() and sum(a.values()) > 2_000  # exudates of ~350 photo pixels, some in two lists
    assert {k for k, v in a.items() if v} == {k for k, v in b.items() if v}
    for zone in ("within_1dd", None):  # a lesion's pixels within 1 DD; all of them, over the nine subfields + outside
        total_a = sum(v for (c, z), v in a.items() if c == "EX" and (z == zone or (zone is None and z in ETDRS_ZONES)))
        total_b = sum(v for (c, z), v in b.items() if c == "EX" and (z == zone or (zone is None and z in ETDRS_ZONES)))
        assert total_b == pytest.approx(total_a, rel=0.05), zone
