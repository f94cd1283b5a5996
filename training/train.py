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
import random
import shlex
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from hydralanet.checkpoint import WEIGHTS_NAME, load_model, save_checkpoint
from hydralanet.config import CLASSES, CheckpointConfig
from hydralanet.model import HydraLANet, count_parameters

from .calibration import calibrate_threshold, fit_platt
from .config import TrainConfig, flatten, load_config, save_config
from .data import (
    LesionDataset,
    SquareCache,
    WeightedEpochSampler,
    build_augmentation,
    build_photometric,
    lesion_presence,
    oversampling_weights,
    split_rows,
    worker_init_fn,
)
from .losses import DualLoss
from .metrics import ConfusionAccumulator, PRAccumulator
from .modelcard import render_model_card
from .prepare import read_manifest
from .runfolder import (
    find_last,
    plot_curves,
    read_metrics_log,
    restore_training_state,
    save_last,
    training_state,
    write_metrics_log,
)

# Settings that may change on --resume without changing the numbers (or, for epochs and
# patience, changing them knowingly: a longer run). Anything else must match the run.
RESUME_MAY_CHANGE = ("num_workers", "cache_dir", "epochs", "patience", "time_limit_minutes")


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


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for the ``amp`` setting; ``None`` runs in float32."""
    if mode == "auto":
        if device.type != "cuda":
            return None  # CPU autocast is slower than fp32 without AMX/AVX-512 BF16: opt in with amp=bf16
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "fp16" and device.type != "cuda":
        raise ValueError("amp=fp16 needs CUDA (fp16 on CPU is slow and needs loss scaling); use amp=bf16 or amp=off")
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]


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


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        # warn_only: a few CUDA backward kernels (bilinear upsampling) have no deterministic
        # version; they warn instead of stopping the run. On CPU every op used is deterministic.
        torch.use_deterministic_algorithms(True, warn_only=True)


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


# --------------------------------------------------------------------------- distributed


class Dist:
    """Process-group facts: under ``torchrun`` (WORLD_SIZE > 1) a DDP rank, else a single process."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        if torch.cuda.is_available():
            self.device = torch.device("cuda", local_rank)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        if self.enabled:
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def validate(
    model: nn.Module, loader: DataLoader, loss_fn: nn.Module, cfg: TrainConfig, device: torch.device
) -> tuple[dict[str, Any], dict[str, float], dict[str, tuple[float, float]] | None]:
    """Validation loss and per-class metrics (plus macro) on the square model inputs, inside the FOV.

    Returns ``(metrics, thresholds, calibration)``. One pass fills the PR histograms; the
    thresholds are tuned on them (max F1 per class) when ``cfg.tune_thresholds``, and F1 / IoU /
    precision / recall are then read off the same histograms at those thresholds. With
    ``cfg.calibrate`` a per-class Platt calibration is fitted on the same histograms and the
    thresholds returned are the calibrated probabilities of the same cuts (same pixels, same F1).
    """
    model.eval()
    dtype = amp_dtype(cfg.amp, device)
    pr = PRAccumulator(num_classes=len(CLASSES))
    loss_sum = 0.0
    for batch in loader:
        images, masks, valid = (batch[k].to(device).float() for k in ("image", "masks", "valid"))
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(images).float()
        loss_sum += float(loss_fn(logits, masks, valid))
        pr.update(torch.sigmoid(logits), masks, valid)
    if cfg.tune_thresholds:
        thresholds = [float(t) for t in pr.best_thresholds(default=cfg.default_threshold)]
    else:
        thresholds = [cfg.default_threshold] * len(CLASSES)
    scores = confusion_at(pr, thresholds).compute()
    aupr = pr.average_precision()
    metrics: dict[str, Any] = {"loss": loss_sum / max(1, len(loader))}
    for i, c in enumerate(CLASSES):
        metrics[c] = {"aupr": float(aupr[i]), **{k: float(scores[k][i]) for k in ("f1", "iou", "precision", "recall")}}
    # A class without positive pixels in the split has no AUPR (NaN): average the others.
    macro_aupr = float(np.nanmean(aupr)) if np.isfinite(aupr).any() else float("nan")
    metrics["macro"] = {"aupr": macro_aupr, **scores["macro"]}
    if not cfg.calibrate:
        return metrics, dict(zip(CLASSES, thresholds)), None
    calibration = fit_platt(pr)
    calibrated = {c: round(calibrate_threshold(t, calibration[c]), 4) for c, t in zip(CLASSES, thresholds)}
    return metrics, calibrated, calibration


def confusion_at(pr: PRAccumulator, thresholds: list[float]) -> ConfusionAccumulator:
    """The confusion counts at ``thresholds`` read off PR histograms: ``p >= edge(k)`` is
    "bin >= k", so this is exact for thresholds on bin edges (tuned ones always are)."""
    confusion = ConfusionAccumulator(num_classes=pr.num_classes, thresholds=thresholds)
    for c, t in enumerate(confusion.thresholds):
        k = pr.threshold_index(t)
        confusion.tp[c], confusion.fn[c] = pr.positives[c, k:].sum(), pr.positives[c, :k].sum()
        confusion.fp[c], confusion.tn[c] = pr.negatives[c, k:].sum(), pr.negatives[c, :k].sum()
    return confusion


# --------------------------------------------------------------------------- the run


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


def _train(
    rows: list[dict[str, Any]], cfg: TrainConfig, out: Path, ddp: Dist, *, resume: bool, command: str
) -> dict[str, Any]:
    device = ddp.device
    log = functools.partial(print, flush=True) if ddp.main else (lambda *a, **k: None)
    seed_everything(cfg.seed, cfg.deterministic)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    # ---- data
    train_rows, val_rows = split_rows(rows, cfg.train_split), split_rows(rows, cfg.val_split)
    cache = None if cfg.cache_dir == "off" else SquareCache(Path(cfg.cache_dir) if cfg.cache_dir else out / "cache")
    train_set = LesionDataset(
        train_rows,
        cfg.preprocessing,
        augmentation=build_augmentation(cfg),
        cache=cache,
        photometric=build_photometric(cfg),
        seed=cfg.seed,
    )
    val_set = LesionDataset(val_rows, cfg.preprocessing, cache=cache)
    # Shuffling is a function of (seed, epoch) on every rank; with one process it is the same sampler.
    if any(f != 1.0 for f in cfg.oversample):
        presence = lesion_presence(train_set, cfg.num_workers)
        weights = oversampling_weights(presence, cfg.oversample)
        share = {c: round(float(weights[presence[:, i]].sum() / weights.sum()), 3) for i, c in enumerate(CLASSES)}
        log(
            f"oversampling {dict(zip(CLASSES, cfg.oversample))}: images with each lesion, share of draws {share} "
            f"(in the data: { {c: round(float(presence[:, i].float().mean()), 3) for i, c in enumerate(CLASSES)} })"
        )
        sampler = WeightedEpochSampler(weights, num_replicas=ddp.world, rank=ddp.rank, seed=cfg.seed)
    else:
        sampler = DistributedSampler(train_set, num_replicas=ddp.world, rank=ddp.rank, shuffle=True, seed=cfg.seed)
    loader_gen = torch.Generator().manual_seed(cfg.seed)
    loader_args = {
        "num_workers": cfg.num_workers,
        "worker_init_fn": worker_init_fn,
        "generator": loader_gen,
        "pin_memory": device.type == "cuda",
        "persistent_workers": False,  # workers must see set_epoch(): a fresh copy of the dataset per epoch
    }
    train_loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, **loader_args)
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, shuffle=False, **loader_args)
    steps_per_epoch = math.ceil(len(train_loader) / cfg.grad_accum)
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)

    # ---- model, optimizer, loss
    last = find_last(out) if resume else None
    if resume and last is None:  # stopped during its first epoch: resuming is starting over
        log(f"--resume: no checkpoint in {out} yet; starting from epoch 1")
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
    loss_fn = DualLoss(
        tversky_weight=cfg.tversky_weight,
        bce_weight=cfg.bce_weight,
        alpha=cfg.alpha,
        beta=cfg.beta,
        gamma=cfg.gamma,
        class_weights=cfg.class_weights,
        pos_weight=cfg.pos_weight,
        tversky_over=cfg.tversky_over,
    ).to(device)
    net = (
        DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if ddp.enabled
        else model
    )

    # ---- where we start
    start_epoch, step, best, best_epoch, stale = 0, 0, -1.0, -1, 0
    if last is not None:
        meta = restore_training_state(last, optimizer, scaler, loader_gen)
        start_epoch, step = meta["epoch"] + 1, meta["step"]
        best, best_epoch, stale = meta["best"], meta["best_epoch"], meta["stale_epochs"]
        log(f"resuming from {last} after epoch {start_epoch} (step {step}, best {cfg.monitor} {best:.4f})")
    records = read_metrics_log(out / "metrics.jsonl", before_epoch=start_epoch) if ddp.main else []
    datasets, split_sizes = describe_data(rows)
    provenance = {
        "trained": True,
        "datasets": datasets,
        "split_sizes": split_sizes,
        "train_split": cfg.train_split,
        "val_split": cfg.val_split,
        "thresholds_tuned": cfg.tune_thresholds,
        "command": command,
        "code_version": code_version() if ddp.main else "",
        "training_config": cfg.to_dict(),
    }
    if ddp.main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "train_config.json")
        log(
            f"{count_parameters(model) / 1e6:.2f} M parameters | train {len(train_set)} / val {len(val_set)} images | "
            f"{steps_per_epoch} steps per epoch x {cfg.epochs} epochs | device {device} x {ddp.world} | "
            f"amp {dtype or 'off'}"
        )

    # ---- the loop
    loop_start = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        net.train()
        if cfg.freeze_bn:
            freeze_batchnorm(model)
        optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=device)
        n_batches = len(train_loader)
        bar = tqdm(
            train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not ddp.main, leave=False, file=sys.stderr
        )
        for i, batch in enumerate(bar):
            images, masks, valid = (batch[k].to(device, non_blocking=True).float() for k in ("image", "masks", "valid"))
            group_start = (i // cfg.grad_accum) * cfg.grad_accum
            group_size = min(cfg.grad_accum, n_batches - group_start)  # the last group may be short
            stepping = i + 1 == group_start + group_size
            # DDP all-reduces gradients on every backward; skip that until the group's last micro-batch.
            sync = net.no_sync() if ddp.enabled and not stepping else nullcontext()
            with sync:
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    output = net(images)
                loss = supervised_loss(output, masks, valid, loss_fn, cfg)
                if ddp.any(not torch.isfinite(loss).item()):
                    raise NonFiniteLoss(
                        f"loss is {loss.item()} at epoch {epoch + 1}, batch {i + 1}/{n_batches} (optimizer step "
                        f"{step}); stopping"
                    )
                scaler.scale(loss / group_size).backward()
            loss_sum += loss.detach()
            if stepping:
                lr = get_lr(step, cfg, total_steps, warmup_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                if cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
        bar.close()
        if ddp.enabled:
            dist.all_reduce(loss_sum)
        train_loss = float(loss_sum) / (n_batches * ddp.world)

        # ---- validation, checkpoints and logs: rank 0 only; the other ranks wait
        stop = False
        if ddp.main:
            metrics, thresholds, calibration = validate(model, val_loader, loss_fn, cfg, device)
            score = metrics["macro"][cfg.monitor]
            improved = score > best
            if improved:
                best, best_epoch, stale = score, epoch, 0
            else:
                stale += 1
            stop = cfg.patience > 0 and stale >= cfg.patience
            records.append(
                {
                    "epoch": epoch,
                    "step": step,
                    "lr": get_lr(max(0, step - 1), cfg, total_steps, warmup_steps),
                    "train_loss": train_loss,
                    "val": metrics,
                    "thresholds": thresholds,
                    "best": improved,
                }
            )
            write_metrics_log(out / "metrics.jsonl", records)  # first: resume drops lines past `last`
            ckpt = checkpoint_config(cfg, provenance, thresholds, metrics, epoch, calibration)
            card = render_model_card(ckpt, parameters=count_parameters(model))
            if improved:
                save_checkpoint(model, out / "best", ckpt, model_card=card)
            counters = {"epoch": epoch, "step": step, "best": best, "best_epoch": best_epoch, "stale_epochs": stale}
            save_last(out, model, ckpt, card, training_state(optimizer, scaler, loader_gen, counters))
            plot_curves(records, out / "curves.png")
            m = metrics["macro"]
            log(
                f"epoch {epoch + 1}/{cfg.epochs} done: train loss {train_loss:.4f} | val loss {metrics['loss']:.4f} "
                f"F1 {m['f1']:.4f} AUPR {m['aupr']:.4f} IoU {m['iou']:.4f}"
                + (" (best)" if improved else f" (best {best:.4f} at epoch {best_epoch + 1})")
                + f" | {time.time() - t0:.1f} s"
            )
            if stop:
                log(f"early stopping: no better validation {cfg.monitor} for {stale} epochs")
            elapsed = time.time() - loop_start
            if (
                not stop
                and cfg.time_limit_minutes
                and epoch + 1 < cfg.epochs
                and (elapsed + (time.time() - t0) > 60 * cfg.time_limit_minutes)
            ):
                stop = True
                log(
                    f"time limit: {elapsed / 60:.1f} of {cfg.time_limit_minutes:g} min used, another epoch would "
                    f"pass it; stopping after epoch {epoch + 1}/{cfg.epochs}"
                )
        ddp.barrier()
        if ddp.any(stop):
            break

    return {"best": best, "best_epoch": best_epoch + 1, "monitor": cfg.monitor, "run": str(out)}


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
        cfg = resolve_config(args)
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


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """The run's config; on --resume the saved one, which new settings may change only in
    ways that keep the run's numbers (see ``RESUME_MAY_CHANGE``)."""
    cfg = load_config(args.config or "published", args.set)
    saved = args.out / "train_config.json"
    if not args.resume or not saved.exists():
        return cfg
    run_cfg = load_config(str(saved), args.set if args.config is None else None)
    if args.config is None:
        return run_cfg
    old, new = flatten(run_cfg.to_dict()), flatten(cfg.to_dict())
    changed = sorted(k for k in old if old[k] != new.get(k) and k not in RESUME_MAY_CHANGE)
    if changed:
        raise ValueError(
            "--resume: the run was trained with other settings: "
            + ", ".join(f"{k} {old[k]!r} -> {new.get(k)!r}" for k in changed)
            + f"; only {', '.join(RESUME_MAY_CHANGE)} may change"
        )
    return cfg


if __name__ == "__main__":
    raise SystemExit(main())
