"""Names and errors of the checkpoint format (docs/architecture.md#checkpoint-format), and how a weights file is found.

A leaf module: :mod:`checkpoint` (loading) and :mod:`hub` (downloading) both need these and
neither imports the other's internals through it.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
# The weights of a folder written by ``python -m hydralanet export --format onnx`` (run with ONNX Runtime).
ONNX_NAME = "model.onnx"
# ... and by ``--format openvino``: OpenVINO IR, the graph and its weights (run with OpenVINO).
OPENVINO_NAME, OPENVINO_WEIGHTS = "model.xml", "model.bin"
CHECKPOINT_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)
# Pickled PyTorch files: read only on explicit opt-in, and then with weights_only=True.
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
# Weights files a folder or repo without config.json is searched for (any subfolder): what the
# original HydraLA-Net code writes (runs/<name>/best_model.pt) and the usual other names.
CANDIDATE_NAMES = ("best_model.pt", "model.pt")
CANDIDATE_SUFFIXES = (".pth", ".safetensors")
CANDIDATES_TEXT = "best_model.pt, model.pt, *.pth, *.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message is one line naming the source."""


def is_pickle(path: str | Path) -> bool:
    return Path(path).suffix.lower() in PICKLE_SUFFIXES


def pickle_refusal(label: str, name: str) -> str:
    return (
        f"{label}: {Path(name).name} is a pickled PyTorch file; refusing to unpickle it. Convert it to safetensors "
        "(python -m hydralanet convert), or pass allow_pickle=True (CLI: --allow-pickle; app: "
        "HYDRALANET_ALLOW_PICKLE=1) if you trust its origin"
    )


def weight_candidates(paths: list[str]) -> list[str]:
    """The weights files among repo-relative POSIX ``paths``, sorted; hidden folders skipped."""
    found = []
    for path in paths:
        p = PurePosixPath(path)
        if any(part.startswith(".") for part in p.parts):
            continue
        if p.name in CANDIDATE_NAMES or p.suffix.lower() in CANDIDATE_SUFFIXES:
            found.append(str(p))
    return sorted(found)


def folder_files(folder: Path) -> list[str]:
    """Every file under ``folder`` as a POSIX path relative to it (links followed)."""
    return [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]


def several_candidates(where: str, candidates: list[str], how: str) -> str:
    shown = ", ".join(candidates[:6]) + (f" and {len(candidates) - 6} more" if len(candidates) > 6 else "")
    return f"{where}: {len(candidates)} weights files ({shown}); name one: {how}"
