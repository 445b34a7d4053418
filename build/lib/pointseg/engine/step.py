"""One training step's forward pass as a module, so that DistributedDataParallel can wrap all of it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from pointseg.methods import Method
from pointseg.models import SegmentationModel


@dataclass(frozen=True)
class Task:
    """One dataset of a run: its labeled windows, its unlabeled ones (for methods that use them) and the model
    head it trains (``None``: the model's only head)."""

    labeled: Dataset
    unlabeled: Dataset | None = None
    head: str | None = None


Batches = list[tuple[str | None, dict, dict | None]]  # (head, labeled batch, unlabeled batch) per task


class TrainStep(nn.Module):
    """The method on one batch of every task, the losses summed, plus the model's auxiliary loss (if any).

    With one task the logs are the method's own (``loss``, ``loss_sup``, ...); with several, each task's are
    prefixed ``<head>/`` and ``loss`` is the total.
    """

    def __init__(self, model: SegmentationModel, method: Method) -> None:
        super().__init__()
        self.model, self.method = model, method

    def forward(self, batches: Batches) -> tuple[torch.Tensor, dict[str, float]]:
        losses: list[torch.Tensor] = []
        logs: dict[str, float] = {}
        for head, labeled, unlabeled in batches:
            loss, task_logs = self.method(self.model, labeled, unlabeled, head)
            prefix = f"{head}/" if len(batches) > 1 else ""
            logs |= {f"{prefix}loss": loss.item(), **{prefix + k: v for k, v in task_logs.items()}}
            losses.append(loss)
        total = torch.stack(losses).sum()
        aux = self.model.pop_auxiliary_loss()
        if aux is not None:
            total = total + aux
            logs["loss_aux"] = aux.item()
        logs["loss"] = total.item()
        return total, logs
