"""HydraLA-Net: pixel-wise segmentation of four diabetic-retinopathy lesions (EX, HE, MA, SE)
in colour fundus photographs. Research software, not a medical device."""

from __future__ import annotations

from ._lazy import lazy_exports
from ._moved import install as _install_moved_paths

__version__ = "0.1.0"

_install_moved_paths()  # the module paths before the subpackages still import, with a DeprecationWarning

# Imported on first use (PEP 562), so `python -m hydralanet --help` and `--version` answer without
# loading torch: name -> the module that defines it.
_EXPORTS = {
    "CheckpointError": ".checkpoints.format",
    "LoadedModel": ".inference.loaded",
    "load_model": ".inference.loaded",
    "save_checkpoint": ".checkpoints.folder",
    "CLASSES": ".config",
    "CheckpointConfig": ".config",
    "ModelConfig": ".config",
    "PreprocessConfig": ".config",
    "Prediction": ".inference.segment",
    "lesion_statistics": ".inference.segment",
    "SquarePrediction": ".inference.segment",
    "predict": ".inference.segment",
    "predict_square": ".inference.segment",
    "threshold_masks": ".inference.segment",
    "ImageError": ".io.images",
    "read_image": ".io.images",
    "HydraLANet": ".model.network",
    "COLOURS": ".report.overlay",
    "render_overlay": ".report.overlay",
    "apply_clahe": ".preprocessing",
    "fov_mask": ".preprocessing",
    "preprocess": ".preprocessing",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

__all__ = [
    "CLASSES",
    "COLOURS",
    "CheckpointConfig",
    "CheckpointError",
    "HydraLANet",
    "ImageError",
    "LoadedModel",
    "ModelConfig",
    "Prediction",
    "PreprocessConfig",
    "SquarePrediction",
    "apply_clahe",
    "fov_mask",
    "lesion_statistics",
    "load_model",
    "predict",
    "predict_square",
    "preprocess",
    "read_image",
    "render_overlay",
    "save_checkpoint",
    "threshold_masks",
]
