"""ONNX: export a checkpoint's network to ``model.onnx`` and run such a folder with ONNX Runtime.

An exported folder is a checkpoint folder whose weights are ``model.onnx`` instead of
``model.safetensors``: the same ``config.json`` (architecture, preprocessing, thresholds,
calibration, provenance with an ``exported`` entry) and a card that says what the network
expects. :func:`hydralanet.load_model` opens it like any other folder, so the CLI, the batch
pipeline and the app run it unchanged; the network then runs in ONNX Runtime (fp32, on the CPU).

The graph takes the *preprocessed* square, ``image``: float32 ``B x 3 x S x S`` (any batch,
any side that is a multiple of 32; the checkpoint's own side is ``preprocessing.input_size``)
and returns ``logits``: float32 ``B x 4 x S x S`` in the order EX, HE, MA, SE. Preprocessing
(field-of-view crop, resize, green-channel CLAHE, ImageNet mean/std) and calibration
(``sigmoid(a * logit + b)``) stay outside the graph, as in PyTorch; the card spells them out
for code that runs the graph without this package. ONNX files are protobuf, never pickle.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint_format import CARD_NAME, CONFIG_NAME, ONNX_NAME, CheckpointError
from .config import CLASS_NAMES, CLASSES, CheckpointConfig, format_threshold

# Opset 17: ONNX Runtime 1.14 and newer, OpenVINO 2023 and newer run it.
OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
# The side of the example square the graph is traced with; the exported graph takes any side.
TRACE_SIDE = 256
# Export fails if the graph's probabilities differ from PyTorch's by more than this.
PARITY_TOLERANCE = 1e-4
RUNTIME_HINT = "pip install 'hydralanet[onnx]' (onnxruntime)"


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise CheckpointError(f"ONNX models need ONNX Runtime: {RUNTIME_HINT}") from None
    return onnxruntime


class OnnxNetwork(nn.Module):
    """An exported graph behind the ``nn.Module`` interface the inference code calls:
    ``forward`` takes the normalised batch and returns the logits, as :class:`HydraLANet`
    does. It has no parameters: the weights live in the ONNX Runtime session."""

    def __init__(self, path: str | os.PathLike, *, label: str | None = None, threads: int | None = None) -> None:
        super().__init__()
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3  # warnings about unused initialisers are not the user's business
        label = label or str(path)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime raises its own exception types for bad files
            message = " ".join(str(exc).split())[:300]
            raise CheckpointError(
                f"{label}: {Path(path).name} is not a graph ONNX Runtime can run ({message})"
            ) from None
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [INPUT_NAME] or OUTPUT_NAME not in outputs:
            raise CheckpointError(
                f"{label}: {Path(path).name} takes {inputs} and gives {outputs}; "
                f"expected one input {INPUT_NAME!r} and an output {OUTPUT_NAME!r} (python -m hydralanet export writes them)"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        return torch.from_numpy(logits)


def _example(side: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, side, side, generator=generator)


def parity(network: nn.Module, graph: OnnxNetwork, side: int) -> float:
    """Largest |difference| of the sigmoid probabilities of the PyTorch network and the graph on a
    seeded random batch of two ``side`` squares."""
    x = _example(side)
    with torch.inference_mode():
        expected = torch.sigmoid(network(x).float())
    got = torch.sigmoid(graph(x))
    return float((expected - got).abs().max())


def _source_card(source: str | os.PathLike | None, allow_pickle: bool) -> str | None:
    from .sources import locate

    card = locate(source, allow_pickle=allow_pickle).weights.parent / CARD_NAME
    return card.read_text(encoding="utf-8", errors="replace") if card.is_file() else None


def exported_card(config: CheckpointConfig, source_card: str | None) -> str:
    """The exported folder's card: the source card's front matter (the Hub reads it at the
    top), how to run the graph, then the rest of the source checkpoint's card."""
    front = ""
    if source_card and source_card.startswith("---\n") and "\n---\n" in source_card[4:]:
        end = source_card.index("\n---\n", 4) + 5
        front, source_card = source_card[:end], source_card[end:].lstrip("\n")
    pre = config.preprocessing
    side = pre.input_size
    calib = config.calibration or {}
    lines = [
        f"# {config.name} (ONNX)",
        "",
        f"`{ONNX_NAME}` is the network of the checkpoint below, exported to ONNX (opset {OPSET}) by "
        "`python -m hydralanet export`. `hydralanet.load_model` and `python -m hydralanet predict --model "
        "THIS_FOLDER` run it with ONNX Runtime (`pip install 'hydralanet[onnx]'`). To run it without this package:",
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
) -> tuple[Path, float, object]:
    """Export ``source`` (anything :func:`hydralanet.load_model` opens) to the folder ``out``:
    ``model.onnx`` (dynamic batch and side), ``config.json`` and the card, written atomically.
    Returns ``(folder, parity, loaded)``: ``parity`` is the largest probability difference
    between PyTorch and ONNX Runtime on a random batch at the model's own side (export fails
    above 1e-4)."""
    import json

    from .checkpoint import load_model
    from .system import replace_folder

    loaded = load_model(source, device="cpu", allow_pickle=allow_pickle)
    if isinstance(loaded.model, OnnxNetwork):
        raise CheckpointError(f"{loaded.identity['source']}: is already an ONNX model")
    _onnxruntime()  # fail before the slow export when the runtime is missing
    network = copy.deepcopy(loaded.model).float().eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                network,
                (_example(TRACE_SIDE),),
                str(tmp / ONNX_NAME),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={
                    INPUT_NAME: {0: "batch", 2: "side", 3: "side"},
                    OUTPUT_NAME: {0: "batch", 2: "side", 3: "side"},
                },
                opset_version=OPSET,
            )
        graph = OnnxNetwork(tmp / ONNX_NAME, label=str(out))
        side = loaded.config.preprocessing.input_size
        gap = parity(network, graph, side)
        if not np.isfinite(gap) or gap > PARITY_TOLERANCE:
            raise CheckpointError(
                f"{out}: the exported graph's probabilities differ from PyTorch's by {gap:.2g} "
                f"(more than {PARITY_TOLERANCE:g}); not written"
            )
        config = copy.deepcopy(loaded.config)
        config.provenance["exported"] = {
            "format": "onnx",
            "opset": OPSET,
            "from": loaded.identity["source"],
            "from_sha256": loaded.identity["sha256"],
            "parameters": loaded.identity["parameters"],
            "max_prob_difference": float(f"{gap:.3g}"),
        }
        (tmp / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        (tmp / CARD_NAME).write_text(exported_card(config, _source_card(source, allow_pickle)))
        for path in [tmp, *tmp.iterdir()]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, gap, loaded
