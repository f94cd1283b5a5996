"""HydraLA-Net: LA-Net's decoder (docs/architecture.md#model) with a per-lesion Hydra head. Wiring only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import CLASSES, ModelConfig
from .blocks import FeatureFusionBlock, FeaturePreserveBlock, HeadAttention, LesionAwareModule
from .encoder import ResNetEncoder
from .heads import HydraHead


class HydraLANet(nn.Module):
    """``forward(x: B x 3 x H x W, normalised) -> logits B x 4 x H x W`` (EX, HE, MA, SE).

    H and W should be multiples of 32 (the encoder's stride); other sizes work but the
    feature maps are rounded. Outputs are logits; each class is an independent sigmoid.
    With ``deep_supervision=True`` and in training mode, ``forward`` returns
    ``(logits, [aux_d3, aux_d4, aux_d5])``, each aux a B x 4 x H x W logit map.
    """

    def __init__(
        self,
        *,
        encoder: str = "resnet50",
        decoder_channels: int = 256,
        hydra_hidden_ratio: float = 0.25,
        head_bias_init: float = -2.0,
        deep_supervision: bool = False,
        pretrained_encoder: bool = False,
    ) -> None:
        super().__init__()
        self.config = ModelConfig(
            encoder=encoder,
            decoder_channels=int(decoder_channels),
            hydra_hidden_ratio=float(hydra_hidden_ratio),
            head_bias_init=float(head_bias_init),
            deep_supervision=bool(deep_supervision),
        )
        d = self.config.decoder_channels
        self.encoder = ResNetEncoder(encoder, pretrained=pretrained_encoder)
        c2, c3, c4, c5 = self.encoder.out_channels
        self.fpb4, self.fpb3, self.fpb2 = (FeaturePreserveBlock(c5, d) for _ in range(3))
        self.head_attention = HeadAttention(c5, d)
        self.lam5, self.lam4, self.lam3, self.lam2 = (LesionAwareModule(d) for _ in range(4))
        self.ffb4 = FeatureFusionBlock(c4, d)
        self.ffb3 = FeatureFusionBlock(c3, d)
        self.ffb2 = FeatureFusionBlock(c2, d)
        self.head = HydraHead(d, hidden_ratio=hydra_hidden_ratio, bias_init=head_bias_init)
        self.aux_heads = nn.ModuleList(nn.Conv2d(d, len(CLASSES), 1) for _ in range(3)) if deep_supervision else None

    @classmethod
    def from_config(cls, config: ModelConfig, *, pretrained_encoder: bool = False) -> HydraLANet:
        return cls(**config.to_dict(), pretrained_encoder=pretrained_encoder)

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        c2, c3, c4, c5 = self.encoder(x)
        d5 = self.lam5(self.head_attention(c5))
        d4 = self.lam4(self.ffb4(c4, d5, self.fpb4(c5)))
        d3 = self.lam3(self.ffb3(c3, d4, self.fpb3(c5)))
        d2 = self.lam2(self.ffb2(c2, d3, self.fpb2(c5)))
        logits = F.interpolate(self.head(d2), size=size, mode="bilinear", align_corners=False)
        if self.aux_heads is not None and self.training:
            aux = [
                F.interpolate(head(feat), size=size, mode="bilinear", align_corners=False)
                for head, feat in zip(self.aux_heads, (d3, d4, d5))
            ]
            return logits, aux
        return logits


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
