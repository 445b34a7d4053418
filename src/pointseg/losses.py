"""Partial losses for sparse labels: only labeled pixels contribute, unlabeled ones get zero gradient.

Shapes: ``logits`` (B, C, H, W), ``target`` (B, H, W) integer class indices with ``ignore_index`` for
unlabeled pixels. Losses are averaged over the labeled pixels of the whole batch (not per image), and are
exactly 0 (with a gradient of 0, never NaN) when the batch has no labeled pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _labeled_log_probs(logits: torch.Tensor, target: torch.Tensor, ignore_index: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of the true class at each pixel (B, H, W) and the labeled-pixel mask (B, H, W)."""
    labeled = target != ignore_index  # (B, H, W)
    log_p = F.log_softmax(logits.float(), dim=1)  # (B, C, H, W)
    safe_target = torch.where(labeled, target, torch.zeros_like(target))
    log_p_true = log_p.gather(1, safe_target.unsqueeze(1)).squeeze(1)  # (B, H, W)
    return log_p_true, labeled


def _mean_over_labeled(per_pixel: torch.Tensor, labeled: torch.Tensor) -> torch.Tensor:
    return (per_pixel * labeled).sum() / labeled.sum().clamp(min=1)


def partial_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Cross-entropy averaged over labeled pixels: ``-1/|L| * sum_{i in L} log p_i(y_i)``."""
    log_p_true, labeled = _labeled_log_probs(logits, target, ignore_index)
    return _mean_over_labeled(-log_p_true, labeled)


def partial_focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
                       ignore_index: int = 255) -> torch.Tensor:
    """Focal loss averaged over labeled pixels: ``-1/|L| * sum_{i in L} (1 - p_i)^gamma log p_i``.

    With ``gamma = 0`` this is :func:`partial_cross_entropy`.
    """
    log_p_true, labeled = _labeled_log_probs(logits, target, ignore_index)
    focal_weight = (1 - log_p_true.exp()).pow(gamma)  # (B, H, W)
    return _mean_over_labeled(-focal_weight * log_p_true, labeled)


class PartialCrossEntropy(nn.Module):
    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return partial_cross_entropy(logits, target, self.ignore_index)


class PartialFocalLoss(nn.Module):
    def __init__(self, gamma: float = 2.0, ignore_index: int = 255) -> None:
        super().__init__()
        self.gamma = gamma
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return partial_focal_loss(logits, target, self.gamma, self.ignore_index)


LOSSES: dict[str, type[nn.Module]] = {"ce": PartialCrossEntropy, "focal": PartialFocalLoss}


def build_loss(name: str, ignore_index: int = 255, gamma: float = 2.0) -> nn.Module:
    """Build a loss from ``LOSSES`` by name; ``gamma`` applies to ``focal`` only."""
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; valid: {sorted(LOSSES)}")
    if name == "focal":
        return PartialFocalLoss(gamma=gamma, ignore_index=ignore_index)
    return LOSSES[name](ignore_index=ignore_index)
