"""Average the weights of runs that share an ancestor, then tune thresholds on validation.

    python -m training.average --runs runs/a runs/b [--weights 0.5,0.5] --manifest M.csv --out runs/avg

Each run's ``best`` checkpoint is read, or the checkpoint folder itself where an entry is one
(``RUN/last``, or ``RUN/epochs/NNN`` kept by ``--set keep_epochs=N``: averaging the epochs of one
run, as in stochastic weight averaging). Same architecture, checked; every floating-point
tensor (weights and BatchNorm statistics) becomes the weighted mean, integer counters are
taken from the last run. This is weight-space ensembling (WiSE-FT, Wortsman et al. 2022):
a fine-tuned model averaged with the model it started from keeps most of the fine-tuning's
gain on its own data and much of the earlier model's behaviour under distribution shift. It
only makes sense for runs fine-tuned from one another; runs from different random starts
average to noise.

The average is scored on the validation split of the last run's settings (``train_config.json``:
preprocessing, cache, batch size) exactly as training scores an epoch, and written as
``OUT/best`` with thresholds tuned there, so ``training.bundle`` and ``training.evaluate``
treat it like any run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from hydralanet import load_model, save_checkpoint
from hydralanet.checkpoints.format import CheckpointError
from hydralanet.io.images import write_atomic

from .config import TrainConfig
from .data import LesionDataset, open_cache, split_rows
from .losses import DualLoss
from .prepare import read_manifest
from .provenance import checkpoint_config, describe_data
from .validation import validate


def average_states(states: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """The weighted mean of state dicts with the same keys and shapes (floats); integer
    tensors (BatchNorm's batch counters) from the last one."""
    keys = list(states[-1])
    for i, state in enumerate(states):
        if list(state) != keys or any(state[k].shape != states[-1][k].shape for k in keys):
            raise ValueError(f"run {i + 1} does not have the same tensors as the last run")
    total = sum(weights)
    out = {}
    for k in keys:
        ref = states[-1][k]
        if ref.is_floating_point():
            mean = sum(w / total * s[k].double() for w, s in zip(weights, states))
            out[k] = mean.to(ref.dtype)
        else:
            out[k] = ref.clone()
    return out


def checkpoint_folder(entry: Path) -> Path:
    """``entry/best`` for a training run folder, else ``entry`` itself when it is a checkpoint folder."""
    if (entry / "best").is_dir():
        return entry / "best"
    if (entry / "config.json").is_file():
        return entry
    raise FileNotFoundError(
        f"{entry}: no best/ checkpoint and no config.json (neither a training run nor a checkpoint folder)"
    )


def run_settings(entry: Path) -> Path:
    """The ``train_config.json`` of the run ``entry`` belongs to: its own, or that of the run
    holding it (``RUN/last``, ``RUN/epochs/NNN``)."""
    for folder in (entry, entry.parent, entry.parent.parent):
        if (folder / "train_config.json").is_file():
            return folder / "train_config.json"
    raise FileNotFoundError(
        f"{entry}: no train_config.json in it or the run above it (the last entry's settings pick the validation data)"
    )


def average_runs(runs: list[Path], weights: list[float], manifest: Path, out: Path) -> dict[str, Any]:
    """Average the checkpoints of ``runs`` (:func:`checkpoint_folder`), validate, write ``out/best``;
    returns the validation metrics."""
    if len(runs) < 2:
        raise ValueError("give at least two runs to average")
    if len(weights) != len(runs) or any(not w >= 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"--weights needs one number >= 0 per run ({len(runs)}), not all 0; got {weights}")
    start = time.time()
    loaded = [load_model(checkpoint_folder(run), device="cpu") for run in runs]
    arch = loaded[-1].config.model
    for run, m in zip(runs, loaded):
        if m.config.model != arch:
            raise ValueError(
                f"{run}: architecture {m.config.model.encoder}/D={m.config.model.decoder_channels} "
                f"differs from {runs[-1]} ({arch.encoder}/D={arch.decoder_channels})"
            )
    model = loaded[-1].model
    model.load_state_dict(average_states([m.model.state_dict() for m in loaded], weights))

    config_path = run_settings(runs[-1])
    cfg = TrainConfig.from_dict(json.loads(config_path.read_text()))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rows = read_manifest(manifest)
    val_rows = split_rows(rows, cfg.val_split)
    if not val_rows:
        raise ValueError(f"{manifest}: no rows in split {cfg.val_split!r} to tune thresholds on")
    loader = DataLoader(
        LesionDataset(val_rows, cfg.preprocessing, cache=open_cache(cfg, config_path.parent)),
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
    )
    metrics, thresholds, calibration = validate(model, loader, DualLoss.from_config(cfg), cfg, torch.device("cpu"))

    last = loaded[-1].config.provenance
    datasets, split_sizes = describe_data(rows)
    provenance = {
        **{k: v for k, v in last.items() if k not in ("epoch", "metrics", "metrics_note")},
        "datasets": datasets,
        "split_sizes": split_sizes,
        "averaged": {
            "runs": [str(r) for r in runs],
            "weights": weights,
            "epochs": [m.config.provenance.get("epoch") for m in loaded],
        },
    }
    ckpt = checkpoint_config(cfg, provenance, thresholds, metrics, (last.get("epoch") or 1) - 1, calibration)
    ckpt.provenance["metrics_note"]["val"] = (
        f"The weight average of {len(runs)} runs, on the {cfg.preprocessing.input_size} px model input inside the "
        "field of view; F1, IoU, precision and recall at the thresholds above."
    )
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, out / "best", ckpt)
    write_atomic(
        out / "metrics.json",
        (
            json.dumps({"val": metrics, "thresholds": thresholds, "seconds": round(time.time() - start, 1)}, indent=2)
            + "\n"
        ).encode(),
    )
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.average", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--runs",
        nargs="+",
        required=True,
        type=Path,
        help="training run folders (their best/ is used) or checkpoint folders of runs (RUN/last, RUN/epochs/NNN)",
    )
    parser.add_argument(
        "--weights", default=None, help="comma-separated, one per run (default: equal); normalised to sum 1"
    )
    parser.add_argument("--manifest", required=True, type=Path, help="the manifest the runs trained on")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        weights = [1.0] * len(args.runs) if args.weights is None else [float(w) for w in args.weights.split(",")]
        metrics = average_runs(args.runs, weights, args.manifest, args.out)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        "validation AUPR "
        + ", ".join(f"{c} {v['aupr']:.3f}" for c, v in metrics.items() if isinstance(v, dict))
        + f" -> {args.out / 'best'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
