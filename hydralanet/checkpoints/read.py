"""A checkpoint read into a network on the CPU: weights, configuration and identity.

Loading for inference (:func:`hydralanet.inference.load_model`) puts this network on a device
and wraps it; converting (:mod:`hydralanet.checkpoints.convert`) writes it out again. State
dicts of the original HydraLA-Net code are mapped by :mod:`hydralanet.checkpoints.original`.
Nothing is unpickled unless the caller explicitly allows a pickled state dict, and then only
with ``weights_only=True``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..config import CheckpointConfig
from ..model.network import HydraLANet, count_parameters
from .folder import check_own_layout, original_config, read_config, read_state, sha256_file
from .format import CONFIG_NAME, CheckpointError, is_pickle
from .original import ORIGINAL_LAYOUT, LayoutError, from_original, is_original_layout
from .sources import Located, locate

EXPORTED_SUFFIXES = (".onnx", ".xml")


@dataclass
class Checkpoint:
    """A network read from a checkpoint (eval mode, on the CPU), its configuration, and what it
    is: ``identity`` has ``name``, ``source``, ``revision`` (Hub commit sha or None), ``file``,
    ``sha256`` of the weights file, ``parameters`` and ``converted_from``."""

    model: HydraLANet
    config: CheckpointConfig
    identity: dict[str, Any] = field(default_factory=dict)


def is_exported(found: Located) -> bool:
    """A folder ``python -m hydralanet export`` wrote (an ONNX graph or OpenVINO IR)."""
    return found.weights.suffix.lower() in EXPORTED_SUFFIXES


def identity_of(config: CheckpointConfig, source, found: Located, sha256: str, parameters: int, converted_from, **more):
    """What a checkpoint is (:attr:`Checkpoint.identity`)."""
    return {
        "name": config.name,
        "source": "bundled" if source in (None, "") else str(source),
        "revision": found.revision,
        "file": found.file,
        "sha256": sha256,
        "parameters": parameters,
        "converted_from": converted_from,
        **more,
    }


def describe_identity(identity: dict[str, Any]) -> str:
    """One line: name, source, the file used, whether it was converted, and the runtime when it
    is not PyTorch."""
    parts = [identity["source"]]
    if identity.get("revision"):
        parts.append(f"revision {identity['revision'][:12]}")
    if identity.get("file"):
        parts.append(f"file {identity['file']}")
    if identity.get("converted_from"):
        parts.append(f"converted from {identity['converted_from']}")
    if identity.get("runtime", "torch") != "torch":
        parts.append(f"run by {identity['runtime']}")
    return f"{identity['name']} ({', '.join(parts)})"


def read_network(found: Located, source: str | os.PathLike | None, *, allow_pickle: bool) -> Checkpoint:
    """The PyTorch weights ``found`` names, checked against their configuration and loaded
    strictly into a :class:`HydraLANet` in eval mode."""
    label = found.label
    state = read_state(found.weights, label, allow_pickle=allow_pickle, config_missing=found.config is None)
    sha256 = sha256_file(found.weights)
    original = is_original_layout(state)
    if found.config is not None:
        config = read_config(found.config, label)
    elif original:
        config = original_config(state, file=found.file, sha256=sha256)
    elif is_pickle(found.weights):
        config = CheckpointConfig()  # a bare legacy state dict: assume the published architecture
    else:
        raise CheckpointError(f"{label}: {CONFIG_NAME} is missing (a checkpoint folder needs config.json)")
    model = HydraLANet.from_config(config.model)
    if original:
        try:
            state = from_original(state, config.model, model.state_dict())
        except LayoutError as exc:
            raise CheckpointError(
                f"{label}: {found.file} is in {ORIGINAL_LAYOUT} but does not match it: {exc}"
            ) from None
    else:
        check_own_layout(model, state, config, label)
    model.load_state_dict(state, strict=True)
    model.eval()
    # Loaded from the original layout now, or a folder `convert` wrote from it earlier.
    converted = ORIGINAL_LAYOUT if original else config.provenance.get("converted_from")
    identity = identity_of(config, source, found, sha256, count_parameters(model), converted)
    return Checkpoint(model=model, config=config, identity=identity)


def read_checkpoint(source: str | os.PathLike | None = None, *, allow_pickle: bool = False) -> Checkpoint:
    """Read any source :func:`hydralanet.inference.load_model` accepts, except an exported
    ONNX or OpenVINO folder, into a network on the CPU."""
    found = locate(source, allow_pickle=allow_pickle)
    if is_exported(found):
        raise CheckpointError(f"{found.label}: {found.file} is an exported graph; this needs PyTorch weights")
    return read_network(found, source, allow_pickle=allow_pickle)
