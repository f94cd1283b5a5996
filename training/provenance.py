"""What a trained checkpoint records about how it was made: the data it saw, the settings,
the code, and the validation scores of the epoch it comes from (``config.json``'s provenance).
Shared by ``training.train`` and ``training.average``."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from hydralanet.config import CheckpointConfig

from .config import TrainConfig


def code_version() -> str:
    """``git describe`` of the code that trained the model, else the package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from hydralanet import __version__

    return f"hydralanet {__version__}"


def checkpoint_config(
    cfg: TrainConfig,
    provenance: dict[str, Any],
    thresholds: dict[str, float],
    metrics: dict[str, Any],
    epoch: int,
    calibration: dict[str, tuple[float, float]] | None = None,
) -> CheckpointConfig:
    """What ``config.json`` of ``best``/``last`` holds: the run's provenance plus this epoch's
    validation metrics, thresholds and calibration."""
    return CheckpointConfig(
        calibration=calibration,
        model=cfg.model,
        preprocessing=cfg.preprocessing,
        thresholds=thresholds,
        name=f"hydralanet-{cfg.model.encoder}-d{cfg.model.decoder_channels}-{cfg.preprocessing.input_size}px",
        provenance={
            **provenance,
            "epoch": epoch + 1,
            "metrics": {"val": {k: v for k, v in metrics.items() if k != "loss"}},
            "metrics_note": {
                "val": f"Epoch {epoch + 1}, on the {cfg.preprocessing.input_size} px model input inside the field of "
                "view; F1, IoU, precision and recall at the thresholds above."
            },
        },
    )


def describe_data(rows: list[dict[str, Any]]) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """Images per (source, split) and per split: the provenance of a checkpoint."""
    datasets: dict[str, dict[str, int]] = {}
    for r in rows:
        counts = datasets.setdefault(str(r["source"]), {})
        counts[r["split"]] = counts.get(r["split"], 0) + 1
    splits: dict[str, int] = {}
    for counts in datasets.values():
        for split, n in counts.items():
            splits[split] = splits.get(split, 0) + n
    return datasets, splits


def training_provenance(rows: list[dict[str, Any]], cfg: TrainConfig, command: str, code: str) -> dict[str, Any]:
    """What every checkpoint of a training run records about it: the data, the command, the
    code (``code``: :func:`code_version`) and the settings."""
    datasets, split_sizes = describe_data(rows)
    return {
        "trained": True,
        "datasets": datasets,
        "split_sizes": split_sizes,
        "train_split": cfg.train_split,
        "val_split": cfg.val_split,
        "thresholds_tuned": cfg.tune_thresholds,
        "command": command,
        "code_version": code,
        "training_config": cfg.to_dict(),
    }
