"""Which training photo comes next: rare-lesion oversampling and repeated draws
(:class:`WeightedEpochSampler`), or a plain seeded shuffle; a function of (seed, epoch), so a
resumed run and every rank agree."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.data import Dataset

from hydralanet.config import CLASSES

from .data import LesionDataset, lesions_present


class _Presence(Dataset):
    """Which lesions each sample of a :class:`LesionDataset` contains (reading it warms the cache)."""

    def __init__(self, dataset: LesionDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor(lesions_present(self.dataset.load_packed(index)["lesions"]))


def lesion_presence(dataset: LesionDataset, num_workers: int = 0) -> torch.Tensor:
    """bool ``N x 4``: whether sample i has any pixel of EX, HE, MA, SE (after the resize to
    the square). Reads every sample once, in ``num_workers`` processes."""
    from tqdm.auto import tqdm

    loader = torch.utils.data.DataLoader(_Presence(dataset), batch_size=16, num_workers=num_workers)
    rows = list(tqdm(loader, desc="lesions per image", unit="batch", leave=False))
    return torch.cat(rows) if rows else torch.zeros(0, len(CLASSES), dtype=torch.bool)


def oversampling_weights(presence: torch.Tensor, factors: tuple[float, ...]) -> torch.Tensor:
    """Per-sample draw weights: the largest ``factors[c]`` over the lesions c the sample
    contains, 1 for a sample with none (so factors below 1 never drop a sample's weight
    under that of an empty one)."""
    f = torch.as_tensor(factors, dtype=torch.float64)
    weighted = torch.where(presence.bool(), f, torch.ones_like(f))
    return weighted.max(dim=1).values if len(presence) else torch.zeros(0, dtype=torch.float64)


class WeightedEpochSampler(torch.utils.data.Sampler[int]):
    """Draws ``repeats x len(weights)`` indices per epoch with replacement, in proportion to
    ``weights``, and gives rank r of ``num_replicas`` every num_replicas-th of them. The draw is
    a function of (seed, epoch) only, like ``DistributedSampler``'s shuffle, so ranks agree and
    a resumed run sees the same samples as an uninterrupted one."""

    def __init__(
        self, weights: torch.Tensor, num_replicas: int = 1, rank: int = 0, seed: int = 0, repeats: int = 1
    ) -> None:
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if (
            weights.ndim != 1
            or len(weights) == 0
            or not torch.isfinite(weights).all()
            or (weights < 0).any()
            or weights.sum() <= 0
        ):
            raise ValueError(
                "sampling weights must be a non-empty 1-D tensor of finite values >= 0 with a positive sum"
            )
        self.weights, self.num_replicas, self.rank, self.seed = weights, num_replicas, rank, seed
        self.num_samples = math.ceil(len(weights) * repeats / num_replicas)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(self.weights, self.num_samples * self.num_replicas, replacement=True, generator=g)
        return iter(drawn[self.rank :: self.num_replicas].tolist())


def epoch_sampler(train_set: LesionDataset, cfg: Any, world: int, rank: int, log: Any):
    """The training sampler: rare-lesion oversampling and ``epoch_repeats`` draw with
    replacement (:class:`WeightedEpochSampler`); otherwise a plain seeded shuffle split across
    ``world`` ranks (``DistributedSampler``)."""
    if any(f != 1.0 for f in cfg.oversample):
        presence = lesion_presence(train_set, cfg.num_workers)
        weights = oversampling_weights(presence, cfg.oversample)
        share = {c: round(float(weights[presence[:, i]].sum() / weights.sum()), 3) for i, c in enumerate(CLASSES)}
        log(
            f"oversampling {dict(zip(CLASSES, cfg.oversample))}: images with each lesion, share of draws {share} "
            f"(in the data: { {c: round(float(presence[:, i].float().mean()), 3) for i, c in enumerate(CLASSES)} })"
        )
    elif cfg.epoch_repeats > 1:
        weights = torch.ones(len(train_set), dtype=torch.float64)
        log(f"each training image drawn {cfg.epoch_repeats} times per epoch on average (with replacement)")
    else:
        return torch.utils.data.DistributedSampler(
            train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed
        )
    return WeightedEpochSampler(weights, num_replicas=world, rank=rank, seed=cfg.seed, repeats=cfg.epoch_repeats)
