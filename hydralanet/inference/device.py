"""Where and how precisely a model runs: one place that turns ``auto`` into a device and a
precision, for the exact path, the fast path, the exported runtimes and the benchmarks."""

from __future__ import annotations

import platform

import torch
from torch import nn

from ..config import PRECISIONS

PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bf16 in hardware (x86: AVX512-BF16 or AMX-BF16; Arm: BF16).

    oneDNN *accepts* bf16 on any AVX-512 CPU but emulates it where these instructions are
    missing (Skylake/Cascade Lake), which is slower than float32; so ask the CPU, not oneDNN.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    caps = torch.cpu.get_capabilities()
    if platform.machine().lower() in ("x86_64", "amd64", "i686", "x86"):
        return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    return bool(caps.get("bf16") or caps.get("sve_bf16"))


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when present, else CPU; anything else is checked."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available here; use 'cpu' or 'auto'")
    return dev


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on a CPU with native bf16 or on CUDA with bf16, fp16 on other CUDA
    GPUs, else fp32. Other values are checked and returned."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not supported; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision='fp16' needs a CUDA GPU (device is {device.type}); use auto (bf16 where the CPU has it) or fp32"
        )
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for an empty module)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")
