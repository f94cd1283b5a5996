"""The quality checks about the macula: focus, exposure and the field around the fovea, on two
real IDRiD photos (tests/fixtures/idrid_landmarks) whose fovea lies off the field's centre."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from hydralanet.io.images import read_image
from hydralanet.preprocessing import fov_mask
from hydralanet.reading.landmarks import Fovea, Landmarks, OpticDisc
from hydralanet.reading.photo import macula_of
from hydralanet.reading.quality import FOVEA_NOT_RELIABLE, MACULA_LIMITS, _broad_blur, assess_quality
from training.quality_check import macula_variants

FIXTURES = Path(__file__).parent / "fixtures" / "idrid_landmarks"


def _photos():
    with (FIXTURES / "centres.csv").open() as fh:
        for row in csv.DictReader(fh):
            image = read_image(FIXTURES / f"{row['image']}.jpg")
            yield row["image"], image, (float(row["fovea_x"]), float(row["fovea_y"]), float(row["disc_diameter_px"]))


PHOTOS = list(_photos())


def _macula_reasons(quality) -> list[str]:
    return [r for r in quality.reasons if r.startswith("the macula")]


@pytest.mark.parametrize("name,image,macula", PHOTOS, ids=[p[0] for p in PHOTOS])
def test_clean_macula_passes_and_is_measured(name, image, macula):
    q = assess_quality(image, fov_mask(image), macula)
    assert _macula_reasons(q) == []
    assert q.verdict == "good"
    assert q.measures["macula_in_field"] > 0.95
    for key in MACULA_LIMITS:
        assert key in q.to_dict()


@pytest.mark.parametrize("name,image,macula", PHOTOS, ids=[p[0] for p in PHOTOS])
def test_blurred_or_shaded_macula_is_flagged(name, image, macula):
    variants = {n: picture for n, picture, _ in macula_variants(image, *macula)}
    blurred_image = variants["macula blurred (sigma 0.04 DD)"]
    blurred = assess_quality(blurred_image, fov_mask(blurred_image), macula)
    assert [r.split(":")[0] for r in _macula_reasons(blurred)] == ["the macula is out of focus"]
    assert blurred.verdict == "usable"
    shaded_image = variants["macula shaded (70 % darker at the fovea)"]
    shaded = assess_quality(shaded_image, fov_mask(shaded_image), macula)
    assert "the macula is in shadow" in [r.split(":")[0] for r in _macula_reasons(shaded)]
    assert shaded.verdict != "good"
    # The whole-field checks alone miss the blur: the macula is a small part of the field.
    assert assess_quality(blurred_image, fov_mask(blurred_image)).verdict == "good"


def test_the_checks_look_where_the_fovea_is():
    """The same blur about a point mirrored across the field's centre is not the macula's."""
    _, image, (x, y, dd) = PHOTOS[0]
    fov = fov_mask(image)
    ys, xs = np.nonzero(fov)
    cx, cy = xs.mean(), ys.mean()
    elsewhere = next(p for n, p, _ in macula_variants(image, 2 * cx - x, 2 * cy - y, dd) if "0.04" in n)
    assert _macula_reasons(assess_quality(elsewhere, fov, (x, y, dd))) == []
    assert _macula_reasons(assess_quality(elsewhere, fov, (2 * cx - x, 2 * cy - y, dd))) != []


def test_macula_outside_the_field_and_fovea_not_found():
    _, image, (x, y, dd) = PHOTOS[0]
    fov = fov_mask(image)
    ys, xs = np.nonzero(fov)
    edge = (float(xs.min()), float(ys[xs == xs.min()].mean()), dd)  # the field's left edge
    q = assess_quality(image, fov, edge)
    assert q.measures["macula_in_field"] < 0.6
    assert "the macula is partly outside the field of view" in [r.split(":")[0] for r in q.reasons]
    unreliable = assess_quality(image, fov, None)
    assert unreliable.reasons == [FOVEA_NOT_RELIABLE]
    assert unreliable.verdict == "usable"
    assert "macula_exposure" not in unreliable.measures


def test_macula_of_landmarks():
    disc = OpticDisc(300.0, 200.0, 80.0, 0.9)
    fovea = Fovea(100.0, 210.0, 0.9)
    assert macula_of(Landmarks(disc, fovea, "left", "image", 700.0)) == (100.0, 210.0, 80.0)
    assert macula_of(Landmarks(None, fovea, None, None, 700.0)) == pytest.approx((100.0, 210.0, 77.0))
    weak = Fovea(100.0, 210.0, 0.01)
    assert macula_of(Landmarks(disc, weak, "left", "image", 700.0)) is None
    assert macula_of(Landmarks(disc, None, "left", "image", 700.0)) is None


def test_broad_blur_matches_the_full_size_blur():
    """The illumination map is blurred on a smaller copy: within 1 % of the full-size blur."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:512, :512].astype(np.float32)
    values = 60 + 120 * np.exp(-((xx - 150) ** 2 + (yy - 380) ** 2) / 2e4) + rng.normal(0, 20, (512, 512))
    values = values.astype(np.float32)
    full = cv2.GaussianBlur(values, (0, 0), 40.0)
    assert np.abs(_broad_blur(values, 40.0) - full).max() < 0.01 * full.max()
    small = np.ascontiguousarray(values[:40, :40])  # too small for a smaller copy: the full blur itself
    assert np.array_equal(_broad_blur(small, 40.0), cv2.GaussianBlur(small, (0, 0), 40.0))
