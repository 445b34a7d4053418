"""Training checkpoints: everything a run needs to continue exactly, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pointseg.io import read_torch_file, write_torch_file

CHECKPOINT_FORMAT = 2


def save_checkpoint(path: Path, **state: Any) -> None:
    """``state`` (step, model, method, optimiser, schedule, generators, log interval) as ``path``, atomically."""
    write_torch_file(path, {"format": CHECKPOINT_FORMAT, **state}, "the checkpoint")


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """A checkpoint written by ``train``, its tensors on ``device``; an error for unreadable or older files."""
    state = read_torch_file(path, "checkpoint", map_location=device, weights_only=False)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint written by an older pointseg, which cannot be resumed exactly; "
                         "start a new run in another directory")
    return state
