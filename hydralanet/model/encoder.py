"""ResNet encoder: returns c2..c5 (strides 4, 8, 16, 32), highest resolution first."""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models

from ..config import ENCODERS

_OUT_CHANNELS = {
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
}
_WEIGHTS = {
    "resnet18": models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": models.ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": models.ResNet50_Weights.IMAGENET1K_V2,
}


class ResNetEncoder(nn.Module):
    """torchvision ResNet without avgpool/fc.

    ``forward(x: B x 3 x H x W) -> [c2, c3, c4, c5]`` with ``out_channels`` channels at
    strides 4, 8, 16, 32.
    """

    def __init__(self, name: str = "resnet50", *, pretrained: bool = False) -> None:
        super().__init__()
        if name not in ENCODERS:
            raise ValueError(f"encoder={name!r} is not supported; choose one of {', '.join(ENCODERS)}")
        weights = _WEIGHTS[name] if pretrained else None
        try:
            net = getattr(models, name)(weights=weights)
        except Exception as exc:  # network errors come as URLError, OSError, RuntimeError...
            raise RuntimeError(
                f"could not download ImageNet weights for {name} ({type(exc).__name__}: {exc}); "
                "this needs internet access to download.pytorch.org or a filled torch hub cache "
                "($TORCH_HOME). Build without pretrained encoder weights to start from random ones."
            ) from None
        self.out_channels: tuple[int, int, int, int] = _OUT_CHANNELS[name]
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c2 = self.layer1(self.stem(x))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5]
