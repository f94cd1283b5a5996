"""The reading's geometry and wording, checked where a wrong rule would show: lesions planted
either side of each boundary on a tilted disc-fovea axis, the DME rule against the measured
disc, landmarks that are doubtful or contradicted, and the fovea where it is not the centre."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from hydralanet import read_image
from hydralanet.preprocessing import fov_mask
from hydralanet.reading.landmarks import (
    BUNDLED,
    IMAGE_ANALYSIS,
    LEARNED_HEAD,
    Fovea,
    Landmarks,
    OpticDisc,
    find_landmarks,
)
from hydralanet.reading.photo import PhotoReading, findings
from hydralanet.reading.quality import Quality
from hydralanet.reading.zones import ETDRS_ZONES, QUADRANTS, draw_grid, read_zones, zone_maps

FIXTURES = Path(__file__).parent / "fixtures" / "idrid_landmarks"
SHAPE = (760, 900)
FOVEA = (380.0, 330.0)
DD = 100.0
TILT = 30.0  # degrees: the disc lies below the fovea's level, 2.5 DD away, nasal direction 30 deg down


def _axes(tilt: float = TILT) -> tuple[np.ndarray, np.ndarray]:
    t = np.radians(tilt)
    nasal = np.array([np.cos(t), np.sin(t)])  # image coordinates: y grows downwards
    superior = np.array([nasal[1], -nasal[0]])  # faces the top of the photo
    return nasal, superior


def _tilted(confidence: float = 1.0, source: str = "measured", dd: float = DD) -> Landmarks:
    nasal, _ = _axes()
    disc = np.array(FOVEA) + 2.5 * DD * nasal
    return Landmarks(
        OpticDisc(float(disc[0]), float(disc[1]), dd, 1.0, source),
        Fovea(*FOVEA, confidence),
        "right",
        "image",
        800.0,
    )


def _point(radius_dd: float, degrees: float) -> tuple[int, int]:
    """The pixel ``radius_dd`` DD from the fovea, ``degrees`` from the nasal direction towards
    superior (negative: towards inferior)."""
    nasal, superior = _axes()
    t = np.radians(degrees)
    p = np.array(FOVEA) + radius_dd * DD * (np.cos(t) * nasal + np.sin(t) * superior)
    return round(float(p[0])), round(float(p[1]))


def _sector(degrees: float) -> str:
    d = degrees % 360
    return "nasal" if d < 45 or d >= 315 else "superior" if d < 135 else "temporal" if d < 225 else "inferior"


FULL = np.ones(SHAPE, bool)
RINGS_DD = (1 / 3, 1.0, 2.0)  # ETDRS circles of 1, 3 and 6 mm at 1 DD = 1.5 mm

# 40 and 50 degrees off the axis: on a 30-degree axis these fall in other sectors of the image's
# own axes, so a grid drawn on the image axes puts them elsewhere.
ANGLES = (-40.0, 50.0, 140.0, 230.0, 320.0)


@pytest.mark.parametrize("ring", range(3))
def test_points_either_side_of_each_ring_on_a_tilted_axis(ring):
    maps = zone_maps(SHAPE, FULL, _tilted())
    radius = RINGS_DD[ring]  # written out: taken from the module, a wrong radius would move the test too
    names = ("centre", "inner", "outer", "outside")
    for angle in ANGLES:
        for factor, inside in ((0.95, True), (1.05, False)):
            x, y = _point(factor * radius, angle)
            ring_name = names[ring if inside else ring + 1]
            expected = ring_name if ring_name in ("centre",) else "outside_grid" if ring_name == "outside" else None
            expected = expected or f"{ring_name}_{_sector(angle)}"
            assert ETDRS_ZONES[maps.etdrs[y, x]] == expected, (radius, factor, angle)


def test_quadrants_follow_the_tilted_axis():
    maps = zone_maps(SHAPE, FULL, _tilted())
    expected = {80: "superonasal", 100: "superotemporal", -80: "inferonasal", -100: "inferotemporal"}
    for angle, quadrant in expected.items():
        for r in (0.5, 1.5):
            x, y = _point(r, angle)
            assert QUADRANTS[maps.quadrant[y, x]] == quadrant, (angle, r)


@pytest.mark.parametrize("angle", [-40.0, 50.0, 140.0, 230.0])
def test_exudate_at_095_dd_is_grade_2_and_at_105_dd_grade_1(angle):
    maps = zone_maps(SHAPE, FULL, _tilted())
    for distance, grade in ((0.95, 2), (1.05, 1)):
        masks = np.zeros((4, *SHAPE), bool)
        x, y = _point(distance, angle)
        masks[0, y - 1 : y + 2, x - 1 : x + 2] = True  # a 3 x 3 hard exudate
        assert read_zones(masks, maps).dme_risk == grade, (distance, angle)


def test_haemorrhages_microaneurysms_and_soft_exudates_at_the_fovea_grade_0():
    maps = zone_maps(SHAPE, FULL, _tilted())
    masks = np.zeros((4, *SHAPE), bool)
    x, y = _point(0.2, 0.0)
    for c in (1, 2, 3):  # HE, MA, SE: none is a hard exudate
        cv2.circle(masks[c].view(np.uint8), (x, y), 6, 1, -1)
    reading = read_zones(masks, maps)
    assert (reading.dme_risk, reading.dme_reason) == (0, "no hard exudates")
    masks[0, y, x + 20] = True
    assert read_zones(masks, maps).dme_risk == 2


def test_pixel_spacing_changes_the_grid_not_the_dme_rule():
    """Disc 100 px, an exudate at 1.07 DD: grade 1 with or without a pixel size that makes 1.5 mm
    120 px; the grid circles follow the millimetres."""
    landmarks = _tilted()
    masks = np.zeros((4, *SHAPE), bool)
    x, y = _point(1.07, 140.0)
    masks[0, y, x] = True
    plain = zone_maps(SHAPE, FULL, landmarks)
    header = zone_maps(SHAPE, FULL, landmarks, mm_per_px=0.0125)
    assert read_zones(masks, plain).dme_risk == read_zones(masks, header).dme_risk == 1
    assert header.dd == pytest.approx(120.0) and header.scale == "pixel_spacing"
    assert header.near_dd == 100.0 and header.near_scale == "disc_diameter"
    x, y = _point(1.1, 140.0)  # 110 px: outside the 3 mm circle of a 100 px disc, inside 120 px
    assert ETDRS_ZONES[plain.etdrs[y, x]] == "outer_temporal"
    assert ETDRS_ZONES[header.etdrs[y, x]] == "inner_temporal"


def test_an_assumed_disc_size_says_so():
    landmarks = _tilted(source="assumed")
    photo = PhotoReading(landmarks, Quality("good"), zone_maps(SHAPE, FULL, landmarks))
    masks = np.zeros((4, *SHAPE), bool)
    x, y = _point(0.5, 0.0)
    masks[0, y, x] = True
    found = findings(photo, masks)
    assert found["scale"]["source"] == "assumed_field_fraction" and "warning" in found["scale"]
    assert found["dme_risk"] == 2 and "assumed" in found["dme_reason"]
    # With a pixel size the unit is the file's 1.5 mm, and the reason says that instead.
    header = PhotoReading(landmarks, Quality("good"), zone_maps(SHAPE, FULL, landmarks, mm_per_px=0.015), 0.015)
    found = findings(header, masks)
    assert found["scale"]["dme_source"] == "pixel_spacing" and "pixel size" in found["dme_reason"]
    measured = PhotoReading(_tilted(), Quality("good"), zone_maps(SHAPE, FULL, _tilted()))
    found = findings(measured, masks)
    assert found["scale"]["source"] == "disc_diameter" and "warning" not in found["scale"]
    assert found["dme_reason"] == "1 hard exudate within 1 DD of the fovea"


def _field_with_a_large_disc(side: int = 640) -> tuple[np.ndarray, tuple[float, float], float]:
    """A 30-degree-like field: the disc 0.25 of the field's diameter, the fovea 2.5 DD away."""
    image = np.zeros((side, side, 3), np.uint8)
    centre, radius = side // 2, int(0.47 * side)
    cv2.circle(image, (centre, centre), radius, (170, 70, 30), -1)
    disc_d = 0.25 * 2 * radius
    disc = (centre - radius + 0.62 * disc_d, float(centre))
    cv2.circle(image, (round(disc[0]), round(disc[1])), round(disc_d / 2), (250, 200, 150), -1)
    fovea = (disc[0] + 2.5 * disc_d, float(centre))
    cv2.circle(image, (round(fovea[0]), round(fovea[1])), round(0.35 * disc_d), (120, 40, 20), -1)
    return cv2.GaussianBlur(image, (0, 0), 3), disc, disc_d


def test_a_disc_over_a_fifth_of_the_field_is_measured():
    image, disc, diameter = _field_with_a_large_disc()
    found = find_landmarks(image)
    assert found.disc is not None and np.hypot(found.disc.x - disc[0], found.disc.y - disc[1]) < 0.25 * diameter
    assert found.disc.diameter_source == "measured"
    assert found.disc.diameter_px == pytest.approx(diameter, rel=0.2)


def test_a_doubtful_fovea_gives_no_grade_and_no_grid():
    doubtful = _tilted(confidence=0.01)
    assert zone_maps(SHAPE, FULL, doubtful) is None
    photo = PhotoReading(doubtful, Quality("good"), None)
    masks = np.zeros((4, *SHAPE), bool)
    masks[0, 330, 380] = True
    found = findings(photo, masks)
    assert found["dme_risk"] is None and "fovea was not found reliably" in found["dme_reason"]
    assert found["rule_421_haemorrhages"] is None and found["fovea"]["reliable"] is False
    canvas = np.zeros((*SHAPE, 3), np.uint8)
    ring = _point(2.0, 180.0)  # on the 6 mm circle
    assert draw_grid(canvas, _tilted())[ring[1], ring[0]].any()
    assert not draw_grid(canvas, doubtful)[ring[1], ring[0]].any()


def test_421_is_worded_for_one_photograph_and_caveated():
    landmarks = _tilted()
    maps = zone_maps(SHAPE, FULL, landmarks)
    masks = np.zeros((4, *SHAPE), bool)
    cv2.circle(masks[1].view(np.uint8), _point(1.5, 60.0), 40, 1, -1)  # 0.5 of the disc's area
    masks[1, 10, 10] = True
    reading = read_zones(masks, maps)
    assert reading.rule_421_haemorrhages is False
    assert "not met within this photograph" in reading.rule_421_reason
    assert "cannot rule the criterion out" in reading.rule_421_reason
    assert "venous beading and IRMA are not assessed" in reading.rule_421_reason
    assert reading.rule_421_large_haemorrhages == 1 and "1 area larger" in reading.rule_421_reason
    for verdict in ("usable", "ungradable"):
        found = findings(PhotoReading(landmarks, Quality(verdict), maps), masks)
        assert f"quality is {verdict}" in found["rule_421_reason"] and f"quality is {verdict}" in found["dme_reason"]
    found = findings(PhotoReading(landmarks, Quality("good"), maps), masks)
    assert "quality" not in found["rule_421_reason"]


def test_laterality_conflicts_and_odd_values_are_reported(retina):
    image = cv2.resize(retina, (700, 700), interpolation=cv2.INTER_AREA)  # a left eye
    fov = fov_mask(image)
    agree = find_landmarks(image, fov, laterality="L")
    assert agree.eye == "left" and agree.notes == ()
    conflict = find_landmarks(image, fov, laterality="R")
    assert conflict.eye == "right" and conflict.eye_source == "header"
    assert any("says right eye but the image" in n and "left eye" in n for n in conflict.notes)
    odd = find_landmarks(image, fov, laterality="B")
    assert (odd.eye, odd.eye_source) == ("left", "image")  # the image's own answer is kept
    assert odd.fovea is not None and any("'B' is not left or right" in n for n in odd.notes)


def test_fovea_found_where_the_field_centre_is_not(retina):
    """The sample photo's content moved 220 px left and 120 px up inside its field: the fovea is
    then 1.8 DD from the field's centre, and still found within 0.5 DD."""
    from training.landmark_check import RETINA_DISC_DIAMETER, RETINA_FOVEA

    fov = fov_mask(retina)
    shift = np.float32([[1, 0, -220], [0, 1, -120]])
    moved = cv2.warpAffine(retina, shift, retina.shape[1::-1], borderMode=cv2.BORDER_REFLECT) * fov[..., None]
    truth = (RETINA_FOVEA[0] - 220, RETINA_FOVEA[1] - 120)
    ys, xs = np.nonzero(fov)
    assert np.hypot(xs.mean() - truth[0], ys.mean() - truth[1]) > 1.5 * RETINA_DISC_DIAMETER
    found = find_landmarks(moved, fov)
    assert found.fovea is not None
    assert np.hypot(found.fovea.x - truth[0], found.fovea.y - truth[1]) <= 0.5 * RETINA_DISC_DIAMETER


def _idrid_marks() -> list[dict[str, str]]:
    with (FIXTURES / "centres.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("head", [BUNDLED, None], ids=["learned head", "image analysis"])
@pytest.mark.parametrize("row", _idrid_marks(), ids=lambda r: r["image"])
def test_idrid_photos_with_an_off_centre_fovea(row, head):
    """Real photos (IDRiD part C, downscaled) whose fovea the graders marked over 1 DD from the
    field's centre: disc and fovea within 0.5 DD of their marks, by either finder."""
    image = read_image(FIXTURES / f"{row['image']}.jpg")
    dd = float(row["disc_diameter_px"])
    fovea, disc = (float(row["fovea_x"]), float(row["fovea_y"])), (float(row["disc_x"]), float(row["disc_y"]))
    fov = fov_mask(image)
    ys, xs = np.nonzero(fov)
    assert np.hypot(xs.mean() - fovea[0], ys.mean() - fovea[1]) > dd
    found = find_landmarks(image, fov, head=head)
    assert found.disc is not None and found.disc.found_by == (LEARNED_HEAD if head else IMAGE_ANALYSIS)
    assert np.hypot(found.disc.x - disc[0], found.disc.y - disc[1]) <= 0.5 * dd
    assert found.fovea is not None and np.hypot(found.fovea.x - fovea[0], found.fovea.y - fovea[1]) <= 0.5 * dd


def test_retinopathy_estimate_from_the_lesions():
    """Few or no lesions / microaneurysms / many lesions beyond them, each once its floor is
    reached, and the burden: HE + EX + SE + half the MAs."""
    from hydralanet.reading.grading import REFERABLE_BURDEN, RETINOPATHY_MIN_BEYOND, RETINOPATHY_MIN_MA

    maps = zone_maps(SHAPE, FULL, _tilted())
    masks = np.zeros((4, *SHAPE), bool)
    assert read_zones(masks, maps).retinopathy["level"] == 0

    def plant(kind, n, row):  # n single-pixel lesions of one kind, 4 px apart
        for k in range(n):
            masks[kind, row + 4 * (k // 40), 100 + 4 * (k % 40)] = True

    plant(2, RETINOPATHY_MIN_MA - 1, 100)  # microaneurysms, one short of the floor
    estimate = read_zones(masks, maps).retinopathy
    assert (estimate["level"], estimate["lesion_burden"]) == (0, 0.5 * (RETINOPATHY_MIN_MA - 1))
    assert "not seen" in estimate["note"]
    plant(2, RETINOPATHY_MIN_MA, 100)
    assert read_zones(masks, maps).retinopathy["level"] == 1
    plant(1, RETINOPATHY_MIN_BEYOND - 2, 600)  # haemorrhages and one soft exudate: one short
    masks[3, 650, 100:104] = True
    assert read_zones(masks, maps).retinopathy["level"] == 1
    masks[0, 700, 300:303] = True  # one hard exudate more reaches the floor
    estimate = read_zones(masks, maps).retinopathy
    burden = RETINOPATHY_MIN_BEYOND + 0.5 * RETINOPATHY_MIN_MA
    assert (estimate["level"], estimate["lesion_burden"]) == (2, burden)
    assert estimate["label"] == "many lesions beyond microaneurysms"
    assert estimate["referable_likely"] is (burden >= REFERABLE_BURDEN)
    assert read_zones(masks, None).retinopathy["lesion_burden"] == burden  # no landmarks: still counted


def test_a_disc_too_large_to_measure_is_flagged_as_assumed():
    """A bright blob at 0.36 of the field (above the measurable 0.3): whatever is taken for the
    disc, its size is the assumed fraction of the field, and the landmarks say so."""
    image = np.zeros((640, 640, 3), np.uint8)
    cv2.circle(image, (320, 320), 300, (170, 70, 30), -1)
    cv2.circle(image, (200, 320), 108, (250, 200, 150), -1)
    image = cv2.GaussianBlur(image, (0, 0), 2)
    found = find_landmarks(image)
    assert found.disc is not None
    assert found.disc.diameter_source == "assumed"
    assert any("could not be measured" in n for n in found.notes)
