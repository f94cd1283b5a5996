"""The fast inference path (DESIGN §8: chosen by measurement; the figures are in README, Speed).

:func:`optimize_for_inference` turns an eval-mode model into an :class:`InferenceModel`: a
separate copy, built once per process (``LoadedModel.inference_model`` caches it), that takes
the same float32 input and returns float32 logits. What it does, and why:

- BatchNorm is folded into the convolution before it (one op, one pass over the feature map
  instead of two). Exact up to float rounding.
- Channels-last (NHWC) layout: oneDNN's and cuDNN's native layout for convolutions.
- On a CPU with native bf16 (AVX512-BF16 or AMX): weights and activations in bf16; the Hydra
  head, the final upsampling and the sigmoid stay float32. On CUDA: autocast to bf16/fp16 and
  ``cudnn.benchmark``.
- Optionally ``torch.compile`` (inductor, frozen weights): fuses the element-wise work into the
  convolutions; pays off only after tens of images (see ``compile``).
"""

from __future__ import annotations

import copy
import logging
import platform

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.resnet import BasicBlock, Bottleneck

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bf16 in hardware (x86: AVX512-BF16 or AMX-BF16; Arm: BF16).

    oneDNN *accepts* bf16 on any AVX-512 CPU but emulates it where these instructions are
    missing (Skylake/Cascade Lake), which is slower than float32; so ask the CPU, not oneDNN.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    caps = torch.cpu.get_capabilities()
    if platform.machine().lower() in ("x86_64", "amd64", "i686", "x86"):
        return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    return bool(caps.get("bf16") or caps.get("sve_bf16"))


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on a CPU with native bf16 or on CUDA with bf16, fp16 on other CUDA
    GPUs, else fp32. Other values are checked and returned."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not supported; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every BatchNorm that directly follows a convolution
    folded into that convolution's weight and bias (the BatchNorm becomes ``nn.Identity``).

    Pairs found: consecutive ``Conv2d, BatchNorm2d`` children of an ``nn.Sequential`` (``cbr``,
    the LAM's asymmetric convolutions, the encoder stem, ResNet downsample branches) and
    ``convN``/``bnN`` inside torchvision's ResNet blocks, whose ``forward`` applies ``bnN``
    straight to ``convN``'s output. Uses the running statistics, so only valid in eval mode.
    """
    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        for conv_name, bn_name in _conv_bn_pairs(module):
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(module, bn_name, nn.Identity())
    return model


def _conv_bn_pairs(module: nn.Module) -> list[tuple[str, str]]:
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        return [
            (a, b)
            for a, b in zip(names, names[1:])
            if isinstance(module._modules[a], nn.Conv2d) and isinstance(module._modules[b], nn.BatchNorm2d)
        ]
    if isinstance(module, (BasicBlock, Bottleneck)):
        return [(f"conv{i}", f"bn{i}") for i in (1, 2, 3) if isinstance(getattr(module, f"bn{i}", None), nn.BatchNorm2d)]
    return []


class Float32(nn.Module):
    """Runs ``module`` in float32 whatever the input dtype or autocast state."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.module(x.float())


class InferenceModel(nn.Module):
    """An optimised copy of a model: ``forward(x: B x 3 x H x W float32) -> logits float32``.

    Build it with :func:`optimize_for_inference`; the original model is left untouched.
    """

    def __init__(self, model: nn.Module, *, device: torch.device, precision: str, compile: bool = False) -> None:
        super().__init__()
        if precision not in _DTYPES:
            raise ValueError(f"precision={precision!r} must be resolved first; one of {', '.join(_DTYPES)}")
        self.precision, self.device = precision, device
        net = fold_batchnorm(model).to(device).requires_grad_(False).to(memory_format=torch.channels_last)
        self.input_dtype, self.autocast_dtype = torch.float32, None
        if precision != "fp32":
            head = getattr(net, "head", None)
            if device.type == "cpu" and precision == "bf16":
                # bf16 weights rather than autocast: no per-call cast of every weight.
                net, self.input_dtype = net.to(torch.bfloat16), torch.bfloat16
            else:
                self.autocast_dtype = _DTYPES[precision]
            if head is not None:
                # bf16 logits would come in steps of ~0.03 near logit(0.01), visible in masks.
                net.head = Float32(head)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # one input size per model: the tuned choice sticks
        self.net = net
        self.compiled = torch.compile(net, options={"freezing": True}) if compile else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, self.input_dtype).contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            if self.compiled is not None:
                try:
                    return self.compiled(x).float()
                except Exception as exc:  # inductor needs a C++ compiler; its errors come in many types
                    reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                    log.warning("torch.compile failed (%s); using the eager fast path", reason)
                    self.compiled = None
            return self.net(x).float()


def optimize_for_inference(
    model: nn.Module, device: str | torch.device | None = None, precision: str = "auto", *, compile: bool = False
) -> InferenceModel:
    """An :class:`InferenceModel` for ``model`` (left untouched) on ``device`` (default: the
    model's) at ``precision`` (``auto``, ``fp32``, ``bf16``, ``fp16``).

    ``compile=True`` adds ``torch.compile`` (inductor, weights frozen): on the 2-core test
    machine it cut the published model's 1024 px time by a few percent for ~30 s of compiling
    (README, Speed), needs a C++ compiler at run time, and compiles again for each new input
    size; so it is off by default. Failures fall back to the eager fast path with a warning.
    """
    if device is None:
        device = next(iter(model.parameters()), torch.empty(0)).device
    device = torch.device(device)
    return InferenceModel(model, device=device, precision=resolve_precision(precision, device), compile=compile)
