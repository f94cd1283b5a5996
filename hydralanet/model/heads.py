"""The Hydra head: one small independent branch per lesion (EX, HE, MA, SE)."""

from __future__ import annotations

import torch
from torch import nn

from ..config import CLASSES


class HydraHead(nn.Module):
    """``forward(d2: B x D x h x w) -> logits B x 4 x h x w`` in EX, HE, MA, SE order.

    Each branch is ``conv 1x1 D->hidden -> GELU -> conv 1x1 hidden->1``; separate branches
    keep one lesion's features from being shared (and compromised) by another's.
    """

    def __init__(self, d: int, *, hidden_ratio: float = 0.25, bias_init: float = -2.0) -> None:
        super().__init__()
        hidden = max(1, int(d * hidden_ratio))
        self.branches = nn.ModuleDict(
            {c: nn.Sequential(nn.Conv2d(d, hidden, 1), nn.GELU(), nn.Conv2d(hidden, 1, 1)) for c in CLASSES}
        )
        for branch in self.branches.values():
            nn.init.constant_(branch[-1].bias, bias_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branches[c](x) for c in CLASSES], dim=1)
