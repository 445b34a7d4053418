"""The interface every method implements, and plain supervised training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from pointseg.models import SegmentationModel
from pointseg.options import Options, option


@dataclass(frozen=True)
class MethodOptions(Options):
    """The ``method`` section's shared keys; each method's own options are in ``method.<name>`` (its ``Options``)."""

    section: ClassVar[str] = "method"
    name: str = option("supervised", "supervised | fixmatch | pseudoseg (the last two also train on unlabeled "
                                     "images)")
    unlabeled_weight: float = option(1.0, "weight of the loss on unlabeled images (fixmatch, pseudoseg)", low=0)


class Method(nn.Module):
    """A training objective. ``forward(model, labeled, unlabeled, head) -> (loss, logs)``.

    ``labeled`` holds ``image``, ``soft_mask`` and ``weight``; ``unlabeled`` (only for methods with
    ``uses_unlabeled``) holds ``image``, ``valid`` and, for monitoring, maybe ``mask``. A method may own
    parameters (extra heads), trained with the model; ``after_step`` runs after each optimiser step. ``head`` names
    the model head (the dataset) the batches belong to; ``None`` for a model with one head.
    """

    uses_unlabeled = False
    options_class: ClassVar[type[Options] | None] = None  # the method's own options (``method.<name>``), if any
    loss: nn.Module
    steps_done: torch.Tensor  # optimiser steps taken (a buffer, with a pairwise term only)

    def __init__(self) -> None:
        super().__init__()
        self.pairwise: nn.Module | None = None

    @classmethod
    def create(cls, loss: nn.Module, model: SegmentationModel, num_classes: int, options: Options | None,
               unlabeled_weight: float, ignore_index: int) -> Method:
        """The method for ``model`` with the supervised ``loss``, its own ``options`` (an ``options_class``) and the
        shared ones."""
        return cls(loss)  # type: ignore[call-arg]

    def add_pairwise(self, loss: nn.Module, weight: float, warmup_steps: int = 0) -> None:
        """Add ``weight * loss(logits, image, valid)`` (e.g. ``GatedCRFLoss``) to the supervised loss of the labeled
        batch, its weight ramped up linearly over the first ``warmup_steps`` steps (counted in the method's state,
        so a resumed run ramps on where it stopped)."""
        self.pairwise, self.pairwise_weight, self.pairwise_warmup = loss, weight, warmup_steps
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    def labeled_loss(self, logits: torch.Tensor, labeled: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """The supervised loss of ``logits`` (B, C, S, S) on the labeled batch, plus the pairwise term if any."""
        loss_sup = self.loss(logits.float(), labeled["soft_mask"], labeled["weight"])
        if self.pairwise is None:
            return loss_sup, {"loss_sup": loss_sup.item()}
        ramp = min(1.0, (int(self.steps_done) + 1) / self.pairwise_warmup) if self.pairwise_warmup else 1.0
        loss_pairwise = self.pairwise(logits, labeled["image"], labeled["valid"])
        loss = loss_sup + ramp * self.pairwise_weight * loss_pairwise
        return loss, {"loss_sup": loss_sup.item(), "loss_pairwise": loss_pairwise.item()}

    def after_step(self, model: SegmentationModel) -> None:
        """Called after every optimiser step (e.g. to update an EMA teacher); subclasses call it too."""
        if self.pairwise is not None:
            self.steps_done += 1


class Supervised(Method):
    """``loss(model(image), soft_mask, weight)`` (plus the pairwise term, if added) on labeled data only."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, model: SegmentationModel, labeled: dict, unlabeled: dict | None = None,
                head: str | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        return self.labeled_loss(model(labeled["image"], head), labeled)
