"""The bundled model (weights/) pinned by what it does, not by its bytes: replaced by random or
broken weights, these tests fail.

Real lesions: three photographs of IDRiD's official test set (never used to train or tune the
model), downscaled to 1536 px with their graders' masks, in ``tests/fixtures/idrid/`` (CC BY
4.0, see its README). The normal eye is the CC0 scikit-image photo. Floors sit a few points
below the measured values (the comments say what was measured) and far above what random or
synthetic-only weights give.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hydralanet import load_model, predict, read_image
from hydralanet.config import CLASSES
from training.metrics import PRAccumulator

IDRID = Path(__file__).resolve().parent / "fixtures" / "idrid"
PHOTOS = ("IDRiD_59", "IDRiD_71", "IDRiD_75")
# Exact AP pooled over the three photos at 1536 x 1020; measured with the bundled weights and
# their default test-time augmentation: EX 0.769, HE 0.482, MA 0.536, SE 0.605 (pytest -s prints
# them; with flips alone HE 0.373; without any EX 0.712, HE 0.340, MA 0.508, SE 0.645). The
# synthetic-only model scored EX 0.275, HE 0.057, MA 0.074, SE 0.175 here.
AP_FLOORS = {"EX": 0.72, "HE": 0.44, "MA": 0.49, "SE": 0.55}
# Measured on the normal eye: EX 0.120 %, HE 0.204 %, MA 0.040 %, SE 0.000 % of the field of
# view (flips alone: HE 0.079 %; without the flips EX 0.289 %, HE 0.144 %, MA 0.053 %). The aim
# is under 0.1 % for every lesion; EX and HE are not there yet (docs/training.md). These ceilings
# catch a model that gets worse: the fine-tuning stage before the lesion-free photos marked EX
# 0.66 % and HE 0.42 % here, and averaging the half-size pass arithmetically HE 0.73 %.
NORMAL_EYE_MAX_PCT = {"EX": 0.16, "HE": 0.25, "MA": 0.06, "SE": 0.05}


@pytest.fixture(scope="module")
def bundled():
    return load_model(device="cpu")


def idrid_ap(model) -> dict[str, float]:
    pr = PRAccumulator()
    for name in PHOTOS:
        image = read_image(IDRID / f"{name}.jpg")
        shape = image.shape[:2]
        targets = np.stack(
            [
                np.asarray(Image.open(IDRID / f"{name}_{c}.png")) > 0
                if (IDRID / f"{name}_{c}.png").exists()
                else np.zeros(shape, bool)
                for c in CLASSES
            ]
        )
        probabilities = predict(model, image).probabilities
        pr.update(torch.from_numpy(probabilities)[None], torch.from_numpy(targets)[None])
    return {c: float(v) for c, v in zip(CLASSES, pr.average_precision())}


def test_bundled_model_finds_real_lesions_on_idrid_test_photos(bundled):
    ap = idrid_ap(bundled)
    print("bundled model, exact AP on three IDRiD test photos:", {c: round(v, 3) for c, v in ap.items()})
    for c in CLASSES:
        assert ap[c] >= AP_FLOORS[c], f"{c}: AP {ap[c]:.3f} below {AP_FLOORS[c]}"


def test_bundled_model_is_quiet_on_the_normal_eye(bundled, retina):
    rows = predict(bundled, retina).statistics(bundled.config.thresholds)
    coverage = {r["lesion"]: r["coverage_pct"] for r in rows}
    print("bundled model on the normal eye, % of the FOV:", coverage)
    assert all(coverage[c] < NORMAL_EYE_MAX_PCT[c] for c in CLASSES), coverage


def test_bundled_thresholds_are_calibrated_and_movable(bundled):
    assert bundled.config.calibration is not None
    assert bundled.config.tta  # its thresholds were tuned on flip-averaged probabilities
    assert bundled.config.extra_scales() == (0.5,)  # and on haemorrhages seen at half size too
    assert all(0.05 <= t <= 0.95 for t in bundled.config.thresholds.values()), bundled.config.thresholds
