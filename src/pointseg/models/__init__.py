"""Segmentation models: one dict of names -> builders; every model maps [0, 1] RGB to class logits."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from pointseg.models.smp_unet import is_weights_file, load_encoder_weights, smp_unet
from pointseg.models.unet_small import UNetSmall

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SegmentationModel(nn.Module):
    """Normalises ``(N, B, H, W)`` images in [0, 1] (B bands) and returns ``(N, C, H, W)`` logits from ``net``.

    ``size_divisor``: height and width the network needs to divide (inference pads to it).
    """

    net: Any  # UNetSmall or SmpUnet: encode(x) -> features, decode(features) -> logits, feature_channels
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, size_divisor: int, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        self.net = net
        self.size_divisor = size_divisor
        self.in_channels = len(mean)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    @property
    def feature_channels(self) -> tuple[int, ...]:
        """Channels of each feature map ``encode`` returns."""
        return tuple(self.net.feature_channels)

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features of ``(B, 3, H, W)`` images in [0, 1], finest first."""
        return self.net.encode((image - self.mean) / self.std)

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        """``(B, C, H, W)`` logits from (possibly perturbed) encoder features."""
        return self.net.decode(features)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(image))


def _unet_small(num_classes: int, encoder_weights: str | None = None, in_channels: int = 3) -> SegmentationModel:
    """The small U-Net, trained from scratch. A hub name in ``encoder_weights`` (the default ``imagenet``) is
    ignored, since no hub has weights for it; a weights file is an error, since it cannot be loaded into it."""
    if encoder_weights not in (None, "none", "") and is_weights_file(encoder_weights):
        raise ValueError(f"{encoder_weights}: unet-small has no pretrained encoder to load these weights into; "
                         "use --set model.encoder_weights=null, or a model with one (e.g. unet-mobilenetv2)")
    if encoder_weights not in (None, "none", ""):
        log.info("unet-small trains from scratch: model.encoder_weights=%s ignored", encoder_weights)
    net = UNetSmall(num_classes, in_channels)
    return SegmentationModel(net, net.size_divisor, mean=(0.5,) * in_channels, std=(0.25,) * in_channels)


def cycle(values: tuple[float, ...], n: int) -> tuple[float, ...]:
    """``values`` repeated to length ``n`` (an RGB statistic for each of ``n`` bands, as the first convolution's
    RGB filters are repeated: see ``smp_unet.adapt_input_channels``)."""
    return tuple(values[i % len(values)] for i in range(n))


def _unet(num_classes: int, encoder: str = "mobilenet_v2", encoder_weights: str | None = None,
          mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
          in_channels: int = 3) -> SegmentationModel:
    return SegmentationModel(smp_unet(num_classes, encoder, encoder_weights, in_channels), 32,
                             cycle(mean, in_channels), cycle(std, in_channels))


MODELS: dict[str, Callable[..., SegmentationModel]] = {
    "unet-small": _unet_small,
    "unet-mobilenetv2": partial(_unet, encoder="mobilenet_v2"),
    "unet-efficientnet-lite0": partial(_unet, encoder="tu-tf_efficientnet_lite0", mean=(0.5,) * 3, std=(0.5,) * 3),
    "unet-efficientnet-lite2": partial(_unet, encoder="tu-tf_efficientnet_lite2", mean=(0.5,) * 3, std=(0.5,) * 3),
    "unet": _unet,
}


def build_model(name: str, num_classes: int, encoder: str | None = None,
                encoder_weights: str | None = None, in_channels: int = 3) -> SegmentationModel:
    """Build ``MODELS[name]`` for images of ``in_channels`` bands; ``encoder`` picks any smp/timm encoder for the
    generic ``unet``."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; valid: {sorted(MODELS)}")
    kwargs: dict = {"encoder_weights": encoder_weights, "in_channels": in_channels}
    if encoder is not None:
        if name != "unet":
            raise ValueError(f"model.encoder is for model 'unet' only; {name!r} has a fixed encoder")
        kwargs["encoder"] = encoder
    return MODELS[name](num_classes, **kwargs)


__all__ = ["MODELS", "SegmentationModel", "UNetSmall", "build_model", "load_encoder_weights"]
