"""The original HydraLA-Net code's state-dict layout, mapped exactly onto :class:`HydraLANet`.

The original training saves ``model.state_dict()`` as ``runs/<name>/best_model.pt`` with its own
module names (``bkbone.*``, ``fpb45.*``, ``head.*``, ``ffb45.*``, ``lam5.*``,
``hydra_head.heads.EX.*``). It is the same function as ours (docs/checkpoints.md#checkpoints-from-the-original-hydrala-net-code) with two differences
in the parameters, both exact to undo:

- ten convolutions carry a bias directly followed by BatchNorm (``head.conv0`` and ``conv0``,
  ``conv1``, ``conv3`` of each FFB). In eval mode ``BN(conv(x) + b)`` equals ``BN'(conv(x))``
  with ``running_mean' = running_mean - b``: the bias is folded into the running mean.
- each FFB holds two convolutions its forward pass never uses (``conv_d1``, ``conv_l``).

Exporting goes the other way: biases of folded convolutions are written as zeros (so the
running means stay as they are) and the unused convolutions as zeros; ours -> original -> ours
is bit-identical. This module is pure ``dict -> dict``; reading files is :mod:`checkpoint`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import CLASSES, ModelConfig

ORIGINAL_LAYOUT = "the original HydraLA-Net layout"
# Wrappers that training scripts put around a state dict, and DataParallel/DDP's key prefix.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
DDP_PREFIX = "module."
_BN_LEAVES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class LayoutError(ValueError):
    """A state dict that does not match the layout it claims; the message is one line."""


@dataclass(frozen=True)
class _Entry:
    """One module of the original layout, in its state-dict order.

    ``kind``: ``copy`` (every entry under ``ours`` maps to ``original`` with the same suffix),
    ``folded`` (a conv with a bias whose bias folds into our BatchNorm ``bn``), ``unused`` (a
    conv with bias that the forward pass never reads; ``shape`` is its weight's shape).
    """

    original: str
    ours: str | None
    kind: str = "copy"
    bn: str | None = None
    shape: tuple[int, ...] = ()


def _entries(config: ModelConfig) -> list[_Entry]:
    """The original layout for an architecture, as module pairs in the original's order."""
    d = config.decoder_channels
    entries = [_Entry("bkbone.conv1", "encoder.stem.0"), _Entry("bkbone.bn1", "encoder.stem.1")]
    entries += [_Entry(f"bkbone.layer{i}", f"encoder.layer{i}") for i in range(1, 5)]
    for ours, original in (("fpb4", "fpb45"), ("fpb3", "fpb35"), ("fpb2", "fpb25")):
        entries += [
            _Entry(f"{original}.conv0", f"{ours}.reduce.0"),
            _Entry(f"{original}.bn0", f"{ours}.reduce.1"),
            _Entry(f"{original}.conv1", f"{ours}.gate.1"),
            _Entry(f"{original}.conv2", f"{ours}.gate.3"),
        ]
    h = "head_attention"
    entries += [
        _Entry("head.conv0", f"{h}.left.0", "folded", bn=f"{h}.left.1"),
        _Entry("head.bn0", f"{h}.left.1"),
        _Entry("head.conv1", f"{h}.modulation"),
        _Entry("head.conv2", f"{h}.mid.0"),
        _Entry("head.bn2", f"{h}.mid.1"),
        _Entry("head.conv3", f"{h}.gate.1"),
        _Entry("head.conv4", f"{h}.gate.3"),
    ]
    for ours, original in (("ffb4", "ffb45"), ("ffb3", "ffb34"), ("ffb2", "ffb23")):
        entries += [
            _Entry(f"{original}.conv0", f"{ours}.encoder_in.0", "folded", bn=f"{ours}.encoder_in.1"),
            _Entry(f"{original}.bn0", f"{ours}.encoder_in.1"),
            _Entry(f"{original}.conv1", f"{ours}.decoder_conv.0", "folded", bn=f"{ours}.decoder_conv.1"),
            _Entry(f"{original}.bn1", f"{ours}.decoder_conv.1"),
            _Entry(f"{original}.conv_d1", None, "unused", shape=(d, d, 3, 3)),
            _Entry(f"{original}.conv_d2", f"{ours}.encoder_conv"),
            _Entry(f"{original}.conv_l", None, "unused", shape=(d, d, 3, 3)),
            _Entry(f"{original}.conv3", f"{ours}.fuse.0", "folded", bn=f"{ours}.fuse.1"),
            _Entry(f"{original}.bn3", f"{ours}.fuse.1"),
        ]
    for level in (5, 4, 3, 2):
        entries += [
            _Entry(f"lam{level}.conv1_1", f"lam{level}.a_in"),
            _Entry(f"lam{level}.conv1_2", f"lam{level}.b_in"),
            _Entry(f"lam{level}.conv1_2_1", f"lam{level}.b_gate.1"),
            _Entry(f"lam{level}.conv1_2_2", f"lam{level}.b_gate.3"),
            _Entry(f"lam{level}.conv2_1", f"lam{level}.a_vertical"),
            _Entry(f"lam{level}.conv2_2", f"lam{level}.a_horizontal"),
            _Entry(f"lam{level}.conv3", f"lam{level}.a_out"),
            _Entry(f"lam{level}.conv4", f"lam{level}.out"),
        ]
    entries += [_Entry(f"hydra_head.heads.{c}", f"head.branches.{c}") for c in CLASSES]
    return entries  # our deep-supervision heads (training only) have no counterpart


def _under(keys: list[str], prefix: str) -> list[str]:
    return [k for k in keys if k.startswith(prefix + ".")]


def to_original(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict -> the original layout (ordered as the original saves it).

    Folded biases and the unused convolutions are zeros; ``aux_heads`` (deep supervision,
    training only) are dropped.
    """
    keys = list(state)
    out: dict[str, torch.Tensor] = {}
    for e in _entries(config):
        if e.kind == "unused":
            out[f"{e.original}.weight"] = torch.zeros(e.shape)
            out[f"{e.original}.bias"] = torch.zeros(e.shape[0])
            continue
        names = _under(keys, e.ours)
        if not names:
            raise LayoutError(f"our state dict has no entries under {e.ours!r}")
        for name in names:
            out[e.original + name[len(e.ours) :]] = state[name]
        if e.kind == "folded":
            weight = state[f"{e.ours}.weight"]
            out[f"{e.original}.bias"] = torch.zeros(weight.shape[0], dtype=state[f"{e.bn}.running_mean"].dtype)
    return out


def from_original(
    state: dict[str, torch.Tensor], config: ModelConfig, template: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The original layout -> our state dict for ``config`` (``template``: our model's own
    ``state_dict()``, for names and shapes). Raises :class:`LayoutError` naming the first few
    missing, unexpected or mis-shaped entries."""
    expected = to_original(template, config)
    check_entries(state, expected)
    keys = list(template)
    ours: dict[str, torch.Tensor] = {}
    folds: list[tuple[str, torch.Tensor]] = []
    for e in _entries(config):
        if e.kind == "unused":
            continue
        for name in _under(keys, e.ours):
            ours[name] = state[e.original + name[len(e.ours) :]]
        if e.kind == "folded":
            folds.append((f"{e.bn}.running_mean", state[f"{e.original}.bias"]))
    for name, bias in folds:
        ours[name] = ours[name] - bias.to(ours[name].dtype)
    missing = [k for k in keys if k not in ours]
    if missing:  # only our training-only heads can be left: the caller builds without them
        raise LayoutError(f"the original layout has nothing for {', '.join(missing[:3])}")
    return ours


def check_entries(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Same names and shapes as ``expected``, or a one-line :class:`LayoutError`."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {list(state[k].shape)} (expected {list(expected[k].shape)})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
    if problems:
        raise LayoutError("; ".join(problems))


def is_original_layout(state: dict[str, torch.Tensor]) -> bool:
    """True for a state dict with the original code's module names."""
    return any(k.startswith(("bkbone.", "hydra_head.")) for k in state)


def infer_model_config(state: dict[str, torch.Tensor]) -> ModelConfig:
    """The architecture an original-layout state dict was saved from: the encoder from the
    backbone's blocks, ``D`` and the Hydra width from the EX branch. Falls back to the published
    ResNet-50 / D = 256 for what it cannot see (the shape check then names what is wrong)."""
    if "bkbone.layer1.0.conv3.weight" in state:
        encoder = "resnet50"
    elif "bkbone.layer3.5.conv1.weight" in state:
        encoder = "resnet34"
    elif "bkbone.layer1.0.conv1.weight" in state:
        encoder = "resnet18"
    else:
        encoder = "resnet50"
    hidden = state.get("hydra_head.heads.EX.0.weight")
    if hidden is None or hidden.ndim != 4:
        return ModelConfig(encoder=encoder)
    d, h = int(hidden.shape[1]), int(hidden.shape[0])
    ratio = h / d
    if max(1, int(d * ratio)) != h or not 0 < ratio <= 4:
        ratio = 0.25
    return ModelConfig(encoder=encoder, decoder_channels=d, hydra_hidden_ratio=ratio)


def unwrap_state(obj: object) -> dict[str, torch.Tensor] | None:
    """A state dict out of what ``torch.load``/safetensors gave: plain, or wrapped in
    ``{"state_dict" | "model_state_dict" | "model": ...}``, with DataParallel/DDP's ``module.``
    prefix removed. ``None`` when it is not a dict of tensors."""
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        return None
    if all(k.startswith(DDP_PREFIX) for k in obj):
        obj = {k[len(DDP_PREFIX) :]: v for k, v in obj.items()}
    return obj
