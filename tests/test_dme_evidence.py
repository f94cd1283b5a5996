"""The DME grade's evidence rule: a hard exudate counts when the model is sure of it somewhere
(p >= DME_EXUDATE_PEAK), and only once such exudates cover DME_EXUDATE_MIN_AREA of the disc's
area; the measurement on IDRiD (training.idrid_grading) scores exactly the rule the reading
applies, and every way into the reading (API, batch pipeline, web app) hands it the same cores."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from hydralanet.batch.outputs import OutputOptions
from hydralanet.batch.pipeline import ModelOutput
from hydralanet.config import CLASSES
from hydralanet.inference.segment import SquarePrediction
from hydralanet.preprocessing import fov_geometry, fov_mask
from hydralanet.reading.grading import DME_EXUDATE_MIN_AREA, DME_EXUDATE_MIN_COUNT, DME_EXUDATE_PEAK, exudate_cores
from hydralanet.reading.landmarks import Fovea, Landmarks, OpticDisc
from hydralanet.reading.photo import PhotoReading, findings, read_photo, square_exudate_cores
from hydralanet.reading.quality import Quality
from hydralanet.reading.zones import read_zones, zone_maps
from training.idrid_grading import (
    choose_exudate_floor,
    choose_level_floors,
    dme_with_floor,
    exudate_components,
    level_with_floors,
)

SHAPE = (600, 800)
FOVEA = (300.0, 300.0)
DD = 100.0
DISC_AREA = np.pi / 4 * DD**2  # 7854 px


def _photo() -> PhotoReading:
    fov = np.zeros(SHAPE, bool)
    cv2.circle(fov.view(np.uint8), (400, 300), 290, 1, -1)
    landmarks = Landmarks(OpticDisc(550.0, 300.0, DD, 1.0), Fovea(*FOVEA, 1.0), "right", "image", 580.0)
    return PhotoReading(landmarks, Quality("good"), zone_maps(SHAPE, fov, landmarks))


def _square(mask: np.ndarray, probability: np.ndarray, x: int, y: int, side: int, p: float) -> None:
    mask[y : y + side, x : x + side] = True
    probability[y : y + side, x : x + side] = p


def _read(exudates: list[tuple[int, int, int, float]]) -> tuple[dict, dict]:
    """Findings with cores, and the IDRiD measurement's row, for square exudates ``(x, y, side, p)``."""
    photo = _photo()
    masks = np.zeros((4, *SHAPE), bool)
    probability = np.zeros(SHAPE, np.float32)
    for x, y, side, p in exudates:
        _square(masks[0], probability, x, y, side, p)
    with_cores = PhotoReading(photo.landmarks, photo.quality, photo.maps, cores=exudate_cores(probability))
    found = findings(with_cores, masks)
    row = {"dme_read": found["dme_risk"], "ex_components": json.dumps(exudate_components(masks[0], probability, photo))}
    return found, row


NEAR = (320, 300)  # top-left corner of an exudate 0.2 DD from the fovea
SIDE = int(np.ceil(np.sqrt(DME_EXUDATE_MIN_AREA * DISC_AREA)))  # a square just large enough alone


SURE = (1 + DME_EXUDATE_PEAK) / 2  # a probability the rule takes as sure


def _far(k: int, side: int = 3, p: float = SURE) -> list[tuple[int, int, int, float]]:
    """``k`` small sure exudates 1.3-2.8 DD from the fovea (x >= 430), 12 px apart."""
    return [(430 + 12 * (i % 8), 380 + 12 * (i // 8), side, p) for i in range(k)]


K = DME_EXUDATE_MIN_COUNT
CASES = [
    (_far(1, SIDE), 1),  # one sure exudate covering the minimum area
    ([(*NEAR, SIDE, SURE)], 2),
    (_far(1, SIDE - 1), 0 if K > 1 else 1),  # just under the area, and alone
    (_far(K), 1),  # enough sure exudates, each tiny
    (_far(K - 1), 0 if K > 1 else 1),  # one too few
    (_far(K, p=0.9 * DME_EXUDATE_PEAK), 0),  # as many, but the model is never sure of them
    ([(*NEAR, SIDE, 0.9 * DME_EXUDATE_PEAK), *_far(K)], 1),  # the near one is faint: it does not count
    ([(*NEAR, 3, SURE), *_far(K)], 2),  # evidence enough: the small sure one near the fovea counts
]


@pytest.mark.parametrize("exudates,grade", CASES)
def test_the_grade_counts_sure_exudates_over_the_floor(exudates, grade):
    found, row = _read(exudates)
    assert found["dme_risk"] == grade, found["dme_reason"]
    # The IDRiD measurement scores the very rule: same grade from the recorded components.
    assert dme_with_floor(row, DME_EXUDATE_PEAK, DME_EXUDATE_MIN_COUNT, DME_EXUDATE_MIN_AREA) == grade


def test_the_reason_says_why_nothing_was_counted():
    found, _ = _read(_far(K - 1) + [(320, 420, 6, 0.5)])
    assert found["dme_reason"].startswith(f"no hard exudates counted: {K} hard exudates in the mask, {K - 1} of them")
    share = 100 * 9 * (K - 1) / DISC_AREA
    assert f"covering {share:.1f} % of the disc's area (under {100 * DME_EXUDATE_MIN_AREA:g} %)" in found["dme_reason"]
    found, _ = _read([])
    assert found["dme_risk"] == 0 and found["dme_reason"] == "no hard exudates"


def test_without_cores_every_exudate_counts():
    photo = _photo()
    masks = np.zeros((4, *SHAPE), bool)
    masks[0, 300:302, 320:322] = True  # 4 px, never sure of: still counted with no probabilities
    assert read_zones(masks, photo.maps).dme_risk == 2
    assert read_zones(masks, photo.maps, cores=np.array([], np.int64)).dme_risk == 0


def test_without_a_reliable_fovea_only_no_exudates_is_graded():
    """Grade 0 needs no fovea (no hard exudate counts anywhere); any counted exudate leaves no grade."""
    photo = _photo()
    doubtful = Landmarks(photo.landmarks.disc, Fovea(*FOVEA, 0.1), "right", "image", 580.0)

    def read(exudates, quality="good"):
        masks = np.zeros((4, *SHAPE), bool)
        probability = np.zeros(SHAPE, np.float32)
        for x, y, side, p in exudates:
            _square(masks[0], probability, x, y, side, p)
        unread = PhotoReading(doubtful, Quality(quality), None, cores=exudate_cores(probability))
        return findings(unread, masks)

    found = read([])
    assert (found["dme_risk"], found["dme_reason"]) == (0, "no hard exudates (the fovea is not needed for that)")
    assert found["rule_421_reason"] == "not assessed: the fovea was not found reliably (confidence 0.10)"
    found = read(_far(K, p=0.9 * DME_EXUDATE_PEAK), quality="usable")
    assert found["dme_risk"] == 0
    assert found["dme_reason"] == (
        f"no hard exudates counted: {K} hard exudates in the mask, none with p >= {DME_EXUDATE_PEAK:g} "
        "(the fovea is not needed for that) (the photo's quality is usable: read with caution)"
    )
    found = read([(*NEAR, 3, SURE), *_far(2, p=0.9 * DME_EXUDATE_PEAK)])
    assert found["dme_risk"] is None
    assert (
        found["dme_reason"]
        == "no grade: 1 hard exudate counted, and the fovea was not found reliably (confidence 0.10)"
    )
    assert read_zones(np.zeros((4, *SHAPE), bool), None).dme_risk == 0  # no cores given: none at all
    row = {"dme_read": 0, "landmarks_reliable": False, "ex_components": "[]"}
    assert dme_with_floor(row, 0.5, 1, 0.01) == 0  # the measurement keeps the reading's own grade


def test_components_measure_area_distance_and_peak():
    photo = _photo()
    mask = np.zeros(SHAPE, bool)
    probability = np.zeros(SHAPE, np.float32)
    _square(mask, probability, 400, 300, 10, 0.6)
    probability[305, 405] = 0.99
    ((area, distance, peak),) = exudate_components(mask, probability, photo)
    assert area == pytest.approx(100 / DISC_AREA, rel=1e-3)
    assert distance == pytest.approx(1.0, abs=1e-4)  # its nearest pixel, x = 400: 100 px = 1 DD from the fovea
    assert peak == pytest.approx(0.99)
    unread = PhotoReading(photo.landmarks, photo.quality, None)
    assert exudate_components(mask, probability, unread) == []


def test_the_settings_are_chosen_by_accuracy_on_the_rows_given():
    def row(truth, components):
        return {"dme_true": truth, "dme_read": 0, "ex_components": json.dumps(components)}

    sure_far, faint_near, small_sure = [0.06, 3.0, 0.99], [0.3, 0.2, 0.7], [0.003, 2.0, 0.99]
    rows = [
        row(1, [sure_far, faint_near]),
        row(0, [faint_near]),
        row(0, [small_sure]),
        row(1, [sure_far]),
        row(1, [small_sure] * 4),  # four small sure ones: exudates all the same
    ]
    (peak, count, area), scores = choose_exudate_floor(rows)
    assert peak > 0.7 and 1 < count <= 4 and 0.003 < area <= 0.06  # the faint one and one small one must go
    assert scores["chosen"]["accuracy"] == 1.0
    assert dme_with_floor({**rows[0], "dme_read": None}, peak, count, area) is None  # no landmarks, no grade


def test_the_level_floors_are_chosen_by_kappa_on_the_rows_given():
    def row(grade, he=0, ex=0, ma=0, level=2):
        return {"dr_true": grade, "retinopathy_level": level, "lesion_counts": {"EX": ex, "HE": he, "MA": ma, "SE": 0}}

    rows = [
        row(0, he=2),  # two false specks on a healthy eye
        row(0, ex=1, ma=1),
        row(1, he=1, ma=6),  # mild: microaneurysms, and one speck
        row(1, ma=9),
        row(2, he=12, ma=3),
        row(3, he=40, ex=9),  # the level never says 3 without the 4-2-1 haemorrhages
    ]
    assert choose_level_floors(rows) == (3, 2)  # the lowest floors that read every grade 0-2 right
    assert [level_with_floors(r, 3, 2) for r in rows] == [0, 0, 1, 1, 2, 2]
    assert [level_with_floors(r, 1, 1) for r in rows] == [2, 2, 2, 1, 2, 2]  # every speck counts
    assert level_with_floors(row(3, level=3), 3, 2) == 3  # 4-2-1 met, as read
    assert choose_level_floors([{**r, "lesion_counts": None} for r in rows]) is None


def test_every_way_in_hands_the_reading_the_same_cores(retina):
    """The batch pipeline (square to photo, in stage 3) and read_photo from the full
    probabilities find the same core pixels, so the same DME grade."""
    fov = fov_mask(retina)
    geometry = fov_geometry(fov, 256)
    square = np.zeros((4, 256, 256), np.float32)
    cv2.circle(square[0], (150, 100), 6, (1 + DME_EXUDATE_PEAK) / 2, -1)
    cv2.circle(square[0], (90, 160), 6, DME_EXUDATE_PEAK - 0.1, -1)
    prediction = SquarePrediction.make(square, fov, retina, geometry.to_square(retina), geometry, {})
    full = prediction.full()
    direct = read_photo(retina, fov, probabilities=full.probabilities)
    output = ModelOutput(0, "eye", "eye.png", torch.from_numpy(retina), torch.from_numpy(fov), square, geometry)
    result = output.to_result(OutputOptions(thresholds=dict.fromkeys(CLASSES, 0.5)))
    assert result.cores.size > 100 and np.array_equal(result.cores, direct.cores)
    assert np.array_equal(
        square_exudate_cores(prediction.square, prediction.geometry, prediction.fov), direct.cores
    )  # the web app's full-resolution reading
    # Only the sure exudate holds cores: the fainter one has none.
    ys, xs = np.unravel_index(direct.cores, fov.shape)
    box_y0, _, box_x0, _ = geometry.box
    k = geometry.side / geometry.size
    assert np.all(
        np.hypot(
            (xs - box_x0 + geometry.pad_left + 0.5) / k - 0.5 - 150,
            (ys - box_y0 + geometry.pad_top + 0.5) / k - 0.5 - 100,
        )
        < 8
    )
