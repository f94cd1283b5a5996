"""Module paths that the reorganisation into subpackages moved (CHANGELOG.md lists them).

Importing one still works for one more release, with a :class:`DeprecationWarning` naming the new place:
the old module is a stand-in that looks each name up in the modules now holding it. Paths
that are packages now (``hydralanet.io``, ``.model``, ``.inference``, ``.reading``,
``.report``) are not stand-ins: they export their public names themselves.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any

# old module -> the modules holding its names now, the main one first
MOVED: dict[str, tuple[str, ...]] = {
    "dicom": ("io.dicom",),
    "system": ("io.system",),
    "encoder": ("model.encoder",),
    "blocks": ("model.blocks",),
    "heads": ("model.heads",),
    "checkpoint_format": ("checkpoints.format",),
    "checkpoint_io": ("checkpoints.folder",),
    "sources": ("checkpoints.sources",),
    "hub": ("checkpoints.hub",),
    "original": ("checkpoints.original",),
    "convert": ("checkpoints.convert",),
    "checkpoint": (
        "inference.loaded",
        "checkpoints.read",
        "checkpoints.folder",
        "checkpoints.format",
        "checkpoints.sources",
        "inference.device",
    ),
    "forward": ("inference.forward", "inference.device"),
    "tiling": ("inference.tiling",),
    "fast": ("inference.fast", "inference.device"),
    "working": ("inference.working",),
    "onnx_model": ("inference.onnx_model",),
    "openvino_model": ("inference.openvino_model",),
    "export": ("inference.export",),
    "landmarks": ("reading.landmarks",),
    "landmark_head": ("reading.landmark_head",),
    "zones": ("reading.zones", "reading.grading"),
    "quality": ("reading.quality",),
    "overlay": ("report.overlay",),
    "pdf_report": ("report.pdf",),
    "runner": ("batch.runner",),
    "pipeline": ("batch.pipeline",),
    "outputs": ("batch.outputs",),
    "combined": ("batch.combined",),
}


def _caller_level() -> int:
    """The ``stacklevel`` that points the warning at the ``import`` statement, past importlib."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and (frame.f_code.co_filename == __file__ or "importlib" in frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    return level


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        package, _, old = fullname.rpartition(".")
        if package != __package__ or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        homes = tuple(f"{__package__}.{name}" for name in MOVED[module.__name__.rpartition(".")[2]])
        warnings.warn(
            f"{module.__name__} is now {homes[0]}; the old path is deprecated and goes away in the release after next (CHANGELOG.md)",
            DeprecationWarning,
            stacklevel=_caller_level(),
        )

        def __getattr__(name: str) -> Any:
            for home in homes:
                found = importlib.import_module(home)
                if hasattr(found, name):
                    return getattr(found, name)
            raise AttributeError(f"module {module.__name__!r} has no attribute {name!r} (see CHANGELOG.md)")

        module.__getattr__ = __getattr__


def install() -> None:
    """Let the old paths import (once per process)."""
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModules())
