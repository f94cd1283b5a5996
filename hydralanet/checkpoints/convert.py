"""``python -m hydralanet convert``: any loadable weights -> a checkpoint folder, and back to the
original HydraLA-Net code's ``best_model.pt`` layout.

After converting once, nothing needs unpickling again: the folder holds safetensors.
"""

from __future__ import annotations

import io
import os
from dataclasses import replace
from pathlib import Path

import torch

from ..config import CLASSES, CheckpointConfig, format_threshold, validate_thresholds
from ..io.images import write_atomic
from .folder import default_model_card, save_checkpoint
from .original import ORIGINAL_LAYOUT, to_original
from .read import Checkpoint, read_checkpoint


def convert_to_folder(
    source: str | os.PathLike | None,
    out: str | os.PathLike,
    *,
    allow_pickle: bool = False,
    name: str | None = None,
    thresholds: dict[str, float] | None = None,
    crop: str | None = None,
) -> tuple[Path, Checkpoint]:
    """Write ``source`` (anything :func:`~hydralanet.checkpoints.read.read_checkpoint` reads) as a standard checkpoint folder:
    ``model.safetensors`` (float32, exactly the loaded weights), ``config.json`` (``name``,
    ``thresholds`` and ``crop`` override what the source says) and a model card saying where it
    came from and that its metrics are unknown until scored."""
    loaded = read_checkpoint(source, allow_pickle=allow_pickle)
    config = loaded.config
    provenance = dict(config.provenance)
    provenance.update(
        {
            "converted_by": "python -m hydralanet convert",
            "source": loaded.identity["source"],
            "source_file": loaded.identity["file"],
            "source_revision": loaded.identity["revision"],
            "source_sha256": loaded.identity["sha256"],
        }
    )
    config = CheckpointConfig(
        model=config.model,
        preprocessing=replace(config.preprocessing, crop=crop) if crop else config.preprocessing,
        thresholds=validate_thresholds({**config.thresholds, **(thresholds or {})}),
        name=name or config.name,
        provenance=provenance,
    )
    folder = save_checkpoint(loaded.model, out, config, model_card=converted_model_card(config, loaded))
    return folder, loaded


def export_original(
    source: str | os.PathLike | None, out: str | os.PathLike, *, allow_pickle: bool = False
) -> tuple[Path, Checkpoint]:
    """Write ``source`` as a plain state dict in the original layout (``torch.save``), which the
    original code loads with ``strict=True``: folded biases and the unused FFB convolutions are
    zeros. Written atomically."""
    loaded = read_checkpoint(source, allow_pickle=allow_pickle)
    state = {k: v.detach().cpu().contiguous() for k, v in loaded.model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(to_original(state, loaded.config.model), buffer)
    out = Path(out)
    write_atomic(out, buffer.getvalue())
    return out, loaded


def converted_model_card(config: CheckpointConfig, loaded: Checkpoint) -> str:
    """The card of a converted checkpoint: where it came from, what is not known about it."""
    provenance = config.provenance
    origin = provenance.get("converted_from") or "a state dict"
    where = provenance["source"] + (
        f" (revision {provenance['source_revision']})" if provenance.get("source_revision") else ""
    )
    base = default_model_card(config, loaded.model).rstrip("\n").split("\n")
    notice = base.pop()  # the research-software line goes last
    lines = base[:-1] + [
        "",
        "## Where it came from",
        "",
        f"Converted by `python -m hydralanet convert` from {origin}: file `{provenance['source_file']}` of "
        f"`{where}`, sha256 `{provenance['source_sha256']}`. The weights are the same numbers"
        + (
            " (biases of the convolutions before BatchNorm folded into its running mean; an exact rewrite)."
            if origin == ORIGINAL_LAYOUT
            else "."
        ),
        "",
        f"Preprocessing: CLAHE `{config.preprocessing.clahe}` (clip {config.preprocessing.clip_limit}, "
        f"{config.preprocessing.tile_grid}x{config.preprocessing.tile_grid} tiles), "
        f"{config.preprocessing.input_size} px, crop `{config.preprocessing.crop}`"
        + (
            " (the photo's centre square, as the original code trained)."
            if config.preprocessing.crop == "centre_square"
            else "."
        ),
        "Thresholds: "
        + ", ".join(f"{c} {format_threshold(config.thresholds[c])}" for c in CLASSES)
        + " (the original code's 0.35 unless set at conversion).",
        "",
        "## Metrics",
        "",
        "Unknown: nothing about this model's accuracy was recorded with it. Score it on data with "
        "labels before relying on it, e.g.",
        "",
        "```bash",
        "python -m training.prepare --idrid IDRiD --out runs/idrid.csv",
        "python -m training.evaluate --model THIS_FOLDER --manifest runs/idrid.csv --split test --out runs/eval",
        "```",
        "",
        notice,
        "",
    ]
    return "\n".join(lines)
