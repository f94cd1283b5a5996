"""The clinical reading of a photo: optic disc and fovea, ETDRS zones, lesions by zone, DME
risk and other research indicators, and image quality."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "PhotoReading": ".photo",
    "findings": ".photo",
    "read_photo": ".photo",
    "read_working": ".photo",
    "Fovea": ".landmarks",
    "Landmarks": ".landmarks",
    "OpticDisc": ".landmarks",
    "find_landmarks": ".landmarks",
    "ZoneMaps": ".zones",
    "ZoneReading": ".zones",
    "read_zones": ".zones",
    "dme_grade": ".grading",
    "exudate_cores": ".grading",
    "indicator_rows": ".grading",
    "retinopathy_estimate": ".grading",
    "Quality": ".quality",
    "assess_quality": ".quality",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
__all__ = sorted(_EXPORTS)
