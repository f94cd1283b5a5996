"""Running a model on photos: loading it onto a device, the exact and the fast path, whole
squares or tiles, masks and lesion statistics, and the exported ONNX / OpenVINO runtimes."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "LoadedModel": ".loaded",
    "load_model": ".loaded",
    "load_model_or_bundled": ".loaded",
    "Prediction": ".segment",
    "SquarePrediction": ".segment",
    "label_lesions": ".segment",
    "lesion_statistics": ".segment",
    "predict": ".segment",
    "predict_batch": ".segment",
    "predict_square": ".segment",
    "threshold_masks": ".segment",
    "resolve_device": ".device",
    "resolve_precision": ".device",
    "optimize_for_inference": ".fast",
    "export_model": ".export",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
__all__ = sorted(_EXPORTS)
