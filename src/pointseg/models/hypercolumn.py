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

import numpy as np
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
    """The mean of each band over a ``size`` x ``size`` window around every pixel (pixels inside the image only),
    as a mean over rows of means over columns (the window's part inside the image is a rectangle, so this is the
    same mean in 2 x size additions a pixel instead of size squared)."""
    return [F.avg_pool2d(F.avg_pool2d(bands, (1, size), stride=1, padding=(0, size // 2), count_include_pad=False),
                         (size, 1), stride=1, padding=(size // 2, 0), count_include_pad=False) for size in sizes]


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


class MLPHypercolumnHead(nn.Module):
    """``[input, *parts]`` -> logits: a hidden layer of ``hidden`` units over the hypercolumn on the grid (its 1 x 1
    convolution computed part by part, as ``HypercolumnHead`` does), ReLU, a 1 x 1 convolution to the classes,
    up-sampled to the input."""

    def __init__(self, part_channels: Sequence[int], num_classes: int, scale: float, hidden: int) -> None:
        super().__init__()
        self.hidden = HypercolumnHead(part_channels, hidden, scale)
        self.out = nn.Conv2d(hidden, num_classes, kernel_size=1)

    def forward(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        image, *stages = parts
        head = self.hidden
        grid = head.grid_size(image)
        weights = head.conv.weight.split(list(head.part_channels), dim=1)
        hidden = sum(resample(F.conv2d(x.to(w.dtype), w), grid) for x, w in zip(stages, weights, strict=True))
        hidden = F.relu(hidden + cast(torch.Tensor, head.conv.bias).view(1, -1, 1, 1))
        return resample(self.out(hidden), (image.shape[-2], image.shape[-1]))


def pixel_features(bands: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Per pixel: the bands, their local means and standard deviations over ``size`` x ``size`` windows (pixels
    inside the image only), ``(N, C * (1 + 2 len(sizes)), H, W)``: the spectral and texture features of a per-pixel
    classifier."""
    means = local_means(bands, sizes)
    squares = local_means(bands * bands, sizes)
    stds = [(s - m * m).clamp_min(0).sqrt() for s, m in zip(squares, means, strict=True)]
    return torch.cat([bands, *means, *stds], 1)


TREE_ARRAYS = ("left", "right", "feature", "threshold", "value")


class ForestHead(nn.Module):
    """``[input, *parts]`` -> log class probabilities of a forest of decision trees over ``pixel_features`` of the
    input's bands at every pixel (the hypercolumn is not read), the bands rounded to float16 as the feature cache
    keeps them, so that a map from cached features and one from the image split alike. The trees live in buffers
    (nodes of all trees one after another, ``roots`` their first nodes), so they save and load with the model;
    they are evaluated by scikit-learn's compiled trees, on the CPU. Not exportable as a graph
    (``graph_refusal``)."""

    exportable = False
    reads_bands_only = True  # the model skips its encoder (its stage 0 is the normalised input itself)

    def __init__(self, num_classes: int, sizes: Sequence[int]) -> None:
        super().__init__()
        self.num_classes, self.sizes = num_classes, tuple(sizes)
        for name in ("left", "right", "feature", "roots"):
            self.register_buffer(name, torch.zeros(0, dtype=torch.int64))
        self.register_buffer("threshold", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("value", torch.zeros(0, num_classes))
        self._trees: list | None = None

    def set_trees(self, trees: Sequence[dict[str, np.ndarray]]) -> None:
        """The trees, each ``TREE_ARRAYS`` per node (children -1 at leaves; ``value``: class probabilities)."""
        offsets = np.cumsum([0] + [len(t["left"]) for t in trees])
        for name in TREE_ARRAYS:
            arrays = [np.asarray(t[name]) for t in trees]
            setattr(self, name, torch.from_numpy(np.concatenate(arrays)).to(getattr(self, name).dtype))
        self.roots = torch.from_numpy(offsets[:-1].astype(np.int64))
        self._trees = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in (*TREE_ARRAYS, "roots"):  # a forest's size is its own
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        self._trees = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def trees(self) -> list:
        if self._trees is None:
            from pointseg.treemodel import sklearn_trees  # scikit-learn, only where a forest runs

            self._trees = sklearn_trees({n: getattr(self, n).cpu().numpy() for n in (*TREE_ARRAYS, "roots")},
                                        self.num_classes)
        return self._trees

    def forward(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        image = parts[0]
        features = pixel_features(image.half().float(), self.sizes)  # the bands as the feature cache keeps them
        n, d, h, w = features.shape
        x = features.permute(0, 2, 3, 1).reshape(-1, d).cpu().numpy().astype(np.float32)
        from pointseg.treemodel import forest_probabilities

        probs = torch.from_numpy(forest_probabilities(self.trees(), x)).to(image.device)
        logits = probs.clamp_min(FOREST_FLOOR).log().float()
        return logits.reshape(n, h, w, -1).permute(0, 3, 1, 2)


FOREST_FLOOR = 1e-6  # the smallest probability a forest's log gives (a class no tree reaches)


def graph_refusal(model: nn.Module) -> str | None:
    """Why ``model`` cannot run as an exported graph (ONNX), naming its head; ``None`` when it can."""
    for name, module in model.named_modules():
        if getattr(module, "exportable", True) is False:
            return (f"the model's head {name} ({type(module).__name__}: a forest of decision trees run by "
                    "scikit-learn) is not exportable as an ONNX graph; map with --backend torch, or fit the fast "
                    "model with another head (--set fast.head=softmax or mlp)")
    return None


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
    fast_heads = [k for k in fast if k.startswith("heads.")]
    if not heads or not fast_heads or any(".hypercolumn." in k or ".unet." in k for k in fast_heads):
        return None  # not a fast model's state (an MLP or forest head leaves the hypercolumn head as initialised)
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
