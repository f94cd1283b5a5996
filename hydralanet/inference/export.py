"""``python -m hydralanet export``: a model's network as ONNX (``model.onnx``) or OpenVINO IR
(``model.xml`` + ``model.bin``) with its config and a card that says how to run it
(:mod:`hydralanet.inference.onnx_model` and :mod:`hydralanet.inference.openvino_model` describe the folders)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..checkpoints.format import CARD_NAME, CONFIG_NAME, ONNX_NAME, OPENVINO_NAME, CheckpointError
from ..checkpoints.sources import locate
from ..config import CLASS_NAMES, CLASSES, CheckpointConfig, format_threshold
from ..io.system import replace_folder
from .loaded import LoadedModel, load_model
from .onnx_model import (
    INPUT_NAME,
    OPSET,
    OUTPUT_NAME,
    PARITY_TOLERANCE,
    TRACE_SIDE,
    OnnxNetwork,
    example_batch,
    onnxruntime_module,
    parity,
)
from .openvino_model import OpenVinoNetwork, openvino_module


def _source_card(source: str | os.PathLike | None, allow_pickle: bool) -> str | None:
    card = locate(source, allow_pickle=allow_pickle).weights.parent / CARD_NAME
    return card.read_text(encoding="utf-8", errors="replace") if card.is_file() else None


FORMATS = {
    # format: (file, how it is named, the runtime that load_model runs it with, its install hint)
    "onnx": (ONNX_NAME, "ONNX", "ONNX Runtime", "pip install 'hydralanet[onnx]'"),
    "openvino": (f"{OPENVINO_NAME}` + `model.bin", "OpenVINO IR", "OpenVINO", "pip install 'hydralanet[openvino]'"),
}


def exported_card(config: CheckpointConfig, source_card: str | None, fmt: str = "onnx") -> str:
    """The exported folder's card: the source card's front matter (the Hub reads it at the
    top), how to run the graph, then the rest of the source checkpoint's card."""
    file, kind, runtime, install = FORMATS[fmt]
    front = ""
    if source_card and source_card.startswith("---\n") and "\n---\n" in source_card[4:]:
        end = source_card.index("\n---\n", 4) + 5
        front, source_card = source_card[:end], source_card[end:].lstrip("\n")
    pre = config.preprocessing
    side = pre.input_size
    calib = config.calibration or {}
    lines = [
        f"# {config.name} ({kind})",
        "",
        f"`{file}` is the network of the checkpoint below, exported to {kind} (from ONNX opset {OPSET}) by "
        f"`python -m hydralanet export --format {fmt}`. `hydralanet.load_model` and `python -m hydralanet predict "
        f"--model THIS_FOLDER` run it with {runtime} (`{install}`). To run it without this package:",
        "",
        f"- **Input `{INPUT_NAME}`**: float32, `B x 3 x S x S`, any batch size, any side S that is a multiple of 32; "
        f"this model was trained at S = {side}.",
        "- **Preprocessing** (RGB uint8 photo to input; `hydralanet.preprocessing.preprocess` does exactly this): "
        + (
            "the field of view's bounding box (blurred max(R, G) above "
            f"{pre.fov_threshold:g} x its 99th percentile, largest component) padded with black to a square"
            if pre.crop == "fov"
            else "the photo's centred square"
        )
        + f", resized to S x S; CLAHE `{pre.clahe}` (clip limit {pre.clip_limit:g}, {pre.tile_grid} x {pre.tile_grid} "
        f"tiles, OpenCV); then divided by 255 and normalised with mean {list(pre.mean)} and std {list(pre.std)}.",
        f"- **Output `{OUTPUT_NAME}`**: float32, `B x 4 x S x S`, channels {', '.join(CLASSES)}.",
        "- **Probabilities**: `sigmoid(a * logit + b)` per channel (Platt calibration; `config.json` "
        "`calibration`), or plain `sigmoid(logit)` where a lesion has none.",
        "",
        "| lesion | a | b | threshold |",
        "|---|---|---|---|",
        *[
            f"| {c} ({CLASS_NAMES[c]}) | {calib[c][0]:.4f} | {calib[c][1]:.4f} | {format_threshold(config.thresholds[c])} |"
            if c in calib
            else f"| {c} ({CLASS_NAMES[c]}) | - | - | {format_threshold(config.thresholds[c])} |"
            for c in CLASSES
        ],
        "",
        "---",
        "",
    ]
    return front + "\n".join(lines) + (source_card or "")


def export_onnx(
    source: str | os.PathLike | None,
    out: str | os.PathLike,
    *,
    allow_pickle: bool = False,
) -> tuple[Path, float, LoadedModel]:
    """:func:`export_model` to ONNX (``model.onnx``)."""
    return export_model(source, out, fmt="onnx", allow_pickle=allow_pickle)


def export_model(
    source: str | os.PathLike | None,
    out: str | os.PathLike,
    *,
    fmt: str = "onnx",
    allow_pickle: bool = False,
) -> tuple[Path, float, LoadedModel]:
    """Export ``source`` (anything :func:`hydralanet.load_model` opens) to the folder ``out``:
    ``model.onnx`` (``fmt="onnx"``) or ``model.xml`` + ``model.bin`` (``fmt="openvino"``; the
    ONNX graph converted by OpenVINO), dynamic batch and side, with ``config.json`` and the
    card, written atomically. Returns ``(folder, parity, loaded)``: ``parity`` is the largest
    probability difference between PyTorch and the exported graph in fp32 on a random batch at
    the model's own side (export fails above 1e-4)."""
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r}: choose one of {', '.join(FORMATS)}")
    loaded = load_model(source, device="cpu", allow_pickle=allow_pickle)
    if loaded.runtime != "torch":
        raise CheckpointError(f"{loaded.identity['source']}: is already an exported model ({loaded.runtime})")
    # Fail before the slow export when the runtime is missing.
    onnxruntime_module() if fmt == "onnx" else openvino_module()
    network = copy.deepcopy(loaded.model).float().eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        graph = _write_graph(network, tmp, fmt, label=str(out))
        gap = parity(network, graph, loaded.config.preprocessing.input_size)
        if not np.isfinite(gap) or gap > PARITY_TOLERANCE:
            raise CheckpointError(
                f"{out}: the exported graph's probabilities differ from PyTorch's by {gap:.2g} "
                f"(more than {PARITY_TOLERANCE:g}); not written"
            )
        config = copy.deepcopy(loaded.config)
        config.provenance["exported"] = {
            "format": fmt,
            "opset": OPSET,
            "from": loaded.identity["source"],
            "from_sha256": loaded.identity["sha256"],
            "parameters": loaded.identity["parameters"],
            "max_prob_difference": float(f"{gap:.3g}"),
        }
        (tmp / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        (tmp / CARD_NAME).write_text(exported_card(config, _source_card(source, allow_pickle), fmt))
        for path in [tmp, *tmp.iterdir()]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, gap, loaded


def _write_graph(network: torch.nn.Module, folder: Path, fmt: str, *, label: str) -> torch.nn.Module:
    """The network as ONNX in ``folder``, converted to OpenVINO IR (and the ONNX file removed)
    for ``fmt="openvino"``; returns the written graph, loaded in its runtime."""
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            network,
            (example_batch(TRACE_SIDE),),
            str(folder / ONNX_NAME),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={
                INPUT_NAME: {0: "batch", 2: "side", 3: "side"},
                OUTPUT_NAME: {0: "batch", 2: "side", 3: "side"},
            },
            opset_version=OPSET,
        )
    if fmt == "onnx":
        return OnnxNetwork(folder / ONNX_NAME, label=label)
    ov = openvino_module()
    # float32 weights (compress_to_fp16 would round them to fp16 on disk)
    ov.save_model(ov.convert_model(folder / ONNX_NAME), folder / OPENVINO_NAME, compress_to_fp16=False)
    (folder / ONNX_NAME).unlink()
    return OpenVinoNetwork(folder / OPENVINO_NAME, label=label)
