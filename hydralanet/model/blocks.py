"""LA-Net decoder blocks (docs/architecture.md#model): FPB, head attention, LAM, FFB.

Notation as in the design: ``CBR`` = conv, BatchNorm, ReLU; ``GAP`` = global average pool;
``D`` = decoder channels. All shapes are ``B x C x H x W``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def cbr(cin: int, cout: int, k: int) -> nn.Sequential:
    """conv k x k (no bias: BatchNorm follows) + BatchNorm + ReLU, 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def channel_gate(cin: int, d: int) -> nn.Sequential:
    """GAP -> conv 1x1 cin->d -> ReLU -> conv 1x1 d->d -> sigmoid: a B x d x 1 x 1 gate."""
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, d, 1), nn.ReLU(inplace=True), nn.Conv2d(d, d, 1), nn.Sigmoid()
    )


def upsample_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class FeaturePreserveBlock(nn.Module):
    """FPB: a D-channel 1x1 gate from c5 for one decoder level."""

    def __init__(self, c5: int, d: int) -> None:
        super().__init__()
        self.reduce = cbr(c5, 512, 1)
        self.gate = channel_gate(512, d)

    def forward(self, c5: torch.Tensor) -> torch.Tensor:
        return self.gate(self.reduce(c5))


class HeadAttention(nn.Module):
    """Head attention on c5: spatial modulation (w, b from c5) times a channel gate."""

    def __init__(self, c5: int, d: int) -> None:
        super().__init__()
        self.left = cbr(c5, d, 3)
        self.modulation = nn.Conv2d(c5, 2 * d, 3, padding=1)
        self.mid = cbr(d, d, 1)
        self.gate = channel_gate(c5, d)

    def forward(self, c5: torch.Tensor) -> torch.Tensor:
        w, b = self.modulation(c5).chunk(2, dim=1)
        mid = self.mid(F.relu(w * self.left(c5) + b))
        return mid * self.gate(c5)


class LesionAwareModule(nn.Module):
    """LAM: asymmetric 3x1 + 1x3 convolutions (elongated lesions) gated by a channel branch."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.a_in = cbr(d, d, 3)
        self.a_vertical = nn.Sequential(nn.Conv2d(d, d, (3, 1), padding=(1, 0), bias=False), nn.BatchNorm2d(d))
        self.a_horizontal = nn.Sequential(nn.Conv2d(d, d, (1, 3), padding=(0, 1), bias=False), nn.BatchNorm2d(d))
        self.a_out = cbr(d, d, 1)
        self.b_in = cbr(d, d, 1)
        self.b_gate = channel_gate(d, d)
        self.out = cbr(d, d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a_in(x)
        a = self.a_out(F.relu(self.a_vertical(a) + self.a_horizontal(a)))
        gate = self.b_gate(self.b_in(x))
        return self.out(a * gate)


class FeatureFusionBlock(nn.Module):
    """FFB: fuses encoder feature ``e`` with the coarser decoder feature ``d`` under gate ``p``."""

    def __init__(self, cin: int, d: int) -> None:
        super().__init__()
        self.encoder_in = cbr(cin, d, 3)
        self.encoder_conv = nn.Conv2d(d, d, 3, padding=1)
        self.decoder_conv = cbr(d, d, 3)
        self.fuse = cbr(3 * d, d, 3)

    def forward(self, e: torch.Tensor, d: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        z1 = F.relu(self.encoder_conv(self.encoder_in(e)) * p)
        z2 = F.relu(p * upsample_to(self.decoder_conv(d), e))
        z3 = F.relu(upsample_to(d, e) * p)
        return self.fuse(torch.cat([z1, z2, z3], dim=1))
