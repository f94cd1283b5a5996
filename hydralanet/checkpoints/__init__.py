"""Checkpoints: where they come from (a folder, a file, the Hugging Face Hub, the bundled
model), how they are written and read, and the original HydraLA-Net code's layout."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "CheckpointError": ".format",
    "save_checkpoint": ".folder",
    "default_model_card": ".folder",
    "BUNDLED_DIR": ".sources",
    "locate": ".sources",
    "HubError": ".hub",
    "parse_hub_source": ".hub",
    "Checkpoint": ".read",
    "read_checkpoint": ".read",
    "convert_to_folder": ".convert",
    "export_original": ".convert",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
__all__ = sorted(_EXPORTS)
