"""PseudoSeg (Zou et al., ICLR 2021): pseudo labels from the decoder fused with Grad-CAM refined by self-attention.

A multi-label classifier on the last encoder stage gives Grad-CAMs; self-attention over a hypercolumn of two
encoder stages propagates them (SGC); decoder and SGC logits are fused after a common RMS normalisation and
averaged; the chosen source (fused by default) is sharpened and used as soft pseudo labels for a strongly
augmented view: SimCLR's colour distortion of strength s and one CutOut box (50 x 50 pixels), whose pixels are left
out of the loss, as in the paper (``strong_view: v1`` keeps pointseg's earlier, weaker view).
Loss: L_s (supervised) + L_u (consistency) + L_x (classifier, on every image with image-level labels: the labeled
ones and, with tags, the unlabeled ones) + L_sa (SGC on labeled pixels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from pointseg.calibration import label_quality
from pointseg.losses import soft_cross_entropy
from pointseg.methods.augment import colour_jitter, cutout_boxes, random_boxes, simclr_colour
from pointseg.methods.supervised import Method
from pointseg.models import SegmentationModel
from pointseg.options import Options, option


def grad_cam(features: torch.Tensor, classifier: nn.Module, tags: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of every class of a multi-label ``classifier`` on ``features`` (B, K, h, w), via autograd.

    ``CAM_c = ReLU(sum_k alpha_ck A_k)`` with ``alpha_ck`` the spatial mean of ``d logit_c / d A_k``; maps of
    classes whose ``tags`` (B, Cf) are 0 are zeroed, the rest divided by their spatial max. Returns
    ``(B, Cf, h, w)`` in [0, 1], detached.
    """
    with torch.enable_grad():
        a = features.detach().float().requires_grad_(True)
        logits = classifier(a).float()  # (B, Cf)
        cams = []
        for c in range(logits.shape[1]):
            (grads,) = torch.autograd.grad(logits[:, c].sum(), a, retain_graph=True)  # (B, K, h, w)
            alpha = grads.mean((2, 3), keepdim=True)  # (B, K, 1, 1)
            cams.append(F.relu((alpha * a).sum(1)))  # (B, h, w)
    cam = torch.stack(cams, 1).detach() * tags[..., None, None]  # (B, Cf, h, w)
    peak = cam.amax((2, 3), keepdim=True)
    return torch.where(peak > 0, cam / peak.clamp_min(1e-12), torch.zeros_like(cam))


def insert_background(scores: torch.Tensor, background_class: int | None, top: float) -> torch.Tensor:
    """Add the background score ``top - max_c score_c`` at index ``background_class`` (no-op for None)."""
    if background_class is None:
        return scores
    background = top - scores.amax(1, keepdim=True)  # (B, 1, h, w)
    return torch.cat([scores[:, :background_class], background, scores[:, background_class:]], 1)


class SelfAttentionRefinement(nn.Module):
    """SGC: key/query 1x1 projections of a hypercolumn; attention propagates CAM scores (+ skip connection);
    background from the foreground scores; 1x1 conv + BN to class logits."""

    def __init__(self, in_channels: int, num_classes: int, attention_dim: int = 128,
                 background_class: int | None = None) -> None:
        super().__init__()
        self.key = nn.Conv2d(in_channels, attention_dim, 1, bias=False)
        self.query = nn.Conv2d(in_channels, attention_dim, 1, bias=False)
        self.to_logits = nn.Sequential(nn.Conv2d(num_classes, num_classes, 1, bias=False), nn.BatchNorm2d(num_classes))
        self.background_class = background_class

    def forward(self, hypercolumn: torch.Tensor, cam: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``hypercolumn`` (B, K, h, w), ``cam`` (B, Cf, h, w) in [0, 1], ``valid`` (B, h, w) bool -> (B, C, h, w)."""
        b, _, h, w = cam.shape
        query = self.query(hypercolumn).flatten(2).transpose(1, 2)  # (B, hw, d)
        key = self.key(hypercolumn).flatten(2)  # (B, d, hw)
        attention = (query @ key).float() / math.sqrt(query.shape[-1])  # (B, hw, hw)
        keys_valid = valid.flatten(1) | ~valid.flatten(1).any(1, keepdim=True)  # never mask every key
        attention = attention.masked_fill(~keys_valid[:, None, :], float("-inf")).softmax(-1)
        propagated = attention @ cam.flatten(2).transpose(1, 2)  # (B, hw, Cf)
        refined = propagated.transpose(1, 2).reshape(b, -1, h, w) + cam  # skip connection: scores in [0, 2]
        return self.to_logits(insert_background(refined, self.background_class, top=2.0))


def calibrated_fusion(decoder_logits: torch.Tensor, sgc_logits: torch.Tensor, gamma: float = 0.5,
                      norm: str = "batch") -> torch.Tensor:
    """``gamma * softmax(d / n) + (1 - gamma) * softmax(s / n)`` with ``n`` the RMS of both logit maps,
    one value over the whole batch (``batch``, as the reference code) or one per pixel (``pixel``)."""
    if norm == "batch":
        rms = torch.cat([decoder_logits, sgc_logits]).square().mean().add(1e-8).sqrt()
    elif norm == "pixel":
        rms = ((decoder_logits.square().mean(1, keepdim=True) + sgc_logits.square().mean(1, keepdim=True)) / 2
               ).add(1e-8).sqrt()  # (B, 1, H, W)
    else:
        raise KeyError(f"unknown fusion norm {norm!r}; valid: ['batch', 'pixel']")
    return gamma * (decoder_logits / rms).softmax(1) + (1 - gamma) * (sgc_logits / rms).softmax(1)


def sharpen(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``p^(1/T) / sum_c p_c^(1/T)`` over dim 1: T = 1 keeps ``p``, T -> 0 approaches one-hot."""
    return (probs.clamp_min(torch.finfo(probs.dtype).tiny).log() / temperature).softmax(1)  # stable for small T


SOURCES = ("fused", "decoder", "sgc")
NORMS = ("batch", "pixel")


@dataclass(frozen=True)
class PseudoSegOptions(Options):
    """``method.pseudoseg``: the Grad-CAM classifier, its self-attention refinement (SGC), the calibrated fusion
    and the sharpening of the pseudo labels."""

    section: ClassVar[str] = "method.pseudoseg"
    background_class: int | None = option(None, "class scored 1 - max(foreground CAMs) (LoveDA: 0); null: every "
                                                "class has a CAM", low=0)
    attention_dim: int = option(128, "key/query dimension of the self-attention refinement (SGC)", low=1)
    grid_stride: int = option(16, "CAM/attention grid = crop / grid_stride", low=1)
    gamma: float = option(0.5, "weight of the decoder in the calibrated fusion", low=0, high=1)
    temperature: float = option(0.5, "sharpening temperature of the fused pseudo labels", low=0, low_open=True)
    fusion_norm: str = option("batch", "RMS normaliser over the whole batch (reference) or per pixel", choices=NORMS)
    pseudo_source: str = option("fused", "fused | decoder | sgc", choices=SOURCES)
    classifier_weight: float = option(1.0, "weight of the multi-label classifier loss L_x", low=0)
    sgc_weight: float = option(1.0, "weight of the SGC loss L_sa", low=0)
    strong_view: str = option("paper", "paper: SimCLR colour distortion of strength s, then one CutOut box of "
                                       "cutout_size pixels (the paper) | v1: jitter 0.5/0.5/0.5/0.25 without greyscale "
                                       "and a box of 2-40% of the crop (pointseg before)", choices=("paper", "v1"))
    strength: float = option(1.0, "paper strong view: the colour distortion's strength s", low=0)
    cutout_size: int = option(50, "paper strong view: the CutOut box's side, in crop pixels", low=1)


class PseudoSeg(Method):
    uses_unlabeled = True
    SOURCES = SOURCES
    options_class = PseudoSegOptions

    def __init__(self, loss: nn.Module, feature_channels: tuple[int, ...], num_classes: int,
                 options: PseudoSegOptions = PseudoSegOptions(), unlabeled_weight: float = 1.0,
                 hypercolumn: tuple[int, int] = (-2, -1), cutout_p: float = 1.0, ignore_index: int = 255) -> None:
        super().__init__()
        if options.pseudo_source not in self.SOURCES:
            raise KeyError(f"unknown pseudo-label source {options.pseudo_source!r}; valid: {list(self.SOURCES)}")
        self.loss, self.num_classes, self.background_class = loss, num_classes, options.background_class
        self.foreground = [c for c in range(num_classes) if c != options.background_class]
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                        nn.Linear(feature_channels[-1], len(self.foreground)))
        self.hypercolumn = hypercolumn
        self.sgc = SelfAttentionRefinement(sum(feature_channels[i] for i in hypercolumn), num_classes,
                                           options.attention_dim, options.background_class)
        self.grid_stride, self.gamma, self.temperature = options.grid_stride, options.gamma, options.temperature
        self.norm, self.source = options.fusion_norm, options.pseudo_source
        self.unlabeled_weight = unlabeled_weight
        self.classifier_weight, self.sgc_weight = options.classifier_weight, options.sgc_weight
        self.cutout_p, self.ignore_index = cutout_p, ignore_index
        self.strong_view, self.strength, self.cutout_size = options.strong_view, options.strength, options.cutout_size

    @classmethod
    def create(cls, loss: nn.Module, model: SegmentationModel, num_classes: int, options: Options | None,
               unlabeled_weight: float, ignore_index: int) -> PseudoSeg:
        return cls(loss, model.feature_channels, num_classes, cast(PseudoSegOptions, options), unlabeled_weight,
                   ignore_index=ignore_index)

    def sgc_logits(self, features: list[torch.Tensor], tags: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """SGC logits ``(B, C, h, w)`` on the attention grid; no gradient reaches the backbone."""
        size = valid.shape[-2:]
        grid = (max(1, size[0] // self.grid_stride), max(1, size[1] // self.grid_stride))
        cam = F.interpolate(grad_cam(features[-1], self.classifier, tags), grid, mode="bilinear", align_corners=False)
        hypercolumn = torch.cat([F.interpolate(features[i].detach().float(), grid, mode="bilinear", align_corners=False)
                                 for i in self.hypercolumn], 1)  # (B, K, h, w)
        valid_grid = F.interpolate(valid[:, None].float(), grid, mode="nearest")[:, 0] > 0
        return self.sgc(hypercolumn, cam, valid_grid)

    def pseudo_labels(self, model: SegmentationModel, weak: torch.Tensor, valid: torch.Tensor,
                      tags: torch.Tensor | None, head: str | None = None) -> dict[str, torch.Tensor]:
        """Probabilities per source on the weak view (eval mode, no gradient): decoder, SGC and their calibrated
        fusion, before sharpening."""
        was_training = model.training, self.training
        model.eval()
        self.eval()
        with torch.no_grad():
            features = model.encode(weak, head)
            decoder = model.decode(features, head).float()  # (B, C, H, W)
            if tags is None:  # predicted image-level labels
                tags = (self.classifier(features[-1].float()).sigmoid() >= 0.5).float()
            sgc = F.interpolate(self.sgc_logits(features, tags, valid), weak.shape[-2:], mode="bilinear",
                                align_corners=False).float()
        model.train(was_training[0])
        self.train(was_training[1])
        return {"decoder": decoder.softmax(1), "sgc": sgc.softmax(1),
                "fused": calibrated_fusion(decoder, sgc, self.gamma, self.norm)}

    def strong_views(self, weak: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The strong views of the weak ones and their CutOut boxes ``(B, H, W)`` (filled with 0.5)."""
        b, h, w = valid.shape
        if self.strong_view == "v1":
            cutout = random_boxes(b, h, w, p=self.cutout_p, device=weak.device)
            jittered = colour_jitter(weak, 0.5, 0.5, 0.5, 0.25)
        else:
            cutout = cutout_boxes(b, h, w, self.cutout_size, device=weak.device)
            jittered = simclr_colour(weak, self.strength)
        return torch.where(cutout[:, None], 0.5, jittered), cutout

    def pseudo_target(self, sources: dict[str, torch.Tensor]) -> torch.Tensor:
        """The chosen source sharpened with temperature T: the soft pseudo label of the strong view."""
        return sharpen(sources[self.source], self.temperature)

    def forward(self, model: SegmentationModel, labeled: dict, unlabeled: dict, head: str | None = None
                ) -> tuple[torch.Tensor, dict[str, float]]:
        image, soft, weight = labeled["image"], labeled["soft_mask"], labeled["weight"]
        features = model.encode(image, head)
        loss_sup, logs = self.labeled_loss(model.decode(features, head), labeled)
        present = ((soft * weight[:, None]).sum((2, 3)) > 0).float()[:, self.foreground]  # (B, Cf) image-level labels
        scores = self.classifier(features[-1].float()).float()
        sgc = F.interpolate(self.sgc_logits(features, present, torch.ones_like(weight)), image.shape[-2:],
                            mode="bilinear", align_corners=False)
        loss_sgc = soft_cross_entropy(sgc, soft, weight)

        weak, valid = unlabeled["image"], unlabeled["valid"]
        tags = unlabeled["tags"][:, self.foreground] if "tags" in unlabeled else None  # given image-level labels
        sources = self.pseudo_labels(model, weak, valid, tags, head)
        target = self.pseudo_target(sources)  # (B, C, H, W)
        strong, cutout = self.strong_views(weak, valid)  # CutOut pixels are left out of L_u
        strong_features = model.encode(strong, head)
        loss_unsup = soft_cross_entropy(model.decode(strong_features, head), target, valid * ~cutout)
        if tags is not None:  # L_x over every image with image-level labels: the tagged unlabeled ones too
            scores = torch.cat([scores, self.classifier(strong_features[-1].float()).float()])
            present = torch.cat([present, tags])
        loss_cls = F.binary_cross_entropy_with_logits(scores, present)
        loss = loss_sup + self.unlabeled_weight * loss_unsup + self.classifier_weight * loss_cls + \
            self.sgc_weight * loss_sgc
        logs |= {"loss_unsup": loss_unsup.item(), "loss_cls": loss_cls.item(), "loss_sgc": loss_sgc.item()}
        if "mask" in unlabeled:
            for name, probs in {**sources, "target": target}.items():
                quality = label_quality(probs, unlabeled["mask"], self.ignore_index)
                logs.update({f"pseudo_{name}_{k}": v for k, v in quality.items()})
        return loss, logs
