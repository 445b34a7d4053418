"""The random streams of a run, and the state of every global generator (saved in checkpoints)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

STREAMS = ("model", "method", "labeled", "unlabeled", "bands")  # the independent random streams of a run


def stream_seed(seed: int, stream: str, index: int = 0) -> int:
    """The seed of one random stream of a run (``STREAMS``), independent of the others (NumPy SeedSequence);
    ``index`` > 0: the same stream of the run's ``index``-th dataset (index 0 is the run's first or only one)."""
    key = [seed, STREAMS.index(stream)] + ([index] if index else [])
    return int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0] >> 1)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), NumPy's and Python's global generators, e.g. before a model is built.

    pointseg itself draws only from torch's and from explicit NumPy generators; the other two are seeded (and
    checkpointed) for code of other libraries that may draw from them.
    """
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    random.seed(seed)


def rng_state() -> dict[str, Any]:
    """The state of every global generator: torch (CPU, and CUDA when started), NumPy and Python."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
            "numpy": np.random.get_state(), "python": random.getstate()}  # noqa: NPY002


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])
