"""The small reference U-Net: three resolution levels, two poolings, about 300K parameters."""

from __future__ import annotations

import torch
from torch import nn


def conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """Two 3x3 conv + BN + ReLU layers."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
    )


class UNetSmallEncoder(nn.Module):
    """One level per width in ``widths``, 2x pooling between levels.

    Input height and width must be divisible by ``size_divisor`` = ``2 ** (len(widths) - 1)``.
    """

    def __init__(self, in_channels: int = 3, widths: tuple[int, ...] = (26, 52, 104)) -> None:
        super().__init__()
        self.size_divisor = 2 ** (len(widths) - 1)
        chans = (in_channels, *widths)
        self.down = nn.ModuleList(conv_block(chans[i], chans[i + 1]) for i in range(len(widths)))
        self.pool = nn.MaxPool2d(2)
        self.out_channels = widths

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of every level, finest first: ``(B, widths[i], H / 2**i, W / 2**i)``."""
        features = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            features.append(x)
        return features


class UNetSmallDecoder(nn.Module):
    """The mirrored decoder: transposed-conv upsampling, concatenation with the skip, a conv block per level."""

    def __init__(self, widths: tuple[int, ...] = (26, 52, 104)) -> None:
        super().__init__()
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(len(widths) - 1))
        )
        self.fuse = nn.ModuleList(conv_block(2 * widths[i], widths[i]) for i in reversed(range(len(widths) - 1)))
        self.out_channels = widths[0]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        skips = list(features)
        x = skips.pop()
        for up, fuse in zip(self.up, self.fuse, strict=True):
            x = fuse(torch.cat([up(x), skips.pop()], dim=1))
        return x  # (B, widths[0], H, W)
