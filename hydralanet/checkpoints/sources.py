"""Where a checkpoint source's files are (docs/architecture.md#checkpoint-format): the bundled model, a local folder or
file, or a Hugging Face Hub repo or Space (downloaded by :mod:`hydralanet.checkpoints.hub`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from .format import (
    CANDIDATES_TEXT,
    CONFIG_NAME,
    ONNX_NAME,
    OPENVINO_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    folder_files,
    several_candidates,
    weight_candidates,
)
from .hub import parse_hub_source

# The bundled model: weights/ in a checkout of the repository; hydralanet/bundled/ once installed.
_PACKAGED = Path(__file__).resolve().parent.parent / "bundled"
BUNDLED_DIR = _PACKAGED if (_PACKAGED / CONFIG_NAME).exists() else Path(__file__).resolve().parents[2] / "weights"


@dataclass(frozen=True)
class Located:
    """Where a source's files are: the weights file, the config.json to use (or None), how to
    name the source in messages, the Hub revision, and the weights file as people name it."""

    weights: Path
    config: Path | None
    label: str
    revision: str | None = None
    file: str = WEIGHTS_NAME


def locate(source: str | os.PathLike | None, *, allow_pickle: bool) -> Located:
    if source is None or str(source) == "":
        label = "bundled model (weights/)"
        if not (BUNDLED_DIR / CONFIG_NAME).exists():
            raise CheckpointError(
                f"{label}: no {CONFIG_NAME} in {BUNDLED_DIR}; reinstall hydralanet or restore weights/ from git"
            )
        return Located(BUNDLED_DIR / WEIGHTS_NAME, BUNDLED_DIR / CONFIG_NAME, label)
    path = Path(source).expanduser()
    label = str(source)
    if path.is_dir():
        return in_folder(path, label, hint=f"pass the file itself, e.g. {path / '<file>'}")
    if path.is_file():
        beside = path.parent / CONFIG_NAME
        return Located(path, beside if beside.exists() else None, label, file=path.name)
    hub = parse_hub_source(str(source))
    if hub is None or path.parent.is_dir() and str(path.parent) not in ("", "."):
        # A path whose folder exists here is a mistyped local path, not a Hub repo.
        raise CheckpointError(
            f"{label}: no such file or folder, and not a Hub repo id (expected [spaces/]owner/name[@revision][:path])"
        )
    from .hub import download_checkpoint  # imported lazily: huggingface_hub is slow to import

    folder, revision, chosen = download_checkpoint(hub, allow_pickle=allow_pickle)
    # Also when the Hub was offline and the cached snapshot must be searched for the weights.
    located = in_folder(folder, label, chosen=chosen, hint=f"{hub.where.split('@')[0]}[@revision]:PATH")
    return replace(located, revision=revision)


def in_folder(folder: Path, label: str, *, chosen: str | None = None, hint: str) -> Located:
    """A checkpoint folder (config.json + model.safetensors), or the one weights file in it."""
    if chosen is None and (folder / CONFIG_NAME).exists():
        for exported in (ONNX_NAME, OPENVINO_NAME):  # folders python -m hydralanet export wrote
            if not (folder / WEIGHTS_NAME).exists() and (folder / exported).exists():
                return Located(folder / exported, folder / CONFIG_NAME, label, file=exported)
        return Located(folder / WEIGHTS_NAME, folder / CONFIG_NAME, label)
    if chosen is None:
        candidates = weight_candidates(folder_files(folder))
        if not candidates:
            raise CheckpointError(
                f"{label}: {CONFIG_NAME} is missing (a checkpoint folder needs config.json) and no weights file "
                f"({CANDIDATES_TEXT}) is in it"
            )
        if len(candidates) > 1:
            raise CheckpointError(several_candidates(label, candidates, hint))
        chosen = candidates[0]
    weights = folder / chosen
    if not weights.is_file():
        raise CheckpointError(f"{label}: {chosen} is missing")
    beside = weights.parent / CONFIG_NAME
    return Located(weights, beside if beside.exists() else None, label, file=chosen)
