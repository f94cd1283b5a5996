"""Checkpoint folders (DESIGN §7): ``config.json`` + ``model.safetensors`` + ``README.md``.

One loader, :func:`load_model`, for the app, the CLI, evaluation and tests. Sources: a local
folder or file, a Hugging Face Hub model repo or Space (:mod:`hydralanet.hub`), or nothing
(the bundled model under ``weights/``); state dicts of the original HydraLA-Net code are
mapped by :mod:`hydralanet.original`. Nothing is unpickled unless the caller explicitly allows
a pickled state dict, and then only with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .checkpoint_format import (  # noqa: F401  (CARD_NAME, CheckpointError: public here too)
    CANDIDATES_TEXT,
    CARD_NAME,
    CONFIG_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    folder_files,
    is_pickle,
    pickle_refusal,
    several_candidates,
    weight_candidates,
)
from .config import CLASS_NAMES, CLASSES, DEFAULT_THRESHOLD, CheckpointConfig, PreprocessConfig, format_threshold
from .fast import optimize_for_inference, resolve_precision
from .hub import parse_hub_source
from .model import HydraLANet, count_parameters
from .original import (
    ORIGINAL_LAYOUT,
    LayoutError,
    check_entries,
    from_original,
    infer_model_config,
    is_original_layout,
    unwrap_state,
)
from .system import replace_folder

# The bundled model: weights/ in a checkout of the repository; hydralanet/bundled/ once installed.
_PACKAGED = Path(__file__).resolve().parent / "bundled"
BUNDLED_DIR = _PACKAGED if (_PACKAGED / CONFIG_NAME).exists() else Path(__file__).resolve().parent.parent / "weights"


@dataclass
class LoadedModel:
    """A model ready for inference plus what it is: ``identity`` has ``name``, ``source``,
    ``revision`` (Hub commit sha or None) and ``sha256`` of the weights file."""

    model: HydraLANet
    config: CheckpointConfig
    identity: dict[str, Any] = field(default_factory=dict)
    compile: bool = False  # torch.compile the fast path: ~8 % faster per image after ~6-30 s (README, Speed)
    _optimised: dict[tuple[str, bool], nn.Module] = field(default_factory=dict, init=False, repr=False, compare=False)
    # The app's sessions share one LoadedModel from several threads: build the fast path once.
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

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
        with self._lock:
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
        replace_folder(tmp, folder)
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
        *[f"| {c} ({CLASS_NAMES[c]}) | {format_threshold(config.thresholds[c])} |" for c in CLASSES],
        "",
        "Research software, not a medical device: not for diagnosis or clinical decisions.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class _Located:
    """Where a source's files are: the weights file, the config.json to use (or None), how to
    name the source in messages, the Hub revision, and the weights file as people name it."""

    weights: Path
    config: Path | None
    label: str
    revision: str | None = None
    file: str = WEIGHTS_NAME


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
    layout (:mod:`hydralanet.original`) are recognised and mapped exactly, plain or wrapped
    (``state_dict``/``model_state_dict``/``model``) and with DDP's ``module.`` prefix.
    Raises :class:`CheckpointError` (or :class:`HubError`) with a one-line message.
    """
    found = _locate(source, allow_pickle=allow_pickle)
    label = found.label
    state = _read_state(found.weights, label, allow_pickle=allow_pickle, config_missing=found.config is None)
    sha256 = _sha256(found.weights)
    original = is_original_layout(state)
    if found.config is not None:
        config = _read_config(found.config, label)
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
        _check_own_layout(model, state, config, label)
    model.load_state_dict(state, strict=True)
    model.eval().to(resolve_device(device))
    identity = {
        "name": config.name,
        "source": "bundled" if source in (None, "") else str(source),
        "revision": found.revision,
        "file": found.file,
        "sha256": sha256,
        "parameters": count_parameters(model),
        # Loaded from the original layout now, or a folder `convert` wrote from it earlier.
        "converted_from": ORIGINAL_LAYOUT if original else config.provenance.get("converted_from"),
    }
    return LoadedModel(model=model, config=config, identity=identity)


def original_config(state: dict[str, torch.Tensor], *, file: str, sha256: str) -> CheckpointConfig:
    """The config of an original-layout state dict that came without one: its architecture,
    the original code's preprocessing (green CLAHE 1.5 / 8x8 after resizing the photo's centre
    square to 1024 px, ImageNet mean/std) and its 0.35 thresholds."""
    return CheckpointConfig(
        model=infer_model_config(state),
        preprocessing=PreprocessConfig(crop="centre_square"),
        thresholds=dict.fromkeys(CLASSES, DEFAULT_THRESHOLD),
        name=f"hydralanet-original ({Path(file).name})",
        provenance={
            "converted_from": ORIGINAL_LAYOUT,
            "source_file": file,
            "source_sha256": sha256,
            "metrics": "unknown until scored (python -m training.evaluate --model DIR --manifest M)",
        },
    )


def _locate(source: str | os.PathLike | None, *, allow_pickle: bool) -> _Located:
    if source is None or str(source) == "":
        label = "bundled model (weights/)"
        if not (BUNDLED_DIR / CONFIG_NAME).exists():
            raise CheckpointError(
                f"{label}: no {CONFIG_NAME} in {BUNDLED_DIR}; reinstall hydralanet or restore weights/ from git"
            )
        return _Located(BUNDLED_DIR / WEIGHTS_NAME, BUNDLED_DIR / CONFIG_NAME, label)
    path = Path(source).expanduser()
    label = str(source)
    if path.is_dir():
        return _in_folder(path, label, hint=f"pass the file itself, e.g. {path / '<file>'}")
    if path.is_file():
        beside = path.parent / CONFIG_NAME
        return _Located(path, beside if beside.exists() else None, label, file=path.name)
    hub = parse_hub_source(str(source))
    if hub is None or path.parent.is_dir() and str(path.parent) not in ("", "."):
        # A path whose folder exists here is a mistyped local path, not a Hub repo.
        raise CheckpointError(
            f"{label}: no such file or folder, and not a Hub repo id (expected [spaces/]owner/name[@revision][:path])"
        )
    from .hub import download_checkpoint  # imported lazily: huggingface_hub is slow to import

    folder, revision, chosen = download_checkpoint(hub, allow_pickle=allow_pickle)
    # Also when the Hub was offline and the cached snapshot must be searched for the weights.
    located = _in_folder(folder, label, chosen=chosen, hint=f"{hub.where.split('@')[0]}[@revision]:PATH")
    return replace(located, revision=revision)


def _in_folder(folder: Path, label: str, *, chosen: str | None = None, hint: str) -> _Located:
    """A checkpoint folder (config.json + model.safetensors), or the one weights file in it."""
    if chosen is None and (folder / CONFIG_NAME).exists():
        return _Located(folder / WEIGHTS_NAME, folder / CONFIG_NAME, label)
    if chosen is None:
        candidates = weight_candidates(folder_files(folder))
        if not candidates:
            raise CheckpointError(
                f"{label}: {CONFIG_NAME} is missing (a checkpoint folder needs config.json) and no weights file "
                f"({CANDIDATES_TEXT}) is in it"
            )
        if len(candidates) > 1:
            raise CheckpointError(several_candidates(label, candidates, hint))
        chosen = candidates[0]
    weights = folder / chosen
    if not weights.is_file():
        raise CheckpointError(f"{label}: {chosen} is missing")
    beside = weights.parent / CONFIG_NAME
    return _Located(weights, beside if beside.exists() else None, label, file=chosen)


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


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when present, else CPU; anything else is checked."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available here; use 'cpu' or 'auto'")
    return dev


def _read_config(path: Path, label: str) -> CheckpointConfig:
    try:
        return CheckpointConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{label}: {CONFIG_NAME} is not valid JSON ({exc})") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{label}: {CONFIG_NAME} is invalid ({exc})") from None


def _read_state(weights: Path, label: str, *, allow_pickle: bool, config_missing: bool) -> dict[str, torch.Tensor]:
    """The state dict in a weights file, unwrapped (:func:`hydralanet.original.unwrap_state`)."""
    if is_pickle(weights):
        if not allow_pickle:
            raise CheckpointError(pickle_refusal(label, weights.name))
        try:
            loaded = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError for objects weights_only refuses, and more
            raise CheckpointError(
                f"{label}: cannot load {weights.name} as a plain state dict ({_one_line(exc)})"
            ) from None
    else:
        if not weights.exists():
            raise CheckpointError(f"{label}: {weights.name} is missing")
        try:
            loaded = load_file(str(weights))
        except (SafetensorError, OSError, ValueError) as exc:
            if config_missing:
                raise CheckpointError(
                    f"{label}: {CONFIG_NAME} is missing and {weights.name} is not a valid safetensors file ({exc})"
                ) from None
            raise CheckpointError(f"{label}: {weights.name} is not a valid safetensors file ({exc})") from None
    state = unwrap_state(loaded)
    if state is None:
        raise CheckpointError(f"{label}: {weights.name} does not hold a state dict of tensors")
    return state


def _check_own_layout(model: nn.Module, state: dict[str, torch.Tensor], config: CheckpointConfig, label: str) -> None:
    try:
        check_entries(state, model.state_dict())
    except LayoutError as exc:
        raise CheckpointError(
            f"{label}: weights do not match the {config.model.encoder}/D={config.model.decoder_channels} "
            f"architecture in its config: {exc}"
        ) from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
