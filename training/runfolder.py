"""What a run folder holds besides the weights, and how it is written safely.

    RUN/best/, RUN/last/      checkpoint folders (hydralanet format); ``last`` adds the training state:
    RUN/last/training_state.safetensors + .json   optimizer, RNG states, counters (no pickle)
    RUN/metrics.jsonl         one line per finished epoch
    RUN/curves.png            loss and validation F1 / AUPR per lesion against the epoch

``last`` is written aside and swapped in as one folder, so the weights and the state that
resumes from them always belong together; a crash leaves the previous epoch's folder.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hydralanet.checkpoints.folder import save_checkpoint
from hydralanet.checkpoints.format import WEIGHTS_NAME
from hydralanet.config import CLASSES, CheckpointConfig
from hydralanet.io.images import atomic_file, write_atomic

from .modelcard import json_safe

STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"


def training_state(
    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loader_gen: torch.Generator, info: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Everything besides the weights that an exact resume needs, as (tensors, JSON).

    Tensors go to safetensors and the rest to JSON, so resuming never unpickles anything.
    """
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in opt["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    np_state = np.random.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.loader"] = loader_gen.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np_state[1].astype(np.int64))
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    py_state = random.getstate()
    meta = {
        **info,
        "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars, "params": sorted(opt["state"])},
        "scaler": scaler.state_dict(),
        "rng": {
            "python": [py_state[0], list(py_state[1]), py_state[2]],
            "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        },
    }
    return tensors, meta


def restore_training_state(
    folder: Path, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loader_gen: torch.Generator
) -> dict[str, Any]:
    """Load what :func:`training_state` wrote into the live objects; returns the JSON part."""
    tensors = load_file(str(folder / STATE_TENSORS))
    meta = json.loads((folder / STATE_JSON).read_text())
    opt = meta["optimizer"]
    state: dict[int, dict[str, Any]] = {}
    for pid in opt["params"]:
        state[pid] = dict(opt["scalars"].get(str(pid), {}))
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, pid, key = name.split(".", 2)
            state[int(pid)][key] = value
    # JSON turned tuples (AdamW's betas) into lists; hand them back as the optimizer made them.
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()} for g in opt["param_groups"]
    ]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    if meta["scaler"]:
        scaler.load_state_dict(meta["scaler"])
    torch.set_rng_state(tensors["rng.torch"])
    loader_gen.set_state(tensors["rng.loader"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(tensors["rng.cuda"]))
    kind, pos, has_gauss, cached = meta["rng"]["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = meta["rng"]["python"]
    random.setstate((version, tuple(internal), gauss))
    return meta


def publish_folder(staging: Path, final: Path) -> None:
    """Swap a complete folder into place. A crash between the two renames leaves
    ``.<name>.old``, which :func:`find_last` falls back to."""
    old = final.parent / f".{final.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def find_last(run: Path) -> Path | None:
    for candidate in (run / "last", run / ".last.old"):
        if (candidate / STATE_JSON).exists() and (candidate / WEIGHTS_NAME).exists():
            return candidate
    return None


def save_last(out: Path, model: nn.Module, ckpt: CheckpointConfig, card: str, state: tuple[dict, dict]) -> None:
    """``out/last``: checkpoint + training state, built aside and swapped in as one folder, so
    the weights and the state that resumes from them always belong together."""
    staging = out / ".last.staging"
    shutil.rmtree(staging, ignore_errors=True)
    save_checkpoint(model, staging, ckpt, model_card=card)
    tensors, meta = state
    save_file(tensors, str(staging / STATE_TENSORS))
    (staging / STATE_JSON).write_text(json.dumps(meta) + "\n")
    publish_folder(staging, out / "last")


# --------------------------------------------------------------------------- logging


def read_metrics_log(path: Path, before_epoch: int | None = None) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if before_epoch is None or r["epoch"] < before_epoch]


def write_metrics_log(path: Path, records: list[dict[str, Any]]) -> None:
    """Rewrite the whole log atomically (it is small); NaN (no AUPR without lesion pixels) -> null."""
    write_atomic(path, "".join(json.dumps(json_safe(r), sort_keys=True) + "\n" for r in records).encode())


def plot_curves(records: list[dict[str, Any]], path: Path) -> None:
    """Loss (train, validation) and validation F1 / AUPR per class against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hydralanet.report.overlay import COLOURS

    epochs = [r["epoch"] + 1 for r in records]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(epochs, [r["train_loss"] for r in records], label="train")
    axes[0].plot(epochs, [r["val"]["loss"] for r in records], label="validation")
    axes[0].set_title("loss")
    for ax, key in zip(axes[1:], ("f1", "aupr")):
        for c in (*CLASSES, "macro"):
            colour = np.asarray(COLOURS[c]) / 255 if c in COLOURS else "black"
            values = [np.nan if r["val"][c][key] is None else r["val"][c][key] for r in records]
            ax.plot(epochs, values, label=c, color=colour, lw=2 if c == "macro" else 1)
        ax.set_title(f"validation {key.upper()}")
        ax.set_ylim(0, 1)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def save_figure(fig, path: Path, *, dpi: int = 100) -> None:
    """Write a matplotlib figure as PNG atomically (temporary name, then rename) and close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_file(path) as fh:
            fig.savefig(fh, format="png", dpi=dpi)
    finally:
        plt.close(fig)
