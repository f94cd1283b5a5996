"""HydraLA-Net: pixel-wise segmentation of four diabetic-retinopathy lesions (EX, HE, MA, SE)
in colour fundus photographs. Research software, not a medical device."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Imported on first use (PEP 562), so `python -m hydralanet --help` and `--version` answer without
# loading torch: name -> the module that defines it.
_EXPORTS = {
    "CheckpointError": ".checkpoint_format",
    "LoadedModel": ".checkpoint",
    "load_model": ".checkpoint",
    "save_checkpoint": ".checkpoint",
    "CLASSES": ".config",
    "CheckpointConfig": ".config",
    "ModelConfig": ".config",
    "PreprocessConfig": ".config",
    "Prediction": ".inference",
    "lesion_statistics": ".inference",
    "SquarePrediction": ".inference",
    "predict": ".inference",
    "predict_square": ".inference",
    "threshold_masks": ".inference",
    "ImageError": ".io",
    "read_image": ".io",
    "HydraLANet": ".model",
    "COLOURS": ".overlay",
    "render_overlay": ".overlay",
    "apply_clahe": ".preprocessing",
    "fov_mask": ".preprocessing",
    "preprocess": ".preprocessing",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hydralanet' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


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
