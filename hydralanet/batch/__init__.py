"""Many photos in one run: the staged pipeline (decode, model, post-process), the files each
photo leaves, resuming, several processes under torchrun, and the run's merged tables."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "PredictRequest": ".runner",
    "run_predict": ".runner",
    "OutputOptions": ".outputs",
    "write_photo_outputs": ".outputs",
    "merge_shards": ".outputs",
    "Pipeline": ".pipeline",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
__all__ = sorted(_EXPORTS)
