"""training.crosscheck: the second, independent lesion generator."""

from __future__ import annotations

import numpy as np

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
