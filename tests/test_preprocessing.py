from __future__ import annotations

import cv2
import numpy as np
import pytest

from hydralanet.config import PreprocessConfig
from hydralanet.preprocessing import (
    BlankImageError,
    FovGeometry,
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


def test_fov_geometry_box_is_the_masks_bounding_box():
    rng = np.random.default_rng(3)
    for _ in range(5):
        fov = np.zeros((97, 131), bool)
        ys, xs = rng.integers(0, 97, 6), rng.integers(0, 131, 6)
        fov[ys, xs] = True  # scattered pixels: the box must reach the outermost on each side
        geometry = fov_geometry(fov, 64)
        assert geometry.box == (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)
        assert geometry.side == max(ys.max() + 1 - ys.min(), xs.max() + 1 - xs.min())
    with pytest.raises(BlankImageError, match="empty field of view"):
        fov_geometry(np.zeros((40, 40), bool), 64)


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


def _disc_centres(mask: np.ndarray) -> np.ndarray:
    n, _, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return centroids[1:]


def test_lesion_masks_stay_aligned_and_small_lesions_survive():
    """At IDRiD's 3.4:1 (a 3480 px FOV square to 1024): nearest-neighbour sampling shifted masks
    and lost 5-px microaneurysms; mask_to_square keeps every one, on the image's pixel grid."""
    side, size = 3480, 1024
    scale = side / size
    rng = np.random.default_rng(0)
    mask = np.zeros((side, side), np.uint8)
    centres = rng.uniform(40, side - 40, size=(400, 2))
    centres = centres[np.all(np.abs(centres[:, None] - centres[None]).max(-1) + np.eye(len(centres)) * 99 > 30, 1)]
    for x, y in centres:
        cv2.circle(mask, (int(round(x)), int(round(y))), 2, 1, -1)  # 5 px across, as small MA are
    geometry = FovGeometry((side, side), (0, side, 0, side), side, 0, 0, size)
    new = geometry.mask_to_square(mask.astype(bool))
    old = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST) > 0
    # Where each drawn disc's centre lands on the square, pixel centres aligned as in cv2's resize.
    expected = (np.round(centres) + 0.5) / scale - 0.5

    def survival_and_offset(small: np.ndarray) -> tuple[float, float]:
        found = _disc_centres(small)
        d = np.linalg.norm(expected[:, None] - found[None], axis=-1)
        near = d.min(axis=1) < 2.0
        offsets = (found[d.argmin(axis=1)] - expected)[near]
        return float(near.mean()), float(np.abs(offsets.mean(axis=0)).max())

    survival_new, offset_new = survival_and_offset(new)
    survival_old, offset_old = survival_and_offset(old)
    print(
        f"5-px discs at 3.4:1: nearest survival {survival_old:.3f}, mean offset {offset_old:.2f} px; "
        f"area+keep survival {survival_new:.3f}, mean offset {offset_new:.2f} px"
    )
    assert survival_new == 1.0 and offset_new < 0.15
    assert survival_old < survival_new and offset_old > offset_new  # what it replaced was worse on both
    # A large lesion keeps its area (within the boundary's half-pixel) and stays binary.
    big = np.zeros((side, side), bool)
    cv2.circle(big.view(np.uint8), (1700, 1700), 400, 1, -1)
    small = geometry.mask_to_square(big)
    assert small.dtype == bool and abs(small.sum() - big.sum() / scale**2) / (big.sum() / scale**2) < 0.01
    # Several channels at once give the same as one at a time.
    both = geometry.mask_to_square(np.stack([mask.astype(bool), big], axis=-1))
    assert np.array_equal(both[..., 0], new) and np.array_equal(both[..., 1], small)
