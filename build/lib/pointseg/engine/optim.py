"""Optimisation: AdamW over the trainable parameters and a warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import torch

from pointseg.options import Options, option


@dataclass(frozen=True)
class OptimOptions(Options):
    """The ``optim`` section: AdamW and its warm-up + cosine schedule."""

    section: ClassVar[str] = "optim"
    lr: float = option(0.001, "peak learning rate", low=0, low_open=True)
    weight_decay: float = option(0.0001, "AdamW's decoupled weight decay", low=0)
    warmup_steps: int = option(50, "steps of linear warm-up before the cosine decay", low=0)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor: linear warm-up to 1, then cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def build_optimizer(parameters: Iterable[torch.nn.Parameter], lr: float, weight_decay: float, warmup_steps: int,
                    total_steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the parameters that require a gradient, with ``warmup_cosine`` as its schedule."""
    optimizer = torch.optim.AdamW([p for p in parameters if p.requires_grad], lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup_steps, total_steps))
    return optimizer, scheduler
