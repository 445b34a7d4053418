"""FixMatch for segmentation, with UniMatch's options (Sohn et al. 2020; Yang et al. 2023).

Weak view -> pseudo labels above a confidence threshold; strong views (colour jitter, grayscale, blur, CutMix
between the unlabeled images of the batch, or, as S5's S4P, from a second unlabeled batch: the second half of the
batch) learn to predict them. Options: an EMA teacher makes the pseudo
labels, UniMatch's feature perturbation (dropout on encoder features of the weak view) and dual strong views.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from pointseg.calibration import label_quality
from pointseg.methods.augment import StrongAugment, random_boxes
from pointseg.methods.supervised import Method
from pointseg.models import SegmentationModel
from pointseg.options import Options, option

PARTNERS = ("batch", "second")


@dataclass(frozen=True)
class FixMatchOptions(Options):
    """``method.fixmatch``: FixMatch's pseudo labels and strong views, with UniMatch's options."""

    section: ClassVar[str] = "method.fixmatch"
    threshold: float = option(0.95, "confidence threshold of pseudo labels", low=0, high=1)
    cutmix_p: float = option(0.5, "probability of CutMix between unlabeled images", low=0, high=1)
    cutmix_partner: str = option("batch", "batch (the next image of the batch) | second (the second half of the "
                                          "unlabeled batch: S5's second unlabeled batch; pretrain's choice)",
                                 choices=PARTNERS)
    ema_decay: float | None = option(None, "EMA teacher decay (e.g. 0.999); null: the model labels itself", low=0,
                                     high=1, high_open=True)
    feature_dropout: float = option(0.0, "UniMatch feature perturbation (dropout on encoder features), 0 = off",
                                    low=0, high=1, high_open=True)
    fp_weight: float = option(0.5, "weight of the feature-perturbation loss", low=0)
    dual_strong: bool = option(False, "two strong views (UniMatch)")


class FixMatch(Method):
    uses_unlabeled = True
    options_class = FixMatchOptions

    def __init__(self, loss: nn.Module, options: FixMatchOptions = FixMatchOptions(), unlabeled_weight: float = 1.0,
                 strong: StrongAugment | None = None, model: SegmentationModel | None = None,
                 ignore_index: int = 255) -> None:
        super().__init__()
        self.loss = loss
        self.threshold, self.unlabeled_weight, self.fp_weight = options.threshold, unlabeled_weight, options.fp_weight
        self.strong = strong or StrongAugment()
        self.cutmix_p, self.feature_dropout = options.cutmix_p, options.feature_dropout
        self.dual_strong, self.ignore_index = options.dual_strong, ignore_index
        if options.cutmix_partner not in PARTNERS:
            raise KeyError(f"unknown CutMix partner {options.cutmix_partner!r}; valid: {list(PARTNERS)}")
        self.cutmix_partner = options.cutmix_partner
        self.ema_decay = ema_decay = options.ema_decay
        self.teacher = None
        if ema_decay is not None:
            if model is None:
                raise ValueError("an EMA teacher needs the model to copy")
            self.teacher = copy.deepcopy(model).requires_grad_(False)

    @classmethod
    def create(cls, loss: nn.Module, model: SegmentationModel, num_classes: int, options: Options | None,
               unlabeled_weight: float, ignore_index: int) -> FixMatch:
        return cls(loss, cast(FixMatchOptions, options), unlabeled_weight, StrongAugment(), model, ignore_index)

    @torch.no_grad()
    def pseudo_probs(self, model: SegmentationModel, images: torch.Tensor, head: str | None = None) -> torch.Tensor:
        """``(B, C, H, W)`` class probabilities of the weak view from the teacher (or the model), in eval mode."""
        teacher = self.teacher if self.teacher is not None else model
        was_training = teacher.training
        teacher.eval()
        probs = teacher(images, head).float().softmax(1)
        teacher.train(was_training)
        return probs

    def partners(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The unlabeled images that learn and their CutMix partners: every image and the next one (``batch``), or
        the first half and the second half (``second``: a second unlabeled batch, S5's S4P)."""
        if self.cutmix_partner == "batch":
            first = torch.arange(n, device=device)
            return first, torch.roll(first, 1)
        if n < 2 or n % 2:
            raise ValueError(f"CutMix from a second batch splits the unlabeled batch in halves; got {n} images "
                             "(set train.unlabeled_batch_size to an even number, e.g. twice the batch size)")
        first = torch.arange(n // 2, device=device)
        return first, first + n // 2

    def consistency(self, logits: torch.Tensor, pseudo: torch.Tensor, confidence: torch.Tensor,
                    valid: torch.Tensor) -> torch.Tensor:
        """Cross-entropy to confident pseudo labels, summed and divided by the number of valid pixels."""
        ce = F.cross_entropy(logits.float(), pseudo, reduction="none")  # (B, H, W)
        return (ce * (confidence >= self.threshold) * valid).sum() / valid.sum().clamp_min(1)

    def forward(self, model: SegmentationModel, labeled: dict, unlabeled: dict, head: str | None = None
                ) -> tuple[torch.Tensor, dict[str, float]]:
        loss_sup, logs = self.labeled_loss(model(labeled["image"], head), labeled)
        weak, valid = unlabeled["image"], unlabeled["valid"]  # (B, 3, H, W), (B, H, W)
        probs = self.pseudo_probs(model, weak, head)
        confidence, pseudo = probs.max(1)  # (B, H, W)
        views = []
        first, other = self.partners(len(weak), weak.device)
        for _ in range(2 if self.dual_strong else 1):
            _, h, w = pseudo.shape
            box = random_boxes(len(first), h, w, p=self.cutmix_p, device=weak.device)  # (B', H, W)
            strong = self.strong(weak)
            strong = torch.where(box[:, None], strong[other], strong[first])
            mixed = [torch.where(box, t[other], t[first]) for t in (pseudo, confidence, valid)]
            views.append(self.consistency(model(strong, head), *mixed))
        loss_unsup = torch.stack(views).mean()
        loss = loss_sup + self.unlabeled_weight * loss_unsup
        logs |= {"loss_unsup": loss_unsup.item(),
                 "mask_ratio": float(((confidence >= self.threshold) * valid).sum() / valid.sum().clamp_min(1))}
        if self.feature_dropout > 0:
            features = [F.dropout2d(f, self.feature_dropout, training=True) for f in model.encode(weak, head)]
            loss_fp = self.consistency(model.decode(features, head), pseudo, confidence, valid)
            loss = loss + self.fp_weight * loss_fp
            logs["loss_fp"] = loss_fp.item()
        if "mask" in unlabeled:
            quality = label_quality(probs, unlabeled["mask"], self.ignore_index)
            logs.update({f"pseudo_{k}": v for k, v in quality.items()})
        return loss, logs

    @torch.no_grad()
    def after_step(self, model: SegmentationModel) -> None:
        """EMA update of the teacher: ``t <- d * t + (1 - d) * s`` for weights; buffers are copied."""
        super().after_step(model)
        if self.teacher is None or self.ema_decay is None:
            return
        for teacher_param, param in zip(self.teacher.parameters(), model.parameters(), strict=True):
            teacher_param.lerp_(param, 1 - self.ema_decay)
        for teacher_buffer, buffer in zip(self.teacher.buffers(), model.buffers(), strict=True):
            teacher_buffer.copy_(buffer)
