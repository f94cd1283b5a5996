"""Reading and writing checkpoint folders (docs/architecture.md#checkpoint-format): ``config.json``, ``model.safetensors``
(or a state dict the caller allowed to unpickle, read with ``weights_only=True``) and the
model card; the config of an original-layout state dict that came without one."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import CLASS_NAMES, CLASSES, DEFAULT_THRESHOLD, CheckpointConfig, PreprocessConfig, format_threshold
from ..io.system import replace_folder
from ..model.network import HydraLANet, count_parameters
from .format import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, CheckpointError, is_pickle, pickle_refusal
from .original import ORIGINAL_LAYOUT, LayoutError, check_entries, infer_model_config, unwrap_state


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


def read_config(path: Path, label: str) -> CheckpointConfig:
    try:
        return CheckpointConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{label}: {CONFIG_NAME} is not valid JSON ({exc})") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{label}: {CONFIG_NAME} is invalid ({exc})") from None


def read_state(weights: Path, label: str, *, allow_pickle: bool, config_missing: bool) -> dict[str, torch.Tensor]:
    """The state dict in a weights file, unwrapped (:func:`hydralanet.checkpoints.original.unwrap_state`)."""
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


def check_own_layout(model: nn.Module, state: dict[str, torch.Tensor], config: CheckpointConfig, label: str) -> None:
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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
