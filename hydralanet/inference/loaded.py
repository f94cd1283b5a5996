"""A checkpoint loaded for inference: on a device, with its fast path built on first use.

One loader, :func:`load_model`, for the app, the CLI, evaluation and tests. Sources: a local
folder or file, a Hugging Face Hub model repo or Space (:mod:`hydralanet.checkpoints.hub`), or nothing
(the bundled model under ``weights/``); state dicts of the original HydraLA-Net code are
mapped by :mod:`hydralanet.checkpoints.original`. Nothing is unpickled unless the caller explicitly allows
a pickled state dict, and then only with ``weights_only=True``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..checkpoints.folder import read_config, sha256_file
from ..checkpoints.format import CONFIG_NAME, CheckpointError
from ..checkpoints.read import identity_of, is_exported, read_network
from ..checkpoints.sources import locate
from ..config import CheckpointConfig
from ..model.network import HydraLANet
from .device import module_device, resolve_device, resolve_precision
from .fast import optimize_for_inference


@dataclass
class LoadedModel:
    """A model ready for inference plus what it is: ``identity`` has ``name``, ``source``,
    ``revision`` (Hub commit sha or None) and ``sha256`` of the weights file."""

    model: HydraLANet
    config: CheckpointConfig
    identity: dict[str, Any] = field(default_factory=dict)
    compile: bool = False  # torch.compile the fast path: ~8 % faster per image after ~6-30 s (docs/speed.md)
    _optimised: dict[tuple[str, bool], nn.Module] = field(default_factory=dict, init=False, repr=False, compare=False)
    # The app's sessions share one LoadedModel from several threads: build the fast path once.
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @property
    def device(self) -> torch.device:
        return module_device(self.model)

    @property
    def runtime(self) -> str:
        """``torch``, or ``ONNX Runtime`` / ``OpenVINO`` for a folder ``python -m hydralanet export`` wrote."""
        return self.identity.get("runtime", "torch")

    def resolve_tta(self, tta: bool | None) -> bool:
        """Whether to average over flips: ``tta`` when given, else the checkpoint's ``config.tta``."""
        return self.config.tta if tta is None else bool(tta)

    def resolve_precision(self, precision: str) -> str:
        """:func:`hydralanet.inference.fast.resolve_precision` for this model. An ONNX graph runs in fp32
        (``auto`` gives fp32); an OpenVINO model in fp32 or, where the CPU has it, bf16 (``auto``
        picks bf16 there). Other precisions are refused with a one-line reason."""
        if self.runtime == "torch":
            return resolve_precision(precision, self.device)
        bf16 = False
        if self.runtime == "OpenVINO":
            from .openvino_model import openvino_has_bf16

            bf16 = openvino_has_bf16()
        if precision == "fp32" or precision == "auto" and not bf16:
            return "fp32"
        if precision in ("auto", "bf16") and bf16:
            return "bf16"
        resolve_precision(precision, self.device)  # unknown names: the usual message
        allowed = "fp32 or bf16" if bf16 else "fp32"
        raise ValueError(f"precision={precision!r}: {self.runtime} runs this model in {allowed} here; use auto or fp32")

    def inference_model(self, precision: str = "auto") -> nn.Module:
        """The module to run at ``precision``: ``model`` itself for ``fp32`` (the exact path),
        else the fast path (:mod:`hydralanet.inference.fast`), built on first use and kept for the life of
        this object (its weights are a copy taken then). An OpenVINO model is compiled for the
        precision instead."""
        if self.runtime == "OpenVINO":
            return self.model.at(self.resolve_precision(precision))
        if precision == "fp32" or self.runtime != "torch":
            return self.model
        key = (resolve_precision(precision, self.device), self.compile)
        with self._lock:
            if key not in self._optimised:
                self._optimised[key] = optimize_for_inference(self.model, self.device, key[0], compile=self.compile)
            return self._optimised[key]


def load_model(
    source: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    allow_pickle: bool = False,
) -> LoadedModel:
    """Load a checkpoint for inference (eval mode, on ``device``; default CUDA if present).

    ``source``: ``None`` (bundled ``weights/``); a checkpoint folder; a folder without
    ``config.json`` holding one weights file (``best_model.pt``, ``model.pt``, ``*.pth``,
    ``*.safetensors``, any subfolder); a ``.safetensors`` file (``config.json`` beside it unless
    it is in the original layout); a pickled ``.pt``/``.pth``/``.bin`` state dict (only with
    ``allow_pickle=True``, read with ``weights_only=True``); or a Hub source
    ``[spaces/]owner/name[@revision][:path]``. State dicts in the original HydraLA-Net code's
    layout (:mod:`hydralanet.checkpoints.original`) are recognised and mapped exactly, plain or wrapped
    (``state_dict``/``model_state_dict``/``model``) and with DDP's ``module.`` prefix.
    Raises :class:`CheckpointError` (or :class:`HubError`) with a one-line message.
    """
    found = locate(source, allow_pickle=allow_pickle)
    if is_exported(found):
        return _load_exported(found, source)
    network = read_network(found, source, allow_pickle=allow_pickle)
    network.model.to(resolve_device(device))
    return LoadedModel(model=network.model, config=network.config, identity=network.identity)


def _load_exported(found, source: str | os.PathLike | None) -> LoadedModel:
    """A folder ``python -m hydralanet export`` wrote: its graph in ONNX Runtime (``model.onnx``)
    or OpenVINO (``model.xml``), on the CPU."""
    if found.weights.suffix.lower() == ".xml":
        from .openvino_model import OpenVinoNetwork as Network

        runtime = "OpenVINO"
    else:
        from .onnx_model import OnnxNetwork as Network

        runtime = "ONNX Runtime"
    if found.config is None:
        raise CheckpointError(
            f"{found.label}: {CONFIG_NAME} is missing beside {found.file} (python -m hydralanet export writes both)"
        )
    config = read_config(found.config, found.label)
    if not found.weights.is_file():
        raise CheckpointError(f"{found.label}: {found.file} is missing")
    network = Network(found.weights, label=found.label)
    exported = config.provenance.get("exported", {})
    identity = identity_of(
        config,
        source,
        found,
        sha256_file(found.weights),
        exported.get("parameters", 0),
        config.provenance.get("converted_from"),
        runtime=runtime,
    )
    return LoadedModel(model=network, config=config, identity=identity)


def load_model_or_bundled(source: str | os.PathLike | None, **kwargs: Any) -> tuple[LoadedModel, str | None]:
    """:func:`load_model`, falling back to the bundled model when ``source`` fails.

    Returns ``(model, warning)``; ``warning`` is None, or one line saying what failed.
    """
    if source in (None, ""):
        return load_model(None, **kwargs), None
    try:
        return load_model(source, **kwargs), None
    except CheckpointError as exc:
        return load_model(None, **kwargs), f"{exc} - using the bundled model instead"
