"""OpenVINO: the exported network behind :func:`hydralanet.load_model`, run by Intel's OpenVINO
runtime on the CPU.

A folder ``python -m hydralanet export --format openvino`` wrote is a checkpoint folder whose
weights are OpenVINO's IR, ``model.xml`` (the graph) and ``model.bin`` (the weights, float32),
beside the usual ``config.json`` and card. The graph is the ONNX export's
(:mod:`hydralanet.inference.onnx_model`: input ``image`` ``B x 3 x S x S``, output ``logits``
``B x 4 x S x S``, any batch, any side that is a multiple of 32), converted by OpenVINO;
preprocessing and calibration stay outside it, as in PyTorch.

Precision: ``fp32`` runs the graph in float32; ``bf16`` lets OpenVINO run it in bfloat16 (on CPUs
with AVX512-BF16 or AMX, where OpenVINO uses those units); ``auto`` picks bf16 where the CPU has
it, else fp32. One compiled model is kept per precision, built on first use.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

import torch
from torch import nn

from ..checkpoints.format import CheckpointError
from .onnx_model import INPUT_NAME, OUTPUT_NAME

RUNTIME_HINT = "pip install 'hydralanet[openvino]' (openvino)"
HINTS = {"fp32": "f32", "bf16": "bf16"}  # our precision names -> OpenVINO's INFERENCE_PRECISION_HINT


def openvino_module():
    try:
        import openvino
    except ImportError:
        raise CheckpointError(f"OpenVINO models need the OpenVINO runtime: {RUNTIME_HINT}") from None
    return openvino


@functools.cache
def openvino_has_bf16() -> bool:
    """True when OpenVINO runs bf16 natively on this machine's CPU (asked once per process)."""
    core = openvino_module().Core()
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoNetwork(nn.Module):
    """An IR model behind the ``nn.Module`` interface the inference code calls: ``forward``
    takes the normalised batch and returns float32 logits in fp32; :meth:`at` gives the same
    network at another precision. It has no parameters: the weights live in OpenVINO."""

    def __init__(self, path: str | os.PathLike, *, label: str | None = None, threads: int | None = None) -> None:
        super().__init__()
        ov = openvino_module()
        label = label or str(path)
        self.core = ov.Core()
        try:
            self.graph = self.core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises its own exception types for bad files
            message = " ".join(str(exc).split())[:300]
            raise CheckpointError(f"{label}: {Path(path).name} is not a model OpenVINO can read ({message})") from None
        inputs = [name for i in self.graph.inputs for name in sorted(i.get_names())]
        outputs = [name for o in self.graph.outputs for name in sorted(o.get_names())]
        if inputs != [INPUT_NAME] or OUTPUT_NAME not in outputs:
            raise CheckpointError(
                f"{label}: {Path(path).name} takes {inputs} and gives {outputs}; expected one input "
                f"{INPUT_NAME!r} and an output {OUTPUT_NAME!r} (python -m hydralanet export writes them)"
            )
        self.threads = threads or torch.get_num_threads()
        self._compiled: dict[str, object] = {}
        self._lock = threading.Lock()  # the app's visitors share one model from several threads

    def compiled(self, precision: str):
        """The model compiled for the CPU at ``precision`` (``fp32`` or ``bf16``), built once."""
        if precision not in HINTS:
            raise ValueError(f"precision={precision!r}: OpenVINO runs this model in fp32 or bf16")
        with self._lock:
            if precision not in self._compiled:
                self._compiled[precision] = self.core.compile_model(
                    self.graph,
                    "CPU",
                    {
                        "INFERENCE_PRECISION_HINT": HINTS[precision],
                        "INFERENCE_NUM_THREADS": self.threads,
                        "PERFORMANCE_HINT": "LATENCY",
                    },
                )
            return self._compiled[precision]

    def run(self, x: torch.Tensor, precision: str) -> torch.Tensor:
        compiled = self.compiled(precision)
        batch = x.detach().to("cpu", torch.float32).contiguous().numpy()
        request = compiled.create_infer_request()  # one per call: requests are not shared between threads
        logits = request.infer({INPUT_NAME: batch})[compiled.output(OUTPUT_NAME)]
        return torch.from_numpy(logits.copy())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x, "fp32")

    def at(self, precision: str) -> nn.Module:
        return self if precision == "fp32" else _AtPrecision(self, precision)


class _AtPrecision(nn.Module):
    """An :class:`OpenVinoNetwork` run at a fixed precision other than fp32."""

    def __init__(self, network: OpenVinoNetwork, precision: str) -> None:
        super().__init__()
        self.network, self.precision = network, precision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.run(x, self.precision)
