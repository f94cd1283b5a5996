"""The network: a ResNet encoder, lesion-aware decoder blocks and one head per lesion."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "HydraLANet": ".network",
    "count_parameters": ".network",
    "HydraHead": ".heads",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
__all__ = sorted(_EXPORTS)
