"""The interface every method implements, and plain supervised training."""

from __future__ import annotations

import torch
from torch import nn

from pointseg.models import SegmentationModel


class Method(nn.Module):
    """A training objective. ``forward(model, labeled, unlabeled) -> (loss, logs)``.

    ``labeled`` holds ``image``, ``soft_mask`` and ``weight``; ``unlabeled`` (only for methods with
    ``uses_unlabeled``) holds ``image``, ``valid`` and, for monitoring, maybe ``mask``. A method may own
    parameters (extra heads), trained with the model; ``after_step`` runs after each optimiser step.
    """

    uses_unlabeled = False

    def after_step(self, model: SegmentationModel) -> None:
        """Called after every optimiser step (e.g. to update an EMA teacher)."""


class Supervised(Method):
    """``loss(model(image), soft_mask, weight)`` on labeled data only."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, model: SegmentationModel, labeled: dict, unlabeled: dict | None = None
                ) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(labeled["image"])  # (B, C, H, W)
        loss = self.loss(logits.float(), labeled["soft_mask"], labeled["weight"])
        return loss, {"loss_sup": loss.item()}
