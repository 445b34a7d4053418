"""Hypercolumns: a frozen encoder's feature maps of several stages read at one pixel, and a linear head over them.

The fast model of the click loop (PEARL, Microsoft's land-cover mapping tool) keeps a pretrained encoder and fits
only a softmax (multinomial logistic) regression on the clicked pixels' hypercolumns. The hypercolumn of a pixel
is the concatenation of the chosen encoder ``stages`` resampled to a grid at ``scale`` of the model's input
(bilinear up, box down); stage 0 is the image's own (normalised) bands, joined by their local means over
``means`` x ``means`` pixels, so a spectral classifier is part of the model. The head is a 1 x 1 convolution over
the hypercolumn, up-sampled bilinearly to the input.

Both resampling and the 1 x 1 convolution are linear, so the head projects each stage to class scores at the
stage's own resolution before resampling (``HypercolumnHead``): the result is the same as over the concatenated
grid, without ever holding the 1448 channels of MobileNetV2's full hypercolumn at the grid's size.

``HypercolumnDecoder`` returns ``[input, stage, stage, ...]`` (the input gives the output size);
``UNetHypercolumnDecoder`` puts a U-Net decoder's output first, and ``UNetHypercolumnHead`` adds the U-Net head's
logits to the hypercolumn head's (the warm start: its hypercolumn weights start as a fast fit's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

SCALES = (1.0, 0.5, 0.25, 0.125)  # of the model input: exact under the encoders' size divisor (32)


def resample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``x`` (N, C, h, w) at ``size``: bilinear up, box (area) down, as it is when the size already fits."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def local_means(bands: torch.Tensor, sizes: Sequence[int]) -> list[torch.Tensor]:
    """The mean of each band over a ``size`` x ``size`` window around every pixel (pixels inside the image only)."""
    return [F.avg_pool2d(bands, size, stride=1, padding=size // 2, count_include_pad=False) for size in sizes]


class HypercolumnDecoder(nn.Module):
    """Encoder features (finest first; smp's stage 0 is the normalised input) -> ``[input, *parts]``: the parts
    are the chosen ``stages`` as they are, stage 0 as its bands and their ``means``. No parameters."""

    def __init__(self, in_channels: Sequence[int], stages: Sequence[int], means: Sequence[int] = (3, 7)) -> None:
        super().__init__()
        bad = [s for s in stages if not 0 <= s < len(in_channels)]
        if bad or not stages or len(set(stages)) != len(stages):
            raise ValueError(f"hypercolumn stages {list(stages)}: choose distinct stages of 0..{len(in_channels) - 1} "
                             "(0: the image's bands)")
        self.stages, self.means = tuple(sorted(stages)), tuple(means)
        self.part_channels = tuple(in_channels[s] * (1 + len(self.means) if s == 0 else 1) for s in self.stages)
        self.out_channels = sum(self.part_channels)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        parts = [torch.cat([features[0], *local_means(features[0], self.means)], 1) if s == 0 else features[s]
                 for s in self.stages]
        return [features[0], *parts]


class HypercolumnHead(nn.Module):
    """``[input, *parts]`` -> logits at the input's size: one 1 x 1 convolution over the parts concatenated at
    ``scale`` of the input (computed part by part, see the module docstring), up-sampled to the input."""

    def __init__(self, part_channels: Sequence[int], num_classes: int, scale: float) -> None:
        super().__init__()
        if scale not in SCALES:
            raise ValueError(f"hypercolumn scale {scale}: choose one of {list(SCALES)} (of the model input)")
        self.part_channels, self.scale = tuple(part_channels), scale
        self.conv = nn.Conv2d(sum(part_channels), num_classes, kernel_size=1)

    def grid_size(self, image: torch.Tensor) -> tuple[int, int]:
        return max(1, round(image.shape[-2] * self.scale)), max(1, round(image.shape[-1] * self.scale))

    def forward(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        image, *stages = parts
        grid = self.grid_size(image)
        weights = self.conv.weight.split(list(self.part_channels), dim=1)
        logits = sum(resample(F.conv2d(x.to(w.dtype), w), grid) for x, w in zip(stages, weights, strict=True))
        logits = logits + cast(torch.Tensor, self.conv.bias).view(1, -1, 1, 1)
        return resample(logits, (image.shape[-2], image.shape[-1]))


class UNetHypercolumnDecoder(nn.Module):
    """A U-Net decoder beside the hypercolumn: ``[decoded, input, *parts]``."""

    def __init__(self, unet: nn.Module, hypercolumn: HypercolumnDecoder) -> None:
        super().__init__()
        self.unet, self.hypercolumn = unet, hypercolumn
        self.out_channels = unet.out_channels  # the U-Net head's input; the hypercolumn head's is its own

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [self.unet(features), *self.hypercolumn(features)]


class UNetHypercolumnHead(nn.Module):
    """The U-Net head's logits plus the hypercolumn head's."""

    def __init__(self, unet: nn.Module, hypercolumn: HypercolumnHead) -> None:
        super().__init__()
        self.unet, self.hypercolumn = unet, hypercolumn

    def forward(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.unet(parts[0]) + self.hypercolumn(parts[1:])


def warm_start_state(fast: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor] | None:
    """A fast model's weights (encoder and ``HypercolumnHead``) for ``model`` with ``UNetHypercolumnHead``s: the
    encoder and each head's hypercolumn part as fitted, the U-Net decoder as initialised and the U-Net head
    zeroed, so the model starts by predicting exactly what the fast fit does. ``None`` when ``fast`` is not a
    fast model's state or ``model`` has no such head."""
    own = model.state_dict()
    heads = {k.split(".")[1] for k in own if k.startswith("heads.") and ".hypercolumn.conv." in k}
    if not heads or not any(k.startswith("heads.") and k.endswith(".conv.weight") and ".hypercolumn." not in k
                            for k in fast):
        return None
    state = {k: v for k, v in own.items()}
    state.update({k: v for k, v in fast.items() if k.startswith("encoder.")})
    for name in heads:
        for part in ("weight", "bias"):
            key = f"heads.{name}.conv.{part}"
            if key in fast:
                state[f"heads.{name}.hypercolumn.conv.{part}"] = fast[key]
        for key in [k for k in own if k.startswith(f"heads.{name}.unet.")]:
            state[key] = torch.zeros_like(own[key])
    return state
