from __future__ import annotations

import cv2
import numpy as np
import pytest

from hydralanet.config import PreprocessConfig
from hydralanet.preprocessing import (
    BlankImageError,
    apply_clahe,
    crop_to_fov,
    fov_geometry,
    fov_mask,
    normalize,
    preprocess,
)


def synthetic_fundus(h: int, w: int, centre: tuple[int, int], radius: int, seed: int = 0) -> np.ndarray:
    """Orange disc with texture on black, anywhere on a canvas of any shape."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    disc = np.zeros((h, w), np.uint8)
    cv2.circle(disc, (centre[1], centre[0]), radius, 1, -1)
    texture = cv2.GaussianBlur(rng.normal(0, 12, (h, w)).astype(np.float32), (0, 0), 6)
    for c, level in enumerate((190, 95, 40)):
        img[..., c] = np.where(disc > 0, np.clip(level + texture, 0, 255), 0)
    return img


def test_fov_of_real_retina(retina):
    fov = fov_mask(retina)
    assert fov.shape == retina.shape[:2]
    # The photo is a disc on black: the FOV covers roughly pi/4 of the square, and the
    # corners are outside while the centre is inside.
    assert 0.70 < fov.mean() < 0.85
    assert fov[705, 705] and not fov[5, 5] and not fov[-5, -5]


def test_fov_off_centre_non_square():
    img = synthetic_fundus(500, 800, centre=(260, 300), radius=200)
    fov = fov_mask(img)
    ys, xs = np.nonzero(fov)
    assert abs(ys.min() - 60) <= 2 and abs(ys.max() - 460) <= 2
    assert abs(xs.min() - 100) <= 2 and abs(xs.max() - 500) <= 2
    geometry = fov_geometry(fov, 256)
    assert geometry.side == max(geometry.box[1] - geometry.box[0], geometry.box[3] - geometry.box[2])


def test_fov_fills_dark_lesions_inside_disc():
    img = synthetic_fundus(400, 400, centre=(200, 200), radius=150)
    img[190:210, 190:210] = 0  # a pitch-black blot in the middle is still inside the FOV
    assert fov_mask(img)[200, 200]


def test_blank_image_raises():
    with pytest.raises(BlankImageError, match="blank"):
        fov_mask(np.zeros((300, 300, 3), np.uint8))
    with pytest.raises(BlankImageError):
        fov_mask(np.full((300, 300, 3), 3, np.uint8))


def test_square_and_back_is_exact_at_native_scale():
    img = synthetic_fundus(300, 420, centre=(140, 250), radius=120)
    config = PreprocessConfig(input_size=256)
    square, fov, geometry = crop_to_fov(img, config)
    assert square.shape == (256, 256, 3)
    # Identity at side == size: the crop round-trips pixel for pixel.
    same = fov_geometry(fov, geometry.side)
    planes = same.to_square(img).transpose(2, 0, 1).astype(np.float32)
    back = same.to_original(planes)
    y0, y1, x0, x1 = same.box
    assert np.array_equal(back[:, y0:y1, x0:x1], img[y0:y1, x0:x1].transpose(2, 0, 1).astype(np.float32))
    assert back[:, :y0].max() == 0 and back[:, :, x1:].max() == 0


def test_masks_use_nearest_and_stay_binary():
    img = synthetic_fundus(300, 420, centre=(140, 250), radius=120)
    mask = np.zeros(img.shape[:2], np.uint8)
    mask[100:110, 240:250] = 1
    _, _, geometry = crop_to_fov(img, PreprocessConfig(input_size=128))
    small = geometry.to_square(mask, interpolation=cv2.INTER_NEAREST)
    assert set(np.unique(small)) <= {0, 1} and small.sum() > 0


def test_clahe_modes_touch_the_right_channels(retina):
    img = cv2.resize(retina, (256, 256))
    green = apply_clahe(img, "green")
    assert np.array_equal(green[..., [0, 2]], img[..., [0, 2]]) and not np.array_equal(green[..., 1], img[..., 1])
    casp = apply_clahe(img, "casp")
    assert np.array_equal(casp[..., 2], img[..., 2])  # blue untouched
    assert np.array_equal(casp[..., 1], green[..., 1])  # green as in `green`
    assert not np.array_equal(casp[..., 0], img[..., 0])  # red: milder CLAHE
    lab = apply_clahe(img, "lab")
    assert lab.shape == img.shape and not np.array_equal(lab, img)
    assert np.array_equal(apply_clahe(img, "off"), img)
    # CLAHE raises local contrast of the green channel inside the fundus.
    fov = fov_mask(img)
    assert green[..., 1][fov].std() > img[..., 1][fov].std()
    with pytest.raises(ValueError, match="clahe='sharpen'"):
        apply_clahe(img, "sharpen")


def test_normalize_matches_imagenet_formula():
    img = np.array([[[0, 128, 255]]], np.uint8)
    t = normalize(img)
    expected = [(0 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (1 - 0.406) / 0.225]
    assert t.shape == (3, 1, 1)
    assert np.allclose(t[:, 0, 0].numpy(), expected, atol=1e-6)


def test_preprocess_end_to_end(retina):
    out = preprocess(retina, PreprocessConfig(input_size=256))
    assert out.tensor.shape == (3, 256, 256) and out.enhanced.shape == (256, 256, 3)
    assert out.fov.shape == retina.shape[:2]


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="input_size"):
        PreprocessConfig(input_size=100)
    with pytest.raises(ValueError, match="clahe"):
        PreprocessConfig(clahe="hist")


def test_centre_square_crop_is_the_original_codes_geometry():
    """crop=centre_square: the photo's centred min(H, W) square, resized bilinearly (as the
    original HydraLA-Net code trained); the FOV is limited to what the square reads."""
    img = synthetic_fundus(300, 500, centre=(150, 250), radius=200)  # wider than tall, clipped top/bottom
    config = PreprocessConfig(input_size=128, crop="centre_square")
    square, fov, geometry = crop_to_fov(img, config)
    assert geometry.box == (0, 300, 100, 400) and (geometry.side, geometry.pad_top, geometry.pad_left) == (300, 0, 0)
    assert np.array_equal(square, cv2.resize(img[:, 100:400], (128, 128), interpolation=cv2.INTER_LINEAR))
    whole = fov_mask(img)
    assert np.array_equal(fov, whole & (np.arange(500) >= 100)[None] & (np.arange(500) < 400)[None])
    assert whole[:, :100].any() and not fov[:, :100].any()  # the sides of the FOV are not read
    # The default crop keeps the area downscale and reads the whole FOV.
    square_fov, fov_all, g = crop_to_fov(img, PreprocessConfig(input_size=128))
    assert g.crop == "fov" and np.array_equal(fov_all, whole) and g.box[3] - g.box[2] > 300
    prepared = preprocess(img, config)
    assert np.array_equal(prepared.fov, fov) and prepared.tensor.shape == (3, 128, 128)
    with pytest.raises(ValueError, match="crop='square' is not supported; choose one of fov, centre_square"):
        PreprocessConfig(crop="square")
