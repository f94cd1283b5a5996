"""The learned disc and fovea head (hydralanet/reading/landmark_head.py): its files, its answer in the
photo's pixels, the fallback to image analysis, and the shipped weights on real photos."""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from hydralanet import read_image
from hydralanet.preprocessing import fov_mask
from hydralanet.reading.landmark_head import (
    HeadConfig,
    LandmarkHead,
    LandmarkHeadError,
    LandmarkNet,
    bundled_landmark_head,
    decode,
    load_landmark_head,
    save_landmark_head,
)
from hydralanet.reading.landmarks import IMAGE_ANALYSIS, LEARNED_HEAD, find_landmarks

FIXTURES = Path(__file__).parent / "fixtures" / "idrid_landmarks"


@pytest.fixture
def bundled_cache():
    bundled_landmark_head.cache_clear()
    yield
    bundled_landmark_head.cache_clear()


def _saved(folder: Path, widths=(4, 4, 8, 8)) -> LandmarkNet:
    torch.manual_seed(0)
    net = LandmarkNet(widths)
    save_landmark_head(net, HeadConfig(input_size=64, widths=widths), folder)
    return net


def test_saved_head_loads_and_answers_the_same(tmp_path):
    net = _saved(tmp_path)
    head = load_landmark_head(tmp_path / "landmarks.safetensors")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), head.net(x))
    assert head.config.widths == (4, 4, 8, 8) and head.config.input_size == 64
    image = _photo_with_spots()
    found = find_landmarks(image, head=tmp_path)  # a folder: the head there
    assert found.disc.found_by == LEARNED_HEAD
    with pytest.raises(LandmarkHeadError, match="no landmarks.safetensors"):
        find_landmarks(image, head=tmp_path / "elsewhere")


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda d: (d / "landmarks.safetensors").unlink(), "no landmarks.safetensors in"),
        (lambda d: (d / "landmarks.json").unlink(), "no landmarks.json in"),
        (lambda d: (d / "landmarks.safetensors").write_bytes(b"\x00garbage" * 9), "not a readable safetensors file"),
        (lambda d: (d / "landmarks.json").write_text("{not json"), "is not a valid config"),
        (lambda d: (d / "landmarks.json").write_text('{"colour": 1}'), "unknown keys ['colour']"),
        (lambda d: (d / "landmarks.json").write_text('{"widths": [4, 4, 8, 16]}'), "does not fit"),
    ],
)
def test_a_bad_or_missing_file_is_one_clear_line(tmp_path, spoil, message):
    _saved(tmp_path)
    spoil(tmp_path)
    with pytest.raises(LandmarkHeadError) as info:
        load_landmark_head(tmp_path)
    text = str(info.value)
    assert message in text and "\n" not in text and text.startswith("landmark head: ")


def test_a_bad_bundled_head_falls_back_to_image_analysis(tmp_path, monkeypatch, retina, bundled_cache):
    _saved(tmp_path)
    (tmp_path / "landmarks.safetensors").write_bytes(b"broken")
    monkeypatch.setattr("hydralanet.checkpoints.sources.BUNDLED_DIR", tmp_path)
    image = cv2.resize(retina, (600, 600), interpolation=cv2.INTER_AREA)
    with pytest.warns(UserWarning, match="landmarks come from image analysis"):
        found = find_landmarks(image)
    assert found.disc.found_by == found.fovea.found_by == IMAGE_ANALYSIS
    monkeypatch.setattr("hydralanet.checkpoints.sources.BUNDLED_DIR", tmp_path / "nothing here")
    bundled_landmark_head.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no head files at all: image analysis, silently
        assert find_landmarks(image).disc.found_by == IMAGE_ANALYSIS


def test_decode_finds_the_peak_with_sub_cell_precision():
    config = HeadConfig(input_size=256, stride=4)  # confidence: mass within 1.9 cells
    logits = torch.full((1, 2, 16, 16), -30.0)
    logits[0, 0, 5, 9] = 10.0  # disc: one cell -> its centre, 9 * 4 + 1.5 input px
    logits[0, 1, 12, 3] = logits[0, 1, 12, 4] = 10.0  # fovea: two equal cells -> between them
    found = decode(logits, config)
    assert found[0, 0, :2] == pytest.approx((37.5, 21.5))
    assert found[0, 1, :2] == pytest.approx((15.5, 49.5))
    assert found[0, 0, 2] == pytest.approx(1.0, abs=1e-6) and found[0, 1, 2] == pytest.approx(1.0, abs=1e-6)
    logits[0, 0] = 0.0  # a flat map: no confidence
    assert decode(logits, config)[0, 0, 2] < 0.1


class _BrightAndDark(nn.Module):
    """A stand-in network: disc where the green channel is brightest, fovea where darkest."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        green = nn.functional.avg_pool2d(x[:, 1:2], 4)
        return torch.cat([8 * green, -8 * green], 1)


def _photo_with_spots(disc=(330, 300), fovea=(560, 320)) -> np.ndarray:
    """A 600 x 900 photo, its round field of view off centre and cut at the top, a bright
    spot and a dark spot inside."""
    image = np.zeros((600, 900, 3), np.uint8)
    cv2.circle(image, (470, 260), 280, (160, 80, 40), -1)
    cv2.circle(image, disc, 14, (250, 230, 200), -1)
    cv2.circle(image, fovea, 14, (60, 20, 10), -1)
    return cv2.GaussianBlur(image, (0, 0), 3)


def test_the_answer_is_in_the_photos_pixels():
    head = LandmarkHead(_BrightAndDark(), HeadConfig(input_size=256))
    image = _photo_with_spots()
    answer = head.locate(image, fov_mask(image))
    assert np.hypot(answer.disc[0] - 330, answer.disc[1] - 300) < 4
    assert np.hypot(answer.fovea[0] - 560, answer.fovea[1] - 320) < 4
    mirrored = head.locate(image[:, ::-1].copy(), fov_mask(image[:, ::-1]))
    assert np.hypot(mirrored.disc[0] - (899 - 330), mirrored.disc[1] - 300) < 4


def test_find_landmarks_reports_the_head_and_its_floors():
    config = HeadConfig(input_size=256, reliable_disc_confidence=0.2, reliable_fovea_confidence=1.01)
    image = _photo_with_spots()
    found = find_landmarks(image, head=LandmarkHead(_BrightAndDark(), config))
    assert (found.disc.found_by, found.fovea.found_by) == (LEARNED_HEAD, LEARNED_HEAD)
    assert np.hypot(found.fovea.x - 560, found.fovea.y - 320) < 4 and found.eye == "left"
    assert found.disc.reliable and not found.fovea.reliable and not found.reliable
    assert any(n.startswith("fovea not found reliably") for n in found.notes)
    assert found.to_dict()["fovea"]["confidence_floor"] == 1.01
    # The file says right eye, the head says left: noted, and the fovea searched left of the disc.
    told = find_landmarks(image, head=LandmarkHead(_BrightAndDark(), config), laterality="right")
    assert told.eye == "right" and any(
        "says right eye but the image's disc and fovea say left" in n for n in told.notes
    )
    assert told.fovea is None or (told.fovea.found_by == IMAGE_ANALYSIS and told.fovea.x < told.disc.x)


def _idrid_marks() -> list[dict[str, str]]:
    with (FIXTURES / "centres.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("row", _idrid_marks(), ids=lambda r: r["image"])
def test_the_shipped_head_on_real_photos(row, bundled_cache):
    """IDRiD part C photos, downscaled 4x (two of the head's training photos: a check of the
    shipped files and their wiring, not a score): within 0.5 DD of the graders' disc and fovea
    (tighter in fact: 0.25 DD), reliable, with the disc's size measured; and on the photo
    mirrored, the mirrored answer."""
    head = bundled_landmark_head()
    assert head is not None, "weights/landmarks.safetensors is missing or unreadable"
    image = read_image(FIXTURES / f"{row['image']}.jpg")
    dd = float(row["disc_diameter_px"])
    found = find_landmarks(image)
    assert found.disc.found_by == LEARNED_HEAD and found.reliable
    assert np.hypot(found.disc.x - float(row["disc_x"]), found.disc.y - float(row["disc_y"])) <= 0.25 * dd
    assert np.hypot(found.fovea.x - float(row["fovea_x"]), found.fovea.y - float(row["fovea_y"])) <= 0.25 * dd
    assert found.disc.diameter_source == "measured" and 0.5 * dd < found.disc.diameter_px < 1.5 * dd
    flipped = find_landmarks(image[:, ::-1].copy())
    width = image.shape[1]
    assert abs(flipped.fovea.x - (width - 1 - found.fovea.x)) < 0.05 * dd
    assert abs(flipped.disc.y - found.disc.y) < 0.05 * dd and flipped.eye != found.eye


def test_the_shipped_config_says_where_it_came_from():
    config = json.loads((Path(__file__).parent.parent / "weights" / "landmarks.json").read_text())
    loaded = HeadConfig.from_dict(config)
    assert asdict(loaded) == config | {"widths": loaded.widths}
    assert "IDRiD" in loaded.provenance["data"] and 0 < loaded.reliable_disc_confidence < 1


def test_the_export_writes_its_part_of_the_model_card_once(tmp_path):
    from training.landmark_head import CARD_HEADING, card_section, update_model_card

    weights = Path(__file__).parent.parent / "weights"
    config = HeadConfig.from_dict(json.loads((weights / "landmarks.json").read_text()))
    (tmp_path / "README.md").write_text("# model\n\n## Use\n\ntext\n")
    update_model_card(tmp_path, config)
    update_model_card(tmp_path, config)  # an export into the same folder again replaces it
    card = (tmp_path / "README.md").read_text()
    assert card.startswith("# model\n\n## Use\n\ntext\n") and card.count(CARD_HEADING) == 1
    assert f"disc {config.reliable_disc_confidence}, fovea {config.reliable_fovea_confidence}" in card
    assert card.endswith(card_section(config))
    shipped = (weights / "README.md").read_text()
    assert card_section(config) in shipped  # the bundled card describes the bundled head
    update_model_card(tmp_path / "none", config)  # no card there: nothing written
    assert not (tmp_path / "none").exists()
