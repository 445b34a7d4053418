"""Where a run computes: device choice, determinism switches and peak memory."""

from __future__ import annotations

import os

import torch


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    return torch.device(name)


def configure_determinism(device: torch.device, deterministic: bool) -> None:
    """On CUDA, deterministic cuDNN and cuBLAS kernels (``deterministic``) or cuDNN's autotuner off at least.

    CPU kernels are deterministic for a given thread count, so nothing is changed there.
    """
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = False
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)  # ops without such a kernel warn, naming themselves


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: CUDA allocations on a GPU, resident set size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
