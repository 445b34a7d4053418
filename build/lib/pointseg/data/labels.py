"""Soft labels: down-sample class masks the way images are down-sampled (Alcover-Couso et al.).

A mask is treated as a one-hot stack and resampled with the image's filter (``area`` = box, ``bilinear`` =
triangle, both antialiased like PIL's resize), without ever materialising the one-hot stack: each full-
resolution pixel adds its filter weight to the few low-resolution cells it touches (``np.bincount``).

Every low-resolution pixel gets class proportions over its *labeled* footprint, ``soft`` (C, h, w) summing to 1
(or 0 where nothing is labeled), and ``weight`` (h, w), the labeled fraction of the footprint. Ignored pixels
thus lower a cell's weight instead of leaking into the proportions.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from PIL import Image

from pointseg.options import Options, option

MODES = ("area", "bilinear")
PROPAGATION = ("none", "superpixel")


@dataclass(frozen=True)
class LabelOptions(Options):
    """The ``labels`` section: how masks and clicks become training targets."""

    section: ClassVar[str] = "labels"
    downsample: str = option("soft", "soft: class proportions with the image's footprint | nearest (baseline)",
                             choices=("soft", "nearest"))
    mode: str = option("area", "area (box) | bilinear (triangle): the filter shared by images and soft labels",
                       choices=MODES)
    multi_class: bool = option(True, "false: train on single-class pixels only (soft labels' \"MC\" ablation)")
    propagate: str = option("superpixel", "points: none | superpixel (each click spreads over its SLIC superpixel, "
                                          "capped)", choices=PROPAGATION)
    propagate_weight: float = option(0.5, "weight of a propagated pixel (a click's own pixel weighs 1)", low=0,
                                     low_open=True)
    superpixel_size: int = option(16, "mean superpixel side, in training-resolution pixels", low=2)
    superpixel_compactness: float = option(10.0, "SLIC: higher = squarer superpixels, lower = closer to colour "
                                                 "edges", low=0, low_open=True)
    propagate_max_pixels: int = option(256, "cap per click, in training-resolution pixels (the nearest of its "
                                            "superpixel)", low=1)
    propagate_patch: int = option(96, "side of the window around each click that SLIC segments, training-resolution "
                                      "pixels", low=8)
PIL_FILTERS = {"area": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR}


def _box(x: np.ndarray) -> np.ndarray:
    return ((x > -0.5) & (x <= 0.5)).astype(np.float64)


def _triangle(x: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - np.abs(x), 0.0, None)


FILTERS = {"area": (_box, 0.5), "bilinear": (_triangle, 1.0)}


@functools.lru_cache(maxsize=64)
def axis_weights(full: int, low: int, mode: str = "area") -> tuple[np.ndarray, np.ndarray]:
    """Resampling weights of one axis, ``full`` -> ``low`` samples, exactly as PIL computes them for its resize.

    Returns ``(index, weight)``, both ``(K, full)``: full-resolution sample ``r`` contributes ``weight[k, r]``
    to low-resolution sample ``index[k, r]``. Rows of the implied ``(low, full)`` matrix sum to 1. For
    integer factors ``area`` is the block mean; otherwise, like PIL's box filter, each sample goes wholly to
    the cell whose box holds its centre.
    """
    if mode not in FILTERS:
        raise KeyError(f"unknown soft-label mode {mode!r}; valid: {list(MODES)}")
    kernel, support = FILTERS[mode]
    scale = full / low
    filterscale = max(scale, 1.0)
    centers = (np.arange(low) + 0.5) * scale  # (low,) in full-resolution coordinates
    reach = support * filterscale
    first = np.clip((centers - reach + 0.5).astype(int), 0, None)  # PIL's window per output sample
    stop = np.minimum((centers + reach + 0.5).astype(int), full)
    x = np.arange(full)  # (full,)
    dense = kernel((x[None, :] - centers[:, None] + 0.5) / filterscale)  # (low, full)
    dense *= (x[None, :] >= first[:, None]) & (x[None, :] < stop[:, None])
    dense /= dense.sum(1, keepdims=True)
    dense[dense < 1e-9] = 0  # rounding residue at the filter's edge would add a tap
    k = int((dense > 0).sum(0).max())
    order = np.argsort(-dense, axis=0, kind="stable")[:k]  # (K, full): the K cells each sample touches
    weight = np.take_along_axis(dense, order, axis=0)
    order.flags.writeable = weight.flags.writeable = False  # shared through the cache
    return order, weight


def soft_downsample(mask: np.ndarray, num_classes: int, size: tuple[int, int], mode: str = "area",
                    ignore_index: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """Soft labels of an ``(H, W)`` class mask at ``size = (h, w)`` (any factor, down or up).

    Returns ``soft`` (C, h, w) float32 class proportions over the labeled footprint and ``weight`` (h, w)
    float32, the labeled fraction of each footprint.
    """
    h, w = size
    rows_idx, rows_w = axis_weights(mask.shape[0], h, mode)  # (Kh, H)
    cols_idx, cols_w = axis_weights(mask.shape[1], w, mode)  # (Kw, W)
    bins = num_classes + 1  # the last bin collects ignored pixels
    cls = np.where(mask == ignore_index, num_classes, mask).astype(np.int32)  # (H, W)
    if cls.max(initial=0) > num_classes:
        raise ValueError(f"mask holds class {int(mask[mask != ignore_index].max())} >= num_classes {num_classes}")
    uniform = rows_idx.shape[0] == cols_idx.shape[0] == 1 and np.ptp(rows_w) == np.ptp(cols_w) == 0
    mass = np.zeros(h * w * bins)
    for ri, rw in zip(rows_idx.astype(np.int32), rows_w, strict=True):
        for ci, cw in zip(cols_idx.astype(np.int32), cols_w, strict=True):
            index = ((ri[:, None] * w + ci[None, :]) * bins + cls).ravel()  # (H * W,) cell-and-class bins
            if uniform:  # integer area factor: plain counting, every pixel weighs the same
                mass += np.bincount(index, minlength=mass.size)
            else:
                mass += np.bincount(index, weights=(rw[:, None] * cw[None, :]).ravel(), minlength=mass.size)
    cells = mass.reshape(h, w, bins).astype(np.float32)  # (h, w, C + 1)
    labeled = cells[..., :num_classes].sum(-1)  # (h, w)
    soft = cells[..., :num_classes] / np.maximum(labeled, np.finfo(np.float32).tiny)[..., None]  # (h, w, C)
    weight = labeled / np.maximum(cells.sum(-1), np.finfo(np.float32).tiny)  # (h, w)
    return np.ascontiguousarray(soft.transpose(2, 0, 1)), weight


def hard_to_soft(mask: np.ndarray, num_classes: int, ignore_index: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """One-hot ``soft`` (C, H, W) and 0/1 ``weight`` (H, W) of a hard mask (the nearest-neighbour path)."""
    labeled = mask != ignore_index
    soft = (np.arange(num_classes)[:, None, None] == mask[None]) & labeled[None]
    return soft.astype(np.float32), labeled.astype(np.float32)


def points_to_soft(points: np.ndarray, full_size: tuple[int, int], size: tuple[int, int],
                   num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Soft targets at ``size`` from full-resolution ``(N, 3)`` points ``(row, col, class)``.

    A cell's ``soft`` holds the class proportions of the points inside it and its ``weight`` is their
    number, so a soft loss weighted this way equals partial cross-entropy over the points themselves.
    """
    h, w = size
    rows = points[:, 0] * h // full_size[0]
    cols = points[:, 1] * w // full_size[1]
    counts = np.bincount((rows * w + cols) * num_classes + points[:, 2], minlength=h * w * num_classes)
    counts = counts.reshape(h, w, num_classes).astype(np.float32)
    weight = counts.sum(-1)  # (h, w)
    soft = np.divide(counts, weight[..., None], out=np.zeros_like(counts), where=weight[..., None] > 0)
    return soft.transpose(2, 0, 1), weight


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """Size of a ``height x width`` image resized by ``scale`` (at least 1 pixel each side)."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_image(image: np.ndarray, size: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """Resize an ``(H, W, B)`` image to ``size = (h, w)`` with the filter of ``mode`` (antialiased, as PIL does).

    Three-band uint8 images are resized as RGB in uint8 (PIL rounds); any other band count or dtype band by band
    in float32, and returned as float32.
    """
    if image.shape[:2] == tuple(size):
        return image
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return np.asarray(Image.fromarray(image).resize((size[1], size[0]), PIL_FILTERS[mode]))
    bands = [Image.fromarray(np.ascontiguousarray(image[..., b], dtype=np.float32), mode="F")
             for b in range(image.shape[2])]
    return np.stack([np.asarray(b.resize((size[1], size[0]), PIL_FILTERS[mode])) for b in bands], axis=-1)
