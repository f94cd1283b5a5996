"""Checkpoint folders (DESIGN §7): ``config.json`` + ``model.safetensors`` + ``README.md``.

One loader, :func:`load_model`, for the app, the CLI, evaluation and tests. Sources: a local
folder, a Hugging Face Hub repo id with optional ``@revision``, or nothing (the bundled
model under ``weights/``). Nothing is unpickled unless the caller explicitly allows a legacy
``.pt`` state dict, and then only with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .config import CLASS_NAMES, CLASSES, CheckpointConfig
from .fast import optimize_for_inference, resolve_precision
from .model import HydraLANet, count_parameters

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "weights"
# "owner/name" or "owner/name@revision", as the Hub spells repo ids.
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\w./-]+))?$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message is one line naming the source."""


@dataclass
class LoadedModel:
    """A model ready for inference plus what it is: ``identity`` has ``name``, ``source``,
    ``revision`` (Hub commit sha or None) and ``sha256`` of the weights file."""

    model: HydraLANet
    config: CheckpointConfig
    identity: dict[str, Any] = field(default_factory=dict)
    compile: bool = False  # torch.compile the fast path: ~8 % faster per image after ~6-30 s (README, Speed)
    _optimised: dict[tuple[str, bool], nn.Module] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def device(self) -> torch.device:
        return module_device(self.model)

    def inference_model(self, precision: str = "auto") -> nn.Module:
        """The module to run at ``precision``: ``model`` itself for ``fp32`` (the exact path),
        else the fast path (:mod:`hydralanet.fast`), built on first use and kept for the life of
        this object (its weights are a copy taken then)."""
        if precision == "fp32":
            return self.model
        key = (resolve_precision(precision, self.device), self.compile)
        if key not in self._optimised:
            self._optimised[key] = optimize_for_inference(self.model, self.device, key[0], compile=self.compile)
        return self._optimised[key]


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for an empty module)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


# --------------------------------------------------------------------------- saving


def save_checkpoint(
    model: HydraLANet,
    folder: str | os.PathLike,
    config: CheckpointConfig,
    *,
    model_card: str | None = None,
    weights_dtype: torch.dtype | None = None,
) -> Path:
    """Write a checkpoint folder atomically: a reader sees the old folder or the new one.

    ``config.model`` is taken from the model itself so the two can never disagree.
    ``weights_dtype`` (e.g. ``torch.float16``) stores convolution weights in that type to
    halve the file; biases and BatchNorm statistics stay float32. Loading casts back.
    """
    folder = Path(folder)
    config.model = model.config
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        if weights_dtype is not None:
            state = {k: v.to(weights_dtype) if v.is_floating_point() and v.ndim > 1 else v for k, v in state.items()}
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "library": "hydralanet"})
        (tmp / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        (tmp / CARD_NAME).write_text(model_card if model_card is not None else default_model_card(config, model))
        _make_readable(tmp)
        old = None
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{os.getpid()}"
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _make_readable(folder: Path) -> None:
    """mkdtemp makes a private 0700 folder; a checkpoint is read by other users (e.g. the
    Spaces container's UID 1000), so give it the usual umask-based modes."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.iterdir():
        os.chmod(path, 0o666 & ~umask)


def default_model_card(config: CheckpointConfig, model: nn.Module | None = None) -> str:
    """A minimal model card; ``training/`` writes a richer one with data and metrics."""
    params = f"{count_parameters(model) / 1e6:.1f} M parameters, " if model is not None else ""
    lines = [
        "---",
        "library_name: hydralanet",
        "tags: [image-segmentation, medical-imaging, diabetic-retinopathy, fundus]",
        "---",
        f"# {config.name}",
        "",
        f"HydraLA-Net checkpoint: {config.model.encoder} encoder, {config.model.decoder_channels} decoder "
        f"channels, {params}input {config.preprocessing.input_size} px, CLAHE `{config.preprocessing.clahe}`.",
        "",
        "| lesion | threshold |",
        "|---|---|",
        *[f"| {c} ({CLASS_NAMES[c]}) | {config.thresholds[c]:.2f} |" for c in CLASSES],
        "",
        "Research software, not a medical device: not for diagnosis or clinical decisions.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- loading


def load_model(
    source: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    allow_pickle: bool = False,
) -> LoadedModel:
    """Load a checkpoint for inference (eval mode, on ``device``; default CUDA if present).

    ``source``: ``None`` (bundled ``weights/``), a checkpoint folder, a ``.safetensors`` file
    (with ``config.json`` beside it), a legacy ``.pt``/``.pth`` state dict (only with
    ``allow_pickle=True``), or a Hub repo id ``owner/name[@revision]``.
    Raises :class:`CheckpointError` (or :class:`HubError`) with a one-line message.
    """
    revision = None
    if source is None or str(source) == "":
        folder, label = BUNDLED_DIR, "bundled model (weights/)"
        if not (folder / CONFIG_NAME).exists():
            raise CheckpointError(f"{label}: no {CONFIG_NAME} found in {folder}; run `python -m weights.make_untrained`")
        weights = folder / WEIGHTS_NAME
    else:
        path = Path(source).expanduser()
        label = str(source)
        if path.is_dir():
            folder, weights = path, path / WEIGHTS_NAME
        elif path.is_file():
            folder, weights = path.parent, path
        elif _HUB_ID.match(str(source)) and not str(source).startswith((".", "/")):
            from .hub import download_checkpoint  # imported lazily: huggingface_hub is slow to import

            folder, revision = download_checkpoint(str(source))
            weights = folder / WEIGHTS_NAME
        else:
            raise CheckpointError(
                f"{label}: no such file or folder, and not a Hub repo id (expected owner/name[@revision])"
            )

    config = _read_config(folder, label, required=weights.suffix not in (".pt", ".pth"))
    model = HydraLANet.from_config(config.model)
    state = _read_state(weights, label, allow_pickle=allow_pickle)
    missing, unexpected = _match_state(model, state)
    if missing or unexpected:
        raise CheckpointError(
            f"{label}: weights do not match the {config.model.encoder}/D={config.model.decoder_channels} "
            f"architecture in its config ({len(missing)} missing keys e.g. {missing[:2]}, "
            f"{len(unexpected)} unexpected e.g. {unexpected[:2]})"
        )
    model.load_state_dict(state, strict=True)
    model.eval().to(resolve_device(device))
    identity = {
        "name": config.name,
        "source": "bundled" if source in (None, "") else str(source),
        "revision": revision,
        "sha256": _sha256(weights),
        "parameters": count_parameters(model),
    }
    return LoadedModel(model=model, config=config, identity=identity)


def load_model_or_bundled(
    source: str | os.PathLike | None, **kwargs: Any
) -> tuple[LoadedModel, str | None]:
    """:func:`load_model`, falling back to the bundled model when ``source`` fails.

    Returns ``(model, warning)``; ``warning`` is None, or one line saying what failed.
    """
    if source in (None, ""):
        return load_model(None, **kwargs), None
    try:
        return load_model(source, **kwargs), None
    except CheckpointError as exc:
        return load_model(None, **kwargs), f"{exc} - using the bundled model instead"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when present, else CPU; anything else is checked."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available here; use 'cpu' or 'auto'")
    return dev


def _read_config(folder: Path, label: str, *, required: bool) -> CheckpointConfig:
    path = folder / CONFIG_NAME
    if not path.exists():
        if required:
            raise CheckpointError(f"{label}: {CONFIG_NAME} is missing (a checkpoint folder needs config.json)")
        return CheckpointConfig()  # a bare legacy state dict: assume the published architecture
    try:
        return CheckpointConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{label}: {CONFIG_NAME} is not valid JSON ({exc})") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{label}: {CONFIG_NAME} is invalid ({exc})") from None


def _read_state(weights: Path, label: str, *, allow_pickle: bool) -> dict[str, torch.Tensor]:
    if weights.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        if not allow_pickle:
            raise CheckpointError(
                f"{label}: {weights.name} is a pickled PyTorch file; refusing to unpickle it. Convert it to "
                "safetensors, or pass allow_pickle=True (CLI: --allow-pickle) if you trust its origin"
            )
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError for objects weights_only refuses, and more
            raise CheckpointError(f"{label}: cannot load {weights.name} as a plain state dict ({exc})") from None
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]  # a training checkpoint dict: take the model part
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{label}: {weights.name} does not hold a state dict of tensors")
        return state
    if not weights.exists():
        raise CheckpointError(f"{label}: {weights.name} is missing")
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{label}: {weights.name} is not a valid safetensors file ({exc})") from None


def _match_state(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    return missing + wrong, unexpected


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
