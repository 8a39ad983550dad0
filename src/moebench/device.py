"""Device helpers shared by every study: ``--device auto``, peak memory, autocast."""
from __future__ import annotations

import resource
from typing import Any

import torch

from moebench.errors import UsageError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; a CUDA device without CUDA is one line."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name}: not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    return device


def peak_memory_gb(device: torch.device) -> float:
    """Peak CUDA memory allocated on CUDA; the process's peak RSS on CPU (in GiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def autocast(precision: str, device: torch.device) -> Any:
    """The run's precision: "bf16" autocasts forwards, "fp32" is a no-op context."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
