"""Training checkpoints: everything a run needs to continue exactly, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pointseg.io import atomic_path, read_torch_file

CHECKPOINT_FORMAT = 2


def save_checkpoint(path: Path, **state: Any) -> None:
    """``state`` (step, model, method, optimiser, schedule, generators, log interval) as ``path``, atomically."""
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """A checkpoint written by ``train``, its tensors on ``device``; an error for unreadable or older files."""
    state = read_torch_file(path, "checkpoint", map_location=device, weights_only=False)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint written by an older pointseg, which cannot be resumed exactly; "
                         "start a new run in another directory")
    return state
