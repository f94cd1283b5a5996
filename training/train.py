"""Train HydraLA-Net on a manifest.

    python -m training.train --manifest M.csv --config published|cpu-small|FILE.json --out RUN \
        [--set key=value ...] [--resume]
    torchrun --nproc_per_node N -m training.train ...        (DDP: one process per GPU, or gloo on CPU)

Writes ``RUN/best`` and ``RUN/last`` (hydralanet checkpoint folders; ``last`` also holds the
training state for ``--resume``), ``RUN/metrics.jsonl`` (one line per epoch),
``RUN/curves.png`` and ``RUN/train_config.json``.

Exact resume: checkpoints are taken at epoch ends only; a resumed run restarts the interrupted
epoch from its start with the weights, optimizer and RNG states saved at the end of the
previous epoch. Shuffling (``DistributedSampler``: seed + epoch) and augmentation (seed,
epoch, index) are functions of the epoch, so the resumed epoch sees the same batches.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from hydralanet.checkpoints.folder import save_checkpoint
from hydralanet.checkpoints.format import WEIGHTS_NAME
from hydralanet.inference.loaded import load_model
from hydralanet.model.network import HydraLANet, count_parameters

from .config import TrainConfig, resolve_run_config, save_config
from .data import (
    LesionDataset,
    build_augmentation,
    build_photometric,
    open_cache,
    split_rows,
    with_hard_negatives,
    worker_init_fn,
)
from .losses import DualLoss
from .modelcard import render_model_card
from .prepare import read_manifest
from .provenance import checkpoint_config, code_version, training_provenance
from .runfolder import (
    find_last,
    plot_curves,
    read_metrics_log,
    restore_training_state,
    save_last,
    training_state,
    write_metrics_log,
)
from .runtime import Dist, seed_everything
from .sampling import WeightedEpochSampler, epoch_sampler
from .validation import amp_dtype, validate


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; training cannot continue from here."""


# --------------------------------------------------------------------------- small pure pieces


def get_lr(step: int, cfg: TrainConfig, total_steps: int, warmup_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup, then constant or cosine."""
    if step < warmup_steps:
        return cfg.lr * (step + 1) / warmup_steps
    if not cfg.cosine:
        return cfg.lr
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    min_lr = cfg.lr * cfg.min_lr_ratio
    return min_lr + 0.5 * (cfg.lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def freeze_batchnorm(model: nn.Module) -> None:
    """BatchNorm in eval mode (running statistics used, not updated) with its affine frozen.

    ``model.train()`` puts BN back in training mode, so call this after every ``train()``.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            for param in module.parameters():
                param.requires_grad_(False)


def initial_weights(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """The state dict of ``cfg.init_weights`` (float32), after checking that its architecture
    is the one being trained."""
    loaded = load_model(cfg.init_weights, device="cpu")
    if loaded.config.model != cfg.model:
        raise ValueError(
            f"init_weights={cfg.init_weights!r} is a {loaded.config.model.encoder}/D={loaded.config.model.decoder_channels} "
            f"model, but the config trains {cfg.model.encoder}/D={cfg.model.decoder_channels}; they must match"
        )
    return {k: v.float() if v.is_floating_point() else v for k, v in loaded.model.state_dict().items()}


# --------------------------------------------------------------------------- the run


def train(
    rows: list[dict[str, Any]], cfg: TrainConfig, out: Path, *, resume: bool = False, command: str = ""
) -> dict[str, Any]:
    """Run (or resume) training on manifest rows (:func:`training.prepare.read_manifest`);
    returns the final summary. Raises :class:`NonFiniteLoss`."""
    ddp = Dist()
    cv2_threads = cv2.getNumThreads()
    if cfg.num_workers > 0:
        # Loader workers inherit OpenCV's pool: 15 workers x 16 threads fought over 16 cores.
        # Set here, before any worker forks (resizing an inherited pool inside a worker deadlocked).
        cv2.setNumThreads(1)
    try:
        return _train(rows, cfg, out, ddp, resume=resume, command=command)
    finally:
        cv2.setNumThreads(cv2_threads)
        ddp.close()


@dataclass
class _Data:
    """The loaders of a run and the schedule's length in optimizer steps."""

    train_set: LesionDataset
    val_set: LesionDataset
    sampler: DistributedSampler | WeightedEpochSampler
    train_loader: DataLoader
    val_loader: DataLoader
    loader_gen: torch.Generator  # the loaders' shuffling and worker seeds; saved for --resume
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


@dataclass
class _Learner:
    """What learns and how: the model, its optimizer, the loss and the precision."""

    model: nn.Module  # the bare model: validation and checkpoints
    net: nn.Module  # what the training forward pass runs: the model, or its DDP wrapper
    params: list[nn.Parameter]  # the trainable ones
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    dtype: torch.dtype | None  # autocast dtype; None: float32


@dataclass
class _Progress:
    """Where the run stands; saved with ``last`` and restored by ``--resume``."""

    start_epoch: int = 0
    step: int = 0  # optimizer steps taken
    best: float = -1.0  # best validation macro ``monitor`` so far
    best_epoch: int = -1
    stale: int = 0  # epochs since the best

    def counters(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "step": self.step,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "stale_epochs": self.stale,
        }


@dataclass
class _Run:
    """Everything the epochs of one run share."""

    cfg: TrainConfig
    out: Path
    ddp: Dist
    log: Callable[..., None]  # print on rank 0, silent elsewhere
    data: _Data
    learner: _Learner
    progress: _Progress
    records: list[dict[str, Any]]  # metrics.jsonl: one record per finished epoch (rank 0)
    provenance: dict[str, Any]  # what every checkpoint of the run records about it


def _train(
    rows: list[dict[str, Any]], cfg: TrainConfig, out: Path, ddp: Dist, *, resume: bool, command: str
) -> dict[str, Any]:
    log = functools.partial(print, flush=True) if ddp.main else (lambda *a, **k: None)
    seed_everything(cfg.seed, cfg.deterministic)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = _build_data(rows, cfg, out, ddp, log)
    last = find_last(out) if resume else None
    if resume and last is None:  # stopped during its first epoch: resuming is starting over
        log(f"--resume: no checkpoint in {out} yet; starting from epoch 1")
    learner = _build_learner(cfg, last, ddp, log)
    progress = _Progress() if last is None else _restore(last, learner, data, cfg, log)
    records = read_metrics_log(out / "metrics.jsonl", before_epoch=progress.start_epoch) if ddp.main else []
    provenance = training_provenance(rows, cfg, command, code_version() if ddp.main else "")
    run = _Run(cfg, out, ddp, log, data, learner, progress, records, provenance)
    if ddp.main:
        _open_run_folder(run)

    loop_start = time.time()
    for epoch in range(progress.start_epoch, cfg.epochs):
        t0 = time.time()
        train_loss = _train_epoch(run, epoch)
        stop = False
        if ddp.main:  # validation, checkpoints and logs: rank 0 only; the other ranks wait
            stop = _end_epoch(run, epoch, train_loss, t0) or _out_of_time(run, epoch, loop_start, t0)
        ddp.barrier()
        if ddp.any(stop):
            break
    return {"best": progress.best, "best_epoch": progress.best_epoch + 1, "monitor": cfg.monitor, "run": str(out)}


def _build_data(rows: list[dict[str, Any]], cfg: TrainConfig, out: Path, ddp: Dist, log: Callable) -> _Data:
    """Datasets, sampler and loaders; shuffling is a function of (seed, epoch), on every rank."""
    train_rows, val_rows = split_rows(rows, cfg.train_split), split_rows(rows, cfg.val_split)
    train_rows = with_hard_negatives(train_rows, cfg.hard_negatives, cfg.preprocessing.input_size, log)
    cache = open_cache(cfg, out)
    train_set = LesionDataset(
        train_rows,
        cfg.preprocessing,
        augmentation=build_augmentation(cfg),
        cache=cache,
        photometric=build_photometric(cfg),
        seed=cfg.seed,
    )
    val_set = LesionDataset(val_rows, cfg.preprocessing, cache=cache)
    sampler = epoch_sampler(train_set, cfg, ddp.world, ddp.rank, log)
    loader_gen = torch.Generator().manual_seed(cfg.seed)
    loader_args = {
        "num_workers": cfg.num_workers,
        "worker_init_fn": worker_init_fn,
        "generator": loader_gen,
        "pin_memory": ddp.device.type == "cuda",
        "persistent_workers": False,  # workers must see set_epoch(): a fresh copy of the dataset per epoch
    }
    train_loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, **loader_args)
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, shuffle=False, **loader_args)
    steps_per_epoch = math.ceil(len(train_loader) / cfg.grad_accum)
    return _Data(
        train_set,
        val_set,
        sampler,
        train_loader,
        val_loader,
        loader_gen,
        steps_per_epoch,
        total_steps=cfg.epochs * steps_per_epoch,
        warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
    )


def _build_learner(cfg: TrainConfig, last: Path | None, ddp: Dist, log: Callable) -> _Learner:
    """The model (from ``last`` when resuming, ``init_weights`` when fine-tuning, else a fresh
    or ImageNet-initialised one), its optimizer, gradient scaler and loss."""
    device = ddp.device
    fine_tune = cfg.init_weights is not None and last is None
    model = HydraLANet.from_config(
        cfg.model, pretrained_encoder=cfg.pretrained_encoder and last is None and not fine_tune
    )
    if last is not None:
        model.load_state_dict(load_file(str(last / WEIGHTS_NAME)), strict=True)
    elif fine_tune:
        model.load_state_dict(initial_weights(cfg), strict=True)
        log(f"starting from the weights of {cfg.init_weights}")
    if cfg.freeze_bn:
        freeze_batchnorm(model)  # before the optimizer and DDP: both only see trainable parameters
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    # fused: one kernel for all parameters, ~8x faster than the per-tensor loop on CPU (measured)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=True)
    dtype = amp_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)  # fp16 only: bf16 needs no scaling
    loss_fn = DualLoss.from_config(cfg).to(device)
    net = (
        DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if ddp.enabled
        else model
    )
    return _Learner(model, net, params, optimizer, scaler, loss_fn, dtype)


def _restore(last: Path, learner: _Learner, data: _Data, cfg: TrainConfig, log: Callable) -> _Progress:
    """``--resume``: the optimizer, scaler and RNG states saved in ``last``, and its counters."""
    meta = restore_training_state(last, learner.optimizer, learner.scaler, data.loader_gen)
    progress = _Progress(meta["epoch"] + 1, meta["step"], meta["best"], meta["best_epoch"], meta["stale_epochs"])
    log(
        f"resuming from {last} after epoch {progress.start_epoch} (step {progress.step}, best {cfg.monitor} "
        f"{progress.best:.4f})"
    )
    return progress


def _open_run_folder(run: _Run) -> None:
    """Rank 0 at the start: the run folder, its ``train_config.json`` and a line about the run."""
    cfg, data = run.cfg, run.data
    run.out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run.out / "train_config.json")
    run.log(
        f"{count_parameters(run.learner.model) / 1e6:.2f} M parameters | train {len(data.train_set)} / val "
        f"{len(data.val_set)} images | {data.steps_per_epoch} steps per epoch x {cfg.epochs} epochs | device "
        f"{run.ddp.device} x {run.ddp.world} | amp {run.learner.dtype or 'off'}"
    )


def _train_epoch(run: _Run, epoch: int) -> float:
    """One pass over the training data, ``grad_accum`` micro-batches per optimizer step;
    returns the mean training loss over all ranks. Raises :class:`NonFiniteLoss`."""
    cfg, ddp, data, learner, progress = run.cfg, run.ddp, run.data, run.learner, run.progress
    device, net, optimizer, scaler = ddp.device, learner.net, learner.optimizer, learner.scaler
    data.sampler.set_epoch(epoch)
    data.train_set.set_epoch(epoch)
    net.train()
    if cfg.freeze_bn:
        freeze_batchnorm(learner.model)
    optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=device)
    n_batches = len(data.train_loader)
    bar = tqdm(
        data.train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not ddp.main, leave=False, file=sys.stderr
    )
    for i, batch in enumerate(bar):
        images, masks, valid = (batch[k].to(device, non_blocking=True).float() for k in ("image", "masks", "valid"))
        group_start = (i // cfg.grad_accum) * cfg.grad_accum
        group_size = min(cfg.grad_accum, n_batches - group_start)  # the last group may be short
        stepping = i + 1 == group_start + group_size
        # DDP all-reduces gradients on every backward; skip that until the group's last micro-batch.
        sync = net.no_sync() if ddp.enabled and not stepping else nullcontext()
        with sync:
            with torch.autocast(device.type, dtype=learner.dtype, enabled=learner.dtype is not None):
                output = net(images)
            loss = supervised_loss(output, masks, valid, learner.loss_fn, cfg)
            if ddp.any(not torch.isfinite(loss).item()):
                raise NonFiniteLoss(
                    f"loss is {loss.item()} at epoch {epoch + 1}, batch {i + 1}/{n_batches} (optimizer step "
                    f"{progress.step}); stopping"
                )
            scaler.scale(loss / group_size).backward()
        loss_sum += loss.detach()
        if stepping:
            lr = get_lr(progress.step, cfg, data.total_steps, data.warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(learner.params, cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            progress.step += 1
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
    bar.close()
    if ddp.enabled:
        dist.all_reduce(loss_sum)
    return float(loss_sum) / (n_batches * ddp.world)


def _end_epoch(run: _Run, epoch: int, train_loss: float, t0: float) -> bool:
    """Rank 0 after an epoch: validate, then log it and write ``best`` (when better), ``last``
    and the curves; returns whether early stopping ends the run."""
    cfg, data, learner, progress = run.cfg, run.data, run.learner, run.progress
    metrics, thresholds, calibration = validate(learner.model, data.val_loader, learner.loss_fn, cfg, run.ddp.device)
    score = metrics["macro"][cfg.monitor]
    improved = score > progress.best
    if improved:
        progress.best, progress.best_epoch, progress.stale = score, epoch, 0
    else:
        progress.stale += 1
    stop = cfg.patience > 0 and progress.stale >= cfg.patience
    run.records.append(
        {
            "epoch": epoch,
            "step": progress.step,
            "lr": get_lr(max(0, progress.step - 1), cfg, data.total_steps, data.warmup_steps),
            "train_loss": train_loss,
            "val": metrics,
            "thresholds": thresholds,
            "best": improved,
        }
    )
    write_metrics_log(run.out / "metrics.jsonl", run.records)  # first: resume drops lines past `last`
    ckpt = checkpoint_config(cfg, run.provenance, thresholds, metrics, epoch, calibration)
    card = render_model_card(ckpt, parameters=count_parameters(learner.model))
    if improved:
        save_checkpoint(learner.model, run.out / "best", ckpt, model_card=card)
    state = training_state(learner.optimizer, learner.scaler, data.loader_gen, progress.counters(epoch))
    save_last(run.out, learner.model, ckpt, card, state)
    if cfg.keep_epochs and (epoch + 1) % cfg.keep_epochs == 0:
        save_checkpoint(learner.model, run.out / "epochs" / f"{epoch + 1:03d}", ckpt, model_card=card)
    plot_curves(run.records, run.out / "curves.png")
    m = metrics["macro"]
    run.log(
        f"epoch {epoch + 1}/{cfg.epochs} done: train loss {train_loss:.4f} | val loss {metrics['loss']:.4f} "
        f"F1 {m['f1']:.4f} AUPR {m['aupr']:.4f} IoU {m['iou']:.4f}"
        + (" (best)" if improved else f" (best {progress.best:.4f} at epoch {progress.best_epoch + 1})")
        + f" | {time.time() - t0:.1f} s"
    )
    if stop:
        run.log(f"early stopping: no better validation {cfg.monitor} for {progress.stale} epochs")
    return stop


def _out_of_time(run: _Run, epoch: int, loop_start: float, t0: float) -> bool:
    """Whether another epoch as long as this one would pass ``time_limit_minutes``, or this
    was epoch ``stop_epoch``."""
    cfg = run.cfg
    if cfg.stop_epoch and epoch + 1 >= cfg.stop_epoch and epoch + 1 < cfg.epochs:
        run.log(f"stop_epoch: stopping after epoch {epoch + 1}/{cfg.epochs}")
        return True
    elapsed = time.time() - loop_start
    if (
        cfg.time_limit_minutes
        and epoch + 1 < cfg.epochs
        and (elapsed + (time.time() - t0) > 60 * cfg.time_limit_minutes)
    ):
        run.log(
            f"time limit: {elapsed / 60:.1f} of {cfg.time_limit_minutes:g} min used, another epoch would "
            f"pass it; stopping after epoch {epoch + 1}/{cfg.epochs}"
        )
        return True
    return False


def supervised_loss(
    output: Any, masks: torch.Tensor, valid: torch.Tensor, loss_fn: nn.Module, cfg: TrainConfig
) -> torch.Tensor:
    """DualLoss of the main logits, plus the small deep-supervision terms when the model has them."""
    if isinstance(output, tuple):  # deep supervision: (logits, [aux_d3, aux_d4, aux_d5])
        logits, aux = output
        loss = loss_fn(logits.float(), masks, valid)
        for weight, aux_logits in zip(cfg.aux_weights, aux):
            loss = loss + weight * loss_fn(aux_logits.float(), masks, valid)
        return loss
    return loss_fn(output.float(), masks, valid)


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", required=True, type=Path, help="CSV written by training.prepare")
    parser.add_argument("--config", default=None, help="published, cpu-small or a JSON file (default: published)")
    parser.add_argument("--out", required=True, type=Path, help="run folder")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting (repeatable)"
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    args = parser.parse_args(argv)
    try:
        cfg = resolve_run_config(args.config, args.set, args.out, args.resume)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        rows = read_manifest(args.manifest)
        split_rows(rows, cfg.train_split), split_rows(rows, cfg.val_split)
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    if not args.resume and find_last(args.out) is not None:
        parser.error(f"--out {args.out} already holds a run; pass --resume to continue it or choose another folder")
    command = "python -m training.train " + " ".join(shlex.quote(a) for a in argv if a != "--resume")
    try:
        summary = train(rows, cfg, args.out, resume=args.resume, command=command)
    except NonFiniteLoss as exc:
        last = find_last(args.out)
        where = f"the last good checkpoint is {last}" if last else "no checkpoint was written"
        print(f"error: {exc}; {where}", file=sys.stderr, flush=True)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
