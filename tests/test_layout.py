"""The library's public names: each subpackage's API resolves, and the module paths that the
reorganisation into subpackages moved still import, with a DeprecationWarning (CHANGELOG.md)."""

from __future__ import annotations

import importlib
import sys

import pytest

import hydralanet
from hydralanet._moved import MOVED

SUBPACKAGES = ("io", "model", "checkpoints", "inference", "reading", "report", "batch")


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_each_subpackage_exports_what_it_lists(name: str) -> None:
    package = importlib.import_module(f"hydralanet.{name}")
    assert package.__all__, name
    for public in package.__all__:
        value = getattr(package, public)
        home = importlib.import_module(package._EXPORTS[public], package.__name__)
        assert value is getattr(home, public)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        package.nothing_here  # noqa: B018


def test_the_root_exports_resolve_to_their_modules() -> None:
    for public in hydralanet.__all__:
        assert getattr(hydralanet, public) is not None
    from hydralanet.inference.segment import predict

    assert hydralanet.predict is predict


def _fresh(name: str) -> None:
    sys.modules.pop(name, None)
    parent, _, child = name.rpartition(".")
    if child in vars(sys.modules[parent]):
        delattr(sys.modules[parent], child)


def test_an_old_path_warns_and_gives_the_same_objects() -> None:
    _fresh("hydralanet.zones")
    with pytest.warns(DeprecationWarning, match=r"hydralanet\.zones is now hydralanet\.reading\.zones"):
        from hydralanet.zones import DME_EXUDATE_PEAK, read_zones
    from hydralanet.reading.grading import DME_EXUDATE_PEAK as peak
    from hydralanet.reading.zones import read_zones as new

    assert read_zones is new and peak == DME_EXUDATE_PEAK


def test_a_split_module_finds_each_name_where_it_went() -> None:
    _fresh("hydralanet.checkpoint")
    with pytest.warns(DeprecationWarning, match=r"hydralanet\.checkpoint is now hydralanet\.inference\.loaded"):
        from hydralanet.checkpoint import CheckpointError, load_model, resolve_device, save_checkpoint
    from hydralanet.checkpoints.folder import save_checkpoint as saver
    from hydralanet.checkpoints.format import CheckpointError as error
    from hydralanet.inference.device import resolve_device as device
    from hydralanet.inference.loaded import load_model as loader

    assert (CheckpointError, load_model, resolve_device, save_checkpoint) == (error, loader, device, saver)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name' \\(see CHANGELOG.md\\)"):
        sys.modules["hydralanet.checkpoint"].no_such_name  # noqa: B018


def test_every_moved_path_imports() -> None:
    for old, homes in MOVED.items():
        for home in homes:
            importlib.import_module(f"hydralanet.{home}")
        _fresh(f"hydralanet.{old}")
        with pytest.warns(DeprecationWarning, match=f"hydralanet.{old} is now hydralanet.{homes[0]}"):
            importlib.import_module(f"hydralanet.{old}")


def test_paths_that_became_packages_are_not_stand_ins() -> None:
    assert not set(MOVED) & {"io", "model", "inference", "reading", "report"}
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("hydralanet.no_such_module")
