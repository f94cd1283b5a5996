"""HydraLA-Net: pixel-wise segmentation of four diabetic-retinopathy lesions (EX, HE, MA, SE)
in colour fundus photographs. Research software, not a medical device."""

from __future__ import annotations

from .checkpoint import CheckpointError, LoadedModel, load_model, save_checkpoint
from .config import CLASSES, CheckpointConfig, ModelConfig, PreprocessConfig
from .inference import Prediction, lesion_statistics, predict, threshold_masks
from .io import ImageError, read_image
from .model import HydraLANet
from .overlay import COLOURS, render_overlay
from .preprocessing import apply_clahe, fov_mask, preprocess

__version__ = "0.1.0"

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
    "apply_clahe",
    "fov_mask",
    "lesion_statistics",
    "load_model",
    "predict",
    "preprocess",
    "read_image",
    "render_overlay",
    "save_checkpoint",
    "threshold_masks",
]
