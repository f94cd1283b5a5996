"""The fast inference path (docs/architecture.md#inference: chosen by measurement; the figures are in docs/speed.md).

:func:`optimize_for_inference` turns an eval-mode model into an :class:`InferenceModel`: a
separate copy, built once per process (``LoadedModel.inference_model`` caches it), that takes
the same float32 input and returns float32 logits. What it does, and why:

- BatchNorm is folded into the convolution before it (one op, one pass over the feature map
  instead of two). Exact up to float rounding.
- Channels-last (NHWC) layout: oneDNN's and cuDNN's native layout for convolutions.
- The per-image channel gates are folded into the convolution that reads the gated tensor
  (FFB: the FPB gate ``p`` into the fusion convolution's input channels; LAM: its channel gate
  into its output convolution), so no full-resolution multiply, ReLU or copy is spent on them;
  the Hydra head's four branches run as one convolution (see :class:`FastFFB`, :class:`FastLAM`,
  :class:`FusedHydraHead`). Exact algebra; only the rounding differs.
- On a CPU, each ReLU (and each ResNet residual add, and the LAM's asymmetric pair sum) runs
  as a post-op of the oneDNN convolution before it (:func:`conv_relu`): no separate pass.
- On a CPU with native bf16 (AVX512-BF16 or AMX): weights and activations in bf16; the Hydra
  head's last layer, the final upsampling and the sigmoid stay float32. A narrow decoder
  (``decoder_channels`` <= 32, like the bundled model's) stays float32 whole: it is memory-bound,
  so bf16 would not speed it up, and its rounding moved masks. On CUDA: autocast to bf16/fp16 and
  ``cudnn.benchmark``.
- Optionally ``torch.compile`` (inductor, frozen weights): fuses the element-wise work into the
  convolutions; pays for its compile time only after ~50-300 images (see ``compile``).
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.resnet import BasicBlock, Bottleneck

from ..config import CLASSES
from ..model.blocks import FeatureFusionBlock, LesionAwareModule, upsample_to
from ..model.heads import HydraHead
from .device import PRECISION_DTYPES, resolve_precision

log = logging.getLogger(__name__)


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
        return [
            (f"conv{i}", f"bn{i}") for i in (1, 2, 3) if isinstance(getattr(module, f"bn{i}", None), nn.BatchNorm2d)
        ]
    return []


class Float32(nn.Module):
    """Runs ``module`` in float32 whatever the input dtype or autocast state."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.module(x.float())


def _onednn_fusable(x: torch.Tensor, conv: nn.Conv2d) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and conv.weight.dtype == x.dtype
        and isinstance(conv.padding, tuple)
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    )


def conv_relu(
    x: torch.Tensor, conv: nn.Conv2d, weight: torch.Tensor | None = None, residual: torch.Tensor | None = None
) -> torch.Tensor:
    """``relu(conv(x) [+ residual])`` with ``weight`` in place of ``conv.weight`` if given. On
    a CPU it is one oneDNN convolution with the add and the ReLU as post-ops (no extra pass over
    the output); elsewhere the plain ops."""
    weight = conv.weight if weight is None else weight
    if _onednn_fusable(x, conv):
        args = (weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups)
        if residual is None:
            return torch.ops.mkldnn._convolution_pointwise(x, *args, "relu", [], "")
        return torch.ops.mkldnn._convolution_pointwise(x, residual, *args, "add", 1.0, "relu", [], "")
    y = F.conv2d(x, weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return F.relu_(y if residual is None else y.add_(residual))


class ConvReLU(nn.Module):
    """A convolution followed by ReLU, run as :func:`conv_relu`."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_relu(x, self.conv)


class FastResidualBlock(nn.Module):
    """A folded torchvision ``BasicBlock``/``Bottleneck``: every convolution's ReLU, and the
    residual add before the last one, fused into the convolution."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        convs = [getattr(block, f"conv{i}") for i in (1, 2, 3) if hasattr(block, f"conv{i}")]
        if any(not isinstance(getattr(block, f"bn{i}"), nn.Identity) for i in range(1, len(convs) + 1)):
            raise TypeError("fold the BatchNorms first")
        self.inner, self.last, self.downsample = nn.ModuleList(convs[:-1]), convs[-1], block.downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for conv in self.inner:
            out = conv_relu(out, conv)
        identity = x if self.downsample is None else self.downsample(x)
        return conv_relu(out, self.last, residual=identity)


def fuse_relus(net: nn.Module) -> nn.Module:
    """Fuse ReLUs into the convolutions before them (in place): ``Conv2d[, Identity], ReLU``
    inside any ``nn.Sequential`` (``cbr`` blocks, the stem) and the ResNet blocks."""
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, (BasicBlock, Bottleneck)):
                setattr(module, name, FastResidualBlock(child))
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for i, name in enumerate(names):
                if not isinstance(module._modules[name], nn.Conv2d):
                    continue
                rest = names[i + 1 : i + 3]
                kinds = [type(module._modules[n]) for n in rest]
                relu = rest[0] if kinds[:1] == [nn.ReLU] else rest[1] if kinds == [nn.Identity, nn.ReLU] else None
                if relu is not None:
                    module._modules[name] = ConvReLU(module._modules[name])
                    module._modules[relu] = nn.Identity()
    return net


def _conv_relu(block: nn.Sequential) -> nn.Conv2d:
    """The convolution of a folded ``cbr`` block (``Conv2d, Identity, ReLU``)."""
    conv, mid, relu = block
    if not (isinstance(conv, nn.Conv2d) and isinstance(mid, nn.Identity) and isinstance(relu, nn.ReLU)):
        raise TypeError("expected a cbr block with its BatchNorm folded (Conv2d, Identity, ReLU)")
    return conv


def _gated_conv_relu(x: torch.Tensor, conv: nn.Conv2d, gate: torch.Tensor) -> torch.Tensor:
    """``relu(conv(x * gate))`` for a ``B x C x 1 x 1`` gate, with the gate multiplied into the
    weight's input channels (C x k x k numbers per image) instead of into ``x``."""
    outs = []
    for i in range(x.shape[0]):  # one weight per image; inference batches are 1 or a few
        weight = conv.weight * gate[i].reshape(1, -1, 1, 1).to(conv.weight.dtype)
        outs.append(conv_relu(x[i : i + 1], conv, weight))
    return outs[0] if len(outs) == 1 else torch.cat(outs)


class FastFFB(nn.Module):
    """:class:`~hydralanet.model.blocks.FeatureFusionBlock` with its gate folded into ``fuse``.

    The FFB computes ``fuse(cat(relu(A p), relu(p up(B)), relu(up(d) p)))`` with
    ``A = encoder_conv(encoder_in(e))``, ``B = decoder_conv(d)``. The gate ``p`` is a sigmoid
    (>= 0), ``B`` ends in a ReLU, ``d`` is a LAM output (ends in a ReLU) and bilinear weights
    are >= 0, so that equals ``fuse(cat(relu(A), up(B), up(d)) * [p, p, p])``: one ReLU, no
    multiply at full resolution, and ``[p, p, p]`` scales ``fuse``'s input channels.
    """

    def __init__(self, block: FeatureFusionBlock) -> None:
        super().__init__()
        self.encoder_in, self.encoder_conv, self.decoder_conv = block.encoder_in, block.encoder_conv, block.decoder_conv
        self.fuse = _conv_relu(block.fuse)

    def forward(self, e: torch.Tensor, d: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        z1 = conv_relu(self.encoder_in(e), self.encoder_conv)
        x = torch.cat([z1, upsample_to(self.decoder_conv(d), e), upsample_to(d, e)], dim=1)
        return _gated_conv_relu(x, self.fuse, p.repeat(1, 3, 1, 1))


class FastLAM(nn.Module):
    """:class:`~hydralanet.model.blocks.LesionAwareModule` with its channel gate folded into ``out``
    and the asymmetric pair summed in place."""

    def __init__(self, block: LesionAwareModule) -> None:
        super().__init__()
        if not (isinstance(block.a_horizontal[0], nn.Conv2d) and isinstance(block.a_horizontal[1], nn.Identity)):
            raise TypeError("fold the BatchNorms first")
        self.a_in, self.a_vertical, self.a_horizontal = block.a_in, block.a_vertical, block.a_horizontal
        self.a_out, self.b_in, self.b_gate = block.a_out, block.b_in, block.b_gate
        self.out = _conv_relu(block.out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a_in(x)
        a = self.a_out(conv_relu(a, self.a_horizontal[0], residual=self.a_vertical(a)))
        return _gated_conv_relu(a, self.out, self.b_gate(self.b_in(x)))


class FusedHydraHead(nn.Module):
    """The Hydra head's four ``conv 1x1 D->h`` as one ``D->4h`` convolution (in the network's
    dtype), GELU, then the four ``h->1`` as one block-diagonal ``4h->4`` in float32: bf16
    logits would come in steps of ~0.03 near logit(0.01), visible in masks."""

    def __init__(self, head: HydraHead) -> None:
        super().__init__()
        first = [head.branches[c][0] for c in CLASSES]
        last = [head.branches[c][2] for c in CLASSES]
        d, h = first[0].in_channels, first[0].out_channels
        self.hidden = nn.Conv2d(d, len(CLASSES) * h, 1).to(first[0].weight.device)
        self.out = nn.Conv2d(len(CLASSES) * h, len(CLASSES), 1).to(first[0].weight.device)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.cat([c.weight for c in first]))
            self.hidden.bias.copy_(torch.cat([c.bias for c in first]))
            self.out.weight.zero_()
            for i, conv in enumerate(last):
                self.out.weight[i, i * h : (i + 1) * h] = conv.weight[0]
            self.out.bias.copy_(torch.cat([c.bias for c in last]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _onednn_fusable(x, self.hidden):  # GELU as the convolution's post-op
            conv = self.hidden
            hidden = torch.ops.mkldnn._convolution_pointwise(
                x, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups, "gelu", [], "none"
            )
        else:
            hidden = F.gelu(self.hidden(x))
        with torch.autocast(x.device.type, enabled=False):
            if hidden.device.type == "cpu" and hidden.is_contiguous(memory_format=torch.channels_last):
                return self._last_in_chunks(hidden)
            return self.out(hidden.float())

    def _last_in_chunks(self, hidden: torch.Tensor) -> torch.Tensor:
        """The float32 ``4h -> 4`` layer as a matrix product over NHWC pixels, a cache-sized
        chunk at a time, so the 4h-channel map is never copied whole to float32."""
        n, c, h, w = hidden.shape
        pixels = hidden.permute(0, 2, 3, 1).reshape(-1, c)  # a view: channels-last is NHWC
        weight = self.out.weight.reshape(self.out.out_channels, c).t()
        out = torch.empty(pixels.shape[0], self.out.out_channels, dtype=torch.float32, device=hidden.device)
        step = max(1, (1 << 20) // c)  # ~4 MB of float32 per chunk
        for start in range(0, pixels.shape[0], step):
            torch.addmm(self.out.bias, pixels[start : start + step].float(), weight, out=out[start : start + step])
        return out.view(n, h, w, -1).permute(0, 3, 1, 2)  # N x 4 x H x W, channels-last memory


def fuse_gates(net: nn.Module) -> nn.Module:
    """Swap a folded HydraLANet's FFBs, LAMs and head for their fast forms (in place)."""
    for name, child in list(net.named_children()):
        if isinstance(child, FeatureFusionBlock):
            setattr(net, name, FastFFB(child))
        elif isinstance(child, LesionAwareModule):
            setattr(net, name, FastLAM(child))
        elif isinstance(child, HydraHead) and name == "head":
            setattr(net, name, FusedHydraHead(child))
    return net


NARROW_DECODER = 32  # decoder channels up to which the CPU bf16 path keeps the decoder in fp32


class Bf16Encoder(nn.Module):
    """The encoder in bf16 inside a float32 network: casts its input, returns float32 features."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder.to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [f.float() for f in self.encoder(x.to(torch.bfloat16))]


class InferenceModel(nn.Module):
    """An optimised copy of a model: ``forward(x: B x 3 x H x W float32) -> logits float32``.

    Build it with :func:`optimize_for_inference`; the original model is left untouched.
    """

    def __init__(self, model: nn.Module, *, device: torch.device, precision: str, compile: bool = False) -> None:
        super().__init__()
        if precision not in PRECISION_DTYPES:
            raise ValueError(f"precision={precision!r} must be resolved first; one of {', '.join(PRECISION_DTYPES)}")
        self.precision, self.device = precision, device
        net = fold_batchnorm(model).to(device).requires_grad_(False)
        net = fuse_relus(fuse_gates(net)).to(memory_format=torch.channels_last)
        self.input_dtype, self.autocast_dtype = torch.float32, None
        self.bf16_parts = "all" if precision != "fp32" else "none"
        if precision != "fp32":
            head = getattr(net, "head", None)
            config = getattr(net, "config", None)
            narrow = config is not None and config.decoder_channels <= NARROW_DECODER and hasattr(net, "encoder")
            if device.type == "cpu" and precision == "bf16" and narrow:
                # A narrow decoder is memory-bound: bf16 does not speed it up, and its rounding
                # moves masks (bundled model, D = 16: same 0.13 s, SE Dice 0.977 -> 0.994).
                net.encoder, self.bf16_parts = Bf16Encoder(net.encoder), "encoder"
            elif device.type == "cpu" and precision == "bf16":
                # bf16 weights rather than autocast: no per-call cast of every weight.
                net, self.input_dtype = net.to(torch.bfloat16), torch.bfloat16
            else:
                self.autocast_dtype = PRECISION_DTYPES[precision]
            if isinstance(head, FusedHydraHead):
                head.out.float()  # its last layer stays float32 (it casts its input itself)
            elif head is not None:
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
    machine it cut the published model's 1024 px time by ~8 % (0.1 s) for 6 s (warm cache) to
    35 s (cold) of compiling (docs/speed.md), needs a C++ compiler at run time, and compiles
    again for each new input size; so it is off by default. Failures fall back to the eager
    fast path with a warning.
    """
    if device is None:
        device = next(iter(model.parameters()), torch.empty(0)).device
    device = torch.device(device)
    return InferenceModel(model, device=device, precision=resolve_precision(precision, device), compile=compile)
