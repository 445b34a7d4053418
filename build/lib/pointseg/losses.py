"""Losses on (soft) targets with per-pixel weights; hard partial losses are their one-hot special case.

Shapes: ``logits`` (B, C, H, W); soft targets ``soft`` (B, C, H, W) with class proportions per pixel and
``weight`` (B, H, W) >= 0; hard targets ``target`` (B, H, W) with ``ignore_index`` for unlabeled pixels.
Every loss is the weighted mean ``sum_i w_i l_i / sum_i w_i`` over the pixels of the whole batch (for hard
targets: the plain mean over labeled pixels). A batch whose weights are all zero gives exactly 0 (and zero
gradients), never NaN; pixels of weight 0 get exactly zero gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from pointseg.options import Options, option


def _weighted_mean(per_pixel: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    total = weight.sum()
    return (per_pixel * weight).sum() / total.clamp_min(torch.finfo(total.dtype).tiny)


def single_class_weight(soft: torch.Tensor, weight: torch.Tensor, multi_class: bool = True) -> torch.Tensor:
    """``weight`` (B, H, W), zeroed where ``soft`` (B, C, H, W) mixes classes unless ``multi_class``.

    ``multi_class=False`` is the paper's ablation that trains on single-class pixels only.
    """
    if multi_class:
        return weight
    return weight * (soft.amax(1) >= 1 - 1e-6)


def soft_cross_entropy(logits: torch.Tensor, soft: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``sum_i w_i * (-sum_c q_ic log p_ic) / sum_i w_i``."""
    log_p = F.log_softmax(logits.float(), dim=1)  # (B, C, H, W)
    return _weighted_mean(-(soft * log_p).sum(1), weight)


def kl_divergence(logits: torch.Tensor, soft: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``sum_i w_i * KL(q_i || p_i) / sum_i w_i``; 0 for a perfect prediction ``p = q``."""
    log_p = F.log_softmax(logits.float(), dim=1)  # (B, C, H, W)
    return _weighted_mean((torch.xlogy(soft, soft) - soft * log_p).sum(1), weight)


def soft_focal_loss(logits: torch.Tensor, soft: torch.Tensor, weight: torch.Tensor, gamma: float = 2.0
                    ) -> torch.Tensor:
    """``sum_i w_i * (-sum_c q_ic (1 - p_ic)^gamma log p_ic) / sum_i w_i``; focal loss for one-hot ``q``."""
    log_p = F.log_softmax(logits.float(), dim=1)  # (B, C, H, W)
    focal_weight = (1 - log_p.exp()).pow(gamma)  # (B, C, H, W)
    return _weighted_mean(-(soft * focal_weight * log_p).sum(1), weight)


def one_hot_target(target: torch.Tensor, num_classes: int, ignore_index: int = 255
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard ``target`` (B, H, W) -> one-hot ``soft`` (B, C, H, W) and 0/1 ``weight`` (B, H, W)."""
    labeled = target != ignore_index  # (B, H, W)
    soft = F.one_hot(torch.where(labeled, target, 0).long(), num_classes).permute(0, 3, 1, 2)
    return soft * labeled.unsqueeze(1), labeled.float()


def partial_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Cross-entropy averaged over labeled pixels: ``-1/|L| * sum_{i in L} log p_i(y_i)``."""
    return soft_cross_entropy(logits, *one_hot_target(target, logits.shape[1], ignore_index))


def partial_focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
                       ignore_index: int = 255) -> torch.Tensor:
    """Focal loss averaged over labeled pixels: ``-1/|L| * sum_{i in L} (1 - p_i)^gamma log p_i``."""
    return soft_focal_loss(logits, *one_hot_target(target, logits.shape[1], ignore_index), gamma)


class SoftCrossEntropy(nn.Module):
    def __init__(self, multi_class: bool = True) -> None:
        super().__init__()
        self.multi_class = multi_class

    def forward(self, logits: torch.Tensor, soft: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return soft_cross_entropy(logits, soft, single_class_weight(soft, weight, self.multi_class))


class KLDivergence(SoftCrossEntropy):
    def forward(self, logits: torch.Tensor, soft: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return kl_divergence(logits, soft, single_class_weight(soft, weight, self.multi_class))


class SoftFocalLoss(nn.Module):
    def __init__(self, gamma: float = 2.0, multi_class: bool = True) -> None:
        super().__init__()
        self.gamma = gamma
        self.multi_class = multi_class

    def forward(self, logits: torch.Tensor, soft: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return soft_focal_loss(logits, soft, single_class_weight(soft, weight, self.multi_class), self.gamma)


LOSSES: dict[str, type[nn.Module]] = {"ce": SoftCrossEntropy, "focal": SoftFocalLoss, "kl": KLDivergence}


@dataclass(frozen=True)
class LossOptions(Options):
    """The ``loss`` section: the supervised loss and the optional Gated CRF term."""

    section: ClassVar[str] = "loss"
    name: str = option("ce", "ce | focal | kl, on soft targets weighted per pixel (0 = unlabeled)",
                       choices=tuple(LOSSES))
    gamma: float = option(2.0, "focal: the focusing exponent", low=0)
    pairwise_weight: float = option(0.0, "Gated CRF loss on the labeled crops (Obukhov et al. 2019); 0 = off", low=0)
    pairwise_warmup: int = option(0, "steps over which its weight ramps up linearly", low=0)
    crf_sigma_xy: float = option(6.0, "kernel: position sigma, in training-resolution pixels", low=0, low_open=True)
    crf_sigma_rgb: float = option(0.1, "kernel: colour sigma, on bands scaled to [0, 1]", low=0, low_open=True)
    crf_radius: int = option(5, "neighbours within this many (down-sampled) pixels", low=1)
    crf_downsample: int = option(4, "the loss runs at 1/crf_downsample of the crop (2: 4x the cost)", low=1)


def build_loss(name: str, gamma: float = 2.0, multi_class: bool = True) -> nn.Module:
    """A loss of ``LOSSES`` taking ``(logits, soft, weight)``; ``gamma`` applies to ``focal`` only."""
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; valid: {sorted(LOSSES)}")
    if name == "focal":
        return SoftFocalLoss(gamma=gamma, multi_class=multi_class)
    return LOSSES[name](multi_class=multi_class)


def gated_crf_loss(probs: torch.Tensor, image: torch.Tensor, valid: torch.Tensor, *, sigma_xy: float = 6.0,
                   sigma_rgb: float = 0.1, radius: int = 5, downsample: int = 2) -> torch.Tensor:
    """Gated CRF loss (Obukhov et al. 2019): neighbours that look alike should not be given different classes.

    ``probs`` (B, C, H, W) class probabilities, ``image`` (B, K, H, W) the input bands (scaled to [0, 1]),
    ``valid`` (B, H, W) the gate (1 where a pixel may take part, 0 on padding or nodata). At ``1/downsample`` of the
    resolution (area-averaged probabilities and bands, a pixel valid only if its whole block is), for every pixel
    ``i`` and neighbour ``j != i`` within ``radius`` (a square window, unfolded)::

        k_ij = exp(-|p_i - p_j|^2 / (2 sigma_xy^2) - |I_i - I_j|^2 / (2 sigma_rgb^2))  (p in full-res pixels)
        loss = sum_ij g_i g_j k_ij (1 - sum_c y_ic y_jc) / sum_i g_i

    ``1 - y_i . y_j`` is the probability that ``i`` and ``j`` get different classes (the Potts compatibility). A
    prediction that is constant where the kernel is non-zero costs 0; gated-off pixels get no gradient.
    """
    b = probs.shape[0]
    image, valid = image.to(probs.dtype), valid.to(probs.dtype)
    if downsample > 1:
        probs = F.avg_pool2d(probs, downsample, ceil_mode=True)
        image = F.avg_pool2d(image, downsample, ceil_mode=True)
        valid = -F.max_pool2d(-valid[:, None], downsample, ceil_mode=True)[:, 0]  # min over the block
    diameter = 2 * radius + 1
    hh, ww = probs.shape[-2:]

    def neighbours(x: torch.Tensor) -> torch.Tensor:  # (B, K, h, w) -> (B, K, diameter^2, h, w)
        return F.unfold(x, diameter, padding=radius).view(b, x.shape[1], diameter * diameter, hh, ww)

    offsets = torch.arange(-radius, radius + 1, device=probs.device, dtype=probs.dtype) * downsample
    distance2 = (offsets[:, None] ** 2 + offsets[None, :] ** 2).reshape(-1, 1, 1)  # (diameter^2, 1, 1)
    colour2 = ((neighbours(image) - image[:, :, None]) ** 2).sum(1)  # (B, diameter^2, h, w)
    gate = valid[:, None] * neighbours(valid[:, None])[:, 0]  # (B, diameter^2, h, w); 0 beyond the border
    kernel = gate * torch.exp(-distance2 / (2 * sigma_xy**2) - colour2 / (2 * sigma_rgb**2))
    kernel[:, diameter * diameter // 2] = 0  # no pair of a pixel with itself
    agreement = (neighbours(probs) * probs[:, :, None]).sum(1)  # (B, diameter^2, h, w): sum_c y_ic y_jc
    return (kernel * (1 - agreement)).sum() / valid.sum().clamp_min(1)


class GatedCRFLoss(nn.Module):
    """``gated_crf_loss`` of logits' softmax, with its kernel fixed at construction (see there for the terms)."""

    def __init__(self, sigma_xy: float = 6.0, sigma_rgb: float = 0.1, radius: int = 5, downsample: int = 2) -> None:
        super().__init__()
        if radius < 1 or downsample < 1 or sigma_xy <= 0 or sigma_rgb <= 0:
            raise ValueError("the Gated CRF needs radius >= 1, downsample >= 1 and positive sigmas")
        self.sigma_xy, self.sigma_rgb, self.radius, self.downsample = sigma_xy, sigma_rgb, radius, downsample

    def forward(self, logits: torch.Tensor, image: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return gated_crf_loss(logits.float().softmax(1), image, valid, sigma_xy=self.sigma_xy,
                              sigma_rgb=self.sigma_rgb, radius=self.radius, downsample=self.downsample)
