from __future__ import annotations

import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations phones home at import otherwise
# The two test workers (and the servers, CLIs and training runs they start) share the cores:
# an OpenMP thread waiting for its siblings sleeps instead of spinning, so a busy core is not
# spent spinning on a sibling that is not running (test_fast.py alone on a loaded 2-core
# machine: 95 s of CPU spinning, 35 s passive). Set before torch loads its OpenMP runtime;
# every subprocess inherits it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


# The test files that take longest, longest first: they start first, so the two worker
# processes (pyproject.toml's addopts) finish together; the rest follow in their usual order.
LONGEST_FIRST = (
    "test_train.py",
    "test_page.py",
    "test_pipeline.py",
    "test_fast.py",
    "test_app.py",
    "test_original.py",
    "test_browser.py",
    "test_structure.py",
    "test_onnx.py",
    "test_reading.py",
    "test_cli.py",
    "test_openvino.py",
    "test_dicom.py",
    "test_bundle.py",
    "test_packaging.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's tests keep their order


@pytest.fixture(autouse=True)
def _restore_main_module():
    """Streamlit's script runner (AppTest) installs the app as ``sys.modules["__main__"]`` and
    leaves it there; a later ``spawn`` child would then re-run app.py at start-up and die."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture(scope="session")
def retina() -> np.ndarray:
    """The CC0 fundus photo shipped with scikit-image (1411 x 1411 RGB, a normal eye)."""
    from skimage import data

    return data.retina()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> os.PathLike:
    """A small random checkpoint folder (resnet18, D=8, 128 px) made by the project's script."""
    from training.untrained import make_untrained

    return make_untrained(tmp_path_factory.mktemp("ckpt") / "tiny", decoder_channels=8, input_size=128, seed=3)


from .conftest_hub import hub  # noqa: E402,F401 - the local Hugging Face Hub stand-in fixture
