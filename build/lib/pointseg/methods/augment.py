"""Strong photometric augmentation on batches of ``(N, B, H, W)`` images of any band count ``B`` in [0, 1], random
per sample.

Brightness, contrast, saturation and blur work on any bands (contrast and saturation pull the bands towards their
grey value: the luma of RGB, the band mean otherwise); a hue shift and random greyscale are colour operations and
apply only to 3-band (RGB) images. Geometry is left alone, so pseudo labels of the weak view stay aligned; boxes
(CutMix, CutOut) are returned as masks for the caller to mix or ignore labels with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF

GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def _uniform(n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    return torch.empty(n, device=device).uniform_(low, high)


def is_rgb(images: torch.Tensor) -> bool:
    return images.shape[1] == 3


def _gray(images: torch.Tensor) -> torch.Tensor:
    """``(N, 1, H, W)`` grey value: the luma of RGB images, the mean of the bands otherwise."""
    if not is_rgb(images):
        return images.mean(1, keepdim=True)
    weights = torch.tensor(GRAY_WEIGHTS, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def colour_jitter(images: torch.Tensor, brightness: float, contrast: float, saturation: float, hue: float,
                  p: float = 0.8) -> torch.Tensor:
    """Per-sample brightness, contrast, saturation factors in ``[1 - s, 1 + s]`` and hue shifts in ``[-hue, hue]``
    (RGB only), each sample jittered with probability ``p``."""
    b, dev = images.shape[0], images.device
    apply = (torch.rand(b, device=dev) < p).view(b, 1, 1, 1)
    out = images * _uniform(b, 1 - brightness, 1 + brightness, dev).view(b, 1, 1, 1)
    mean = _gray(out).mean((2, 3), keepdim=True)  # (B, 1, 1, 1)
    out = (out - mean) * _uniform(b, 1 - contrast, 1 + contrast, dev).view(b, 1, 1, 1) + mean
    gray = _gray(out)
    out = ((out - gray) * _uniform(b, 1 - saturation, 1 + saturation, dev).view(b, 1, 1, 1) + gray).clamp(0, 1)
    if hue > 0 and is_rgb(images):
        out = torch.stack([TF.adjust_hue(x, float(h)) for x, h in zip(out, _uniform(b, -hue, hue, dev), strict=True)])
    return torch.where(apply, out, images)


def random_grayscale(images: torch.Tensor, p: float) -> torch.Tensor:
    """Each RGB image made grey with probability ``p``; other band counts are returned as they are (no random
    number is drawn for them)."""
    if not is_rgb(images):
        return images
    apply = (torch.rand(images.shape[0], device=images.device) < p).view(-1, 1, 1, 1)
    return torch.where(apply, _gray(images).expand_as(images), images)


SIMCLR_JITTER = (0.8, 0.8, 0.8, 0.2)  # brightness, contrast, saturation, hue at strength 1 (Chen et al. 2020)
SIMCLR_JITTER_P, SIMCLR_GRAYSCALE_P = 0.8, 0.2


def simclr_colour(images: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """SimCLR's colour distortion of strength ``s``: colour jitter ``(0.8s, 0.8s, 0.8s, 0.2s)`` with probability
    0.8, then greyscale with probability 0.2 (RGB only, as ``colour_jitter`` and ``random_grayscale``)."""
    brightness, contrast, saturation, hue = (strength * f for f in SIMCLR_JITTER)
    jittered = colour_jitter(images, brightness, contrast, saturation, hue, SIMCLR_JITTER_P)
    return random_grayscale(jittered, SIMCLR_GRAYSCALE_P)


def cutout_boxes(batch: int, height: int, width: int, size: int, device: torch.device | None = None
                 ) -> torch.Tensor:
    """``(B, H, W)`` bool masks, each one ``size`` x ``size`` box whose centre is uniform over the image (clipped
    at its edges; DeVries and Taylor's CutOut)."""
    masks = torch.zeros(batch, height, width, dtype=torch.bool, device=device)
    for i in range(batch):
        row, col = int(torch.randint(0, height, ())), int(torch.randint(0, width, ()))
        masks[i, max(0, row - size // 2):row + (size + 1) // 2, max(0, col - size // 2):col + (size + 1) // 2] = True
    return masks


def random_blur(images: torch.Tensor, p: float, sigma: tuple[float, float] = (0.1, 2.0)) -> torch.Tensor:
    """Gaussian blur with a random sigma per sample (kernel covering 3 sigma each side)."""
    out = []
    for x, s, go in zip(images, _uniform(len(images), *sigma, images.device), torch.rand(len(images)) < p,
                        strict=True):
        k = 2 * math.ceil(3 * float(s)) + 1
        out.append(TF.gaussian_blur(x, [k, k], [float(s), float(s)]) if go else x)
    return torch.stack(out)


def random_boxes(batch: int, height: int, width: int, p: float = 1.0, area: tuple[float, float] = (0.02, 0.4),
                 ratio: tuple[float, float] = (0.3, 1 / 0.3), device: torch.device | None = None) -> torch.Tensor:
    """``(B, H, W)`` bool masks, each a random box (area fraction and aspect ratio in the given ranges)
    with probability ``p``, else empty."""
    masks = torch.zeros(batch, height, width, dtype=torch.bool, device=device)
    for i in range(batch):
        if torch.rand(()) >= p:
            continue
        frac = float(torch.empty(()).uniform_(*area))
        aspect = math.exp(float(torch.empty(()).uniform_(math.log(ratio[0]), math.log(ratio[1]))))
        h = min(height, max(1, round(math.sqrt(frac * height * width * aspect))))
        w = min(width, max(1, round(math.sqrt(frac * height * width / aspect))))
        top = int(torch.randint(0, height - h + 1, ()))
        left = int(torch.randint(0, width - w + 1, ()))
        masks[i, top:top + h, left:left + w] = True
    return masks


@dataclass
class StrongAugment:
    """Colour jitter, random grayscale and blur (UniMatch/FixMatch's strong view, photometric part)."""

    brightness: float = 0.5
    contrast: float = 0.5
    saturation: float = 0.5
    hue: float = 0.25
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = colour_jitter(images, self.brightness, self.contrast, self.saturation, self.hue, self.jitter_p)
        out = random_grayscale(out, self.grayscale_p)
        return random_blur(out, self.blur_p)
