"""The band along the field of view's edge where a lesion is not marked (``config.json``
``"edge_margin"``): a share of the field's diameter per lesion, cleared from the probabilities at
the model's square, so every mask, overlay and statistic built on them leaves it out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hydralanet import load_model, predict
from hydralanet.config import CLASSES, CheckpointConfig, PreprocessConfig
from hydralanet.inference.segment import clear_edge, edge_surround, predict_square
from hydralanet.preprocessing import crop_to_fov
from training.calibrate import parse_edge_margin

BUNDLED = Path(__file__).resolve().parents[1] / "weights"


def test_config_round_trip_and_checks() -> None:
    assert "edge_margin" not in CheckpointConfig().to_dict()
    config = CheckpointConfig(edge_margin={"SE": 0.01, "EX": 0.02, "HE": 0})
    assert config.edge_margin == {"EX": 0.02, "SE": 0.01}  # class order; a share of 0 is no band
    assert list(config.edge_margin) == ["EX", "SE"]
    assert CheckpointConfig.from_dict(config.to_dict()).edge_margin == config.edge_margin
    assert CheckpointConfig(edge_margin={"EX": 0.0}).edge_margin is None
    with pytest.raises(ValueError, match="unknown lesion 'OD' in edge_margin"):
        CheckpointConfig(edge_margin={"OD": 0.01})
    with pytest.raises(ValueError, match=r"edge_margin for EX must be a share of the field's diameter in \[0, 0.25\)"):
        CheckpointConfig(edge_margin={"EX": 0.3})
    with pytest.raises(ValueError, match="edge_margin for MA must be a number"):
        CheckpointConfig(edge_margin={"MA": "wide"})
    with pytest.raises(ValueError, match="edge_margin must map lesions"):
        CheckpointConfig(edge_margin=[0.01])
    assert parse_edge_margin("EX=0.012 SE=0.01") == {"EX": 0.012, "SE": 0.01}
    with pytest.raises(ValueError, match="--edge-margin: 'EX' is not LESION=SHARE"):
        parse_edge_margin("EX")
    with pytest.raises(ValueError, match="has a share that is not a number"):
        parse_edge_margin("EX=x")


def _disc(size: int, radius: float, centre: tuple[float, float]) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_clear_edge_clears_the_band_of_each_listed_lesion_only() -> None:
    from scipy.ndimage import distance_transform_edt

    size = 201
    fov = _disc(size, 90.0, (100, 100))  # 181 px across at its widest
    square = np.ones((4, size, size), dtype=np.float32)
    clear_edge(square, fov, {"EX": 0.1, "SE": 0.05})
    distance = distance_transform_edt(fov)  # exact distance to the nearest pixel outside the field
    for i, share in ((0, 0.1), (3, 0.05)):
        band = fov & (distance <= share * 181)
        np.testing.assert_array_equal(square[i] == 0, band | ~fov)
    along = square[0, 100, 100:]  # from the centre to the right: about 18 px of 90 cleared
    assert along[:71].all() and not along[73:].any()
    assert square[1].all() and square[2].all()  # HE and MA untouched


def test_clear_edge_leaves_a_field_cut_by_the_photos_border() -> None:
    size = 201
    fov = _disc(size, 90.0, (100, 100))
    photo = np.zeros((size, size), bool)
    photo[40:161] = True  # the photo's top and bottom cut the field (padding above and below)
    fov &= photo
    surround = np.pad(photo & ~fov, 1)
    square = np.ones((4, size, size), dtype=np.float32)
    clear_edge(square, fov, {"EX": 0.05}, surround)
    assert square[0, 40, 100] == 1 and square[0, 160, 100] == 1  # the cut edges are not the rim
    assert square[0, 100, :19].sum() == 0 and square[0, 100, 19:182].all()  # the round rim is (9 px)
    unchanged = np.ones_like(square)
    clear_edge(unchanged, np.ones((size, size), bool), {"EX": 0.05}, np.zeros((size + 2, size + 2), bool))
    assert unchanged.all()  # a field with no rim


@pytest.mark.parametrize("crop", ["fov", "centre_square"])
def test_edge_surround_follows_the_crop_box(crop) -> None:
    # A 300 x 400 photo whose round field (radius 160, columns 40-360) is cut by its top and bottom.
    image = np.zeros((300, 400, 3), np.uint8)
    image[_disc(400, 160, (150, 200))[:300]] = 120
    _, fov, geometry = crop_to_fov(image, PreprocessConfig(input_size=320, crop=crop))
    field = geometry.field_to_square(fov)
    surround = edge_surround(geometry, field)
    square = np.ones((4,) + field.shape, dtype=np.float32)
    clear_edge(square, field, {"EX": 0.02}, surround)  # about 6 px
    rows, cols = np.flatnonzero(field.any(axis=1)), np.flatnonzero(field.any(axis=0))
    middle_row, middle_col = (rows[0] + rows[-1]) // 2, (cols[0] + cols[-1]) // 2
    assert square[0, rows[0], middle_col] == 1  # the photo's top cuts the field: no rim there
    assert not surround[rows[0], 1 + middle_col]  # (the ring above it is not surround)
    if crop == "fov":  # the box is the field's bounding box: the rim is past its sides
        assert square[0, middle_row, cols[0]] == 0 and square[0, middle_row, cols[-1]] == 0
        assert square[0, middle_row, cols[0] + 8] == 1
        assert surround[1 + middle_row, cols[0]] and surround[1 + middle_row, cols[-1] + 2]
    else:  # a centred square cuts the field at its sides too: the field goes on past them
        assert square[0, middle_row, cols[0]] == 1 and square[0, middle_row, cols[-1]] == 1
        ring = surround.copy()
        ring[1:-1, 1:-1] = False
        assert not ring.any() and surround[1, 1]  # the box's corners do show the surround


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """The bundled network at a 192 px input, plain, and with a band for EX and SE."""
    root = tmp_path_factory.mktemp("edge")
    for name, extra in (("plain", {}), ("band", {"edge_margin": {"EX": 0.05, "SE": 0.02}})):
        shutil.copytree(BUNDLED, root / name)
        config = json.loads((root / name / "config.json").read_text())
        config["preprocessing"]["input_size"] = 192
        config.pop("edge_margin", None)
        config.update(extra)
        (root / name / "config.json").write_text(json.dumps(config))
    return root / "plain", root / "band"


def test_predict_clears_the_band_at_the_square_and_in_the_photos_masks(checkpoints, retina) -> None:
    from scipy.ndimage import distance_transform_edt

    plain, band = (load_model(c, device="cpu") for c in checkpoints)
    a = predict_square(plain, retina, precision="fp32", tta=False)
    b = predict_square(band, retina, precision="fp32", tta=False)
    assert b.settings["edge_margin"] == {"EX": 0.05, "SE": 0.02} and "edge_margin" not in a.settings
    field = b.geometry.field_to_square(b.fov)
    # A ring of 5 % (2 %) of the diameter holds about 19 % (8 %) of a round field's area.
    for i, c, share in ((0, "EX", (0.15, 0.23)), (1, "HE", None), (2, "MA", None), (3, "SE", (0.06, 0.1))):
        same = b.square[i] == a.square[i]
        if share is None:
            assert same.all(), c
        else:
            cleared = (b.square[i] == 0) & (a.square[i] > 0)
            assert same[~cleared].all(), c
            assert share[0] < cleared[field].mean() < share[1], c
    full = predict(band, retina, precision="fp32", tta=False)
    masks = full.masks(dict.fromkeys(CLASSES, 1e-9))
    assert not masks[0][~full.fov].any()
    diameter = np.ptp(np.flatnonzero(full.fov.any(axis=0))) + 1
    rim = distance_transform_edt(np.pad(full.fov, 1))[1:-1, 1:-1]  # to the dark surround
    pixel = b.geometry.side / b.geometry.size  # a square pixel, in the photo's pixels (7.3)
    assert rim[masks[0]].min() > 0.05 * diameter - 3 * pixel  # nothing within the band, up to resizing
    assert rim[masks[1]].min() < 0.005 * diameter  # while HE still reaches the rim


def test_tiled_runs_clear_the_band_too(checkpoints, retina) -> None:
    import cv2

    plain, band = (load_model(c, device="cpu") for c in checkpoints)
    small = cv2.resize(retina, (384, 384), interpolation=cv2.INTER_AREA)  # tiled at its own 384 px
    a = predict_square(plain, small, precision="fp32", tta=False, tile=256)
    b = predict_square(band, small, precision="fp32", tta=False, tile=256)
    assert b.settings["tiles_run"] > 1 and b.square.shape == a.square.shape
    field = b.geometry.field_to_square(b.fov)
    cleared = (b.square[0] == 0) & (a.square[0] > 0)
    assert 0.15 < cleared[field].mean() < 0.23  # the EX ring of 5 % of the diameter, as untiled
    np.testing.assert_array_equal(b.square[1], a.square[1])
