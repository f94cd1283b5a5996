"""ONNX: the exported graph behind :func:`hydralanet.load_model` (ONNX Runtime), and the names
and checks :mod:`hydralanet.inference.export` writes it with.

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

import os
from pathlib import Path

import torch
from torch import nn

from ..checkpoints.format import CheckpointError

# Opset 17: ONNX Runtime 1.14 and newer, OpenVINO 2023 and newer run it.
OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
# The side of the example square the graph is traced with; the exported graph takes any side.
TRACE_SIDE = 256
# Export fails if the graph's probabilities differ from PyTorch's by more than this.
PARITY_TOLERANCE = 1e-4
RUNTIME_HINT = "pip install 'hydralanet[onnx]' (onnxruntime)"


def onnxruntime_module():
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
        ort = onnxruntime_module()
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


def example_batch(side: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, side, side, generator=generator)


def parity(network: nn.Module, graph: OnnxNetwork, side: int) -> float:
    """Largest |difference| of the sigmoid probabilities of the PyTorch network and the graph on a
    seeded random batch of two ``side`` squares."""
    x = example_batch(side)
    with torch.inference_mode():
        expected = torch.sigmoid(network(x).float())
    got = torch.sigmoid(graph(x))
    return float((expected - got).abs().max())
