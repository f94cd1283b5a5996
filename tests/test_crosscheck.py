"""training.crosscheck: the second, independent lesion generator."""

from __future__ import annotations

import numpy as np
import pytest

from training import crosscheck
from training.prepare import main as prepare_main
from training.prepare import read_manifest


def test_render_is_deterministic_with_disjoint_visible_lesions():
    image, masks = crosscheck.render(11)
    again, masks_again = crosscheck.render(11)
    assert image.dtype == np.uint8 and image.shape == (1024, 1024, 3) and masks.shape == (4, 1024, 1024)
    assert np.array_equal(image, again) and np.array_equal(masks, masks_again)
    assert masks.sum(axis=0).max() <= 1  # one class per pixel
    plain, _ = crosscheck.render(12)
    assert not np.array_equal(image, plain)
    # every labelled lesion changed the photo: compare with the same background, no lesions
    rng = np.random.default_rng([11, 2718])
    background, fov, _ = crosscheck._background(rng)
    background = np.clip(background * 255 + 0.5, 0, 255)
    for c in range(4):
        if masks[c].any():
            diff = np.abs(image.astype(np.float32) - background)[masks[c]].mean()
            assert diff > 15, (crosscheck.LESIONS[c], diff)
            assert fov[masks[c]].all()


def test_written_layout_is_read_by_prepare(tmp_path):
    crosscheck.write(tmp_path / "xc", n=2, seed=3)
    assert prepare_main(["--synthetic", str(tmp_path / "xc"), "--out", str(tmp_path / "m.csv")]) == 0
    rows = read_manifest(tmp_path / "m.csv")
    assert [r["split"] for r in rows] == ["test", "test"]
    assert all(r[c] for r in rows for c in crosscheck.LESIONS)


def test_ellipse_patch_matches_the_canvas_and_clips_at_every_edge():
    import cv2

    inside = crosscheck._ellipse(64, 64, 30.3, 20.7, 6.0, 3.5, 0.4)
    canvas = np.zeros((256, 256), np.uint8)
    cv2.ellipse(canvas, (121, 83), (24, 14), float(np.degrees(0.4)), 0, 360, 255, -1, cv2.LINE_AA)
    whole = cv2.resize(canvas, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    assert np.abs(inside - whole).max() < 0.02 and inside.sum() == pytest.approx(np.pi * 6 * 3.5, rel=0.1)
    for cx, cy in ((-40.0, 30.0), (100.0, 30.0), (30.0, -40.0), (30.0, 100.0)):  # wholly outside
        assert crosscheck._ellipse(64, 64, cx, cy, 5.0, 5.0, 0.0).sum() == 0
    edge = crosscheck._ellipse(64, 64, -2.0, 30.0, 5.0, 5.0, 0.0)  # half on the canvas
    assert 0 < edge.sum() < np.pi * 25 and edge[:, 10:].sum() == 0
