"""Torch datasets over a source (typically a ``CachedSource``), at a training or inference resolution.

Training samples are windows cut from the full-resolution sample and resized to ``crop x crop``: the image
smoothly, the labels as soft labels with the same footprint (or by nearest neighbour, the baseline), points as
per-cell proportions and counts. All three label kinds become ``soft_mask`` (C, crop, crop) and ``weight``
(crop, crop), so the losses see one kind of target. The keys, dtypes and shapes of every sample are declared in
``pointseg.data.schema`` (``TRAIN``, ``UNLABELED``, ``EVAL``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset

from pointseg.data.bands import BandScaling
from pointseg.data.labels import MODES, hard_to_soft, points_to_soft, resize_image, scaled_size, soft_downsample
from pointseg.data.points import PointSet
from pointseg.data.sources import Source
from pointseg.options import Options, option

DOWNSAMPLE = ("soft", "nearest")
FORMATS = ("loveda", "folder")


def _rescale_problem(value: object) -> str | None:
    ok = (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int | float) for v in value)
          and 0 < value[0] <= value[1])
    return None if ok else "must be [low, high] with 0 < low <= high"


def _bands_problem(value: object) -> str | None:
    ok = isinstance(value, list) and value and all(isinstance(b, int) and not isinstance(b, bool) and b >= 1
                                                  for b in value)
    return None if ok else "must be null or a list of 1-based band numbers"


def _bias_problem(value: object) -> str | None:
    ok = value == "auto" or (isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1)
    return None if ok else "must be auto or a share in [0, 1]"


def _domains_problem(value: object) -> str | None:
    ok = isinstance(value, list) and value and all(isinstance(d, str) for d in value)
    return None if ok else "must be a list of domain names, e.g. [Rural]"


@dataclass(frozen=True)
class DataOptions(Options):
    """The ``data`` section: what a dataset is, how it is read, cut into training windows and cached."""

    section: ClassVar[str] = "data"
    name: str = option("seg", "the dataset's name: the model head it trains (and, with several datasets, its logs)")
    format: str = option("loveda", "loveda | folder", choices=FORMATS)
    domains: list = option(["Rural", "Urban"], "loveda: domains to read (missing ones are skipped if others exist)",
                           check=_domains_problem)
    train_split: str = option("Train", "the split a run trains on")
    classes: str | None = option(None, "folder: path to a value,name,r,g,b class table (CSV)")
    color_coded: bool = option(True, "folder: masks are RGB colours from the class table (false: class values)")
    images: str = option("images", "folder: name of the image directories")
    masks: str = option("masks", "folder: name of the mask directories")
    scale: float = option(0.5, "training/inference resolution relative to the original images", low=0,
                          low_open=True, high=1)
    crop: int = option(256, "random training crop, in training-resolution pixels", low=1)
    rescale: list = option([1.0, 1.0], "random extra scale of training crops (log-uniform range), e.g. [0.75, 1.5]",
                           check=_rescale_problem)
    cache_dir: str | None = option(None, "decoded-sample cache (default: $XDG_CACHE_HOME/pointseg); see "
                                         "`pointseg cache info`")
    cache_max_gb: float = option(20.0, "size cap of that cache: least recently used samples are evicted beyond it "
                                       "(0: no cap)", low=0)
    ignore_index: int = option(255, "the mask value of unlabeled pixels", low=0, high=255)
    bands: list | None = option(None, "rasters: 1-based bands to read, e.g. [4, 3, 2] (null: every band but alpha)",
                                check=_bands_problem)
    point_bias: float | str = option("auto", "share of training windows drawn around a click: auto = 0.9 for rasters, "
                                             "0 for image tiles", check=_bias_problem)


class MaskLike(Protocol):
    """A label mask sliced like an ``(H, W)`` array (``propagation.BlockMask`` keeps only the blocks clicks reach)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray: ...


@dataclass(frozen=True)
class Windows:
    """How ``TrainDataset`` cuts and labels a window: ``crop`` pixels a side at ``scale`` of the full resolution,
    resampled with ``mode`` (``area`` = box, ``bilinear`` = triangle); labels ``downsample``d ``soft`` (with the
    image's filter) or ``nearest``; a random extra scale in ``rescale`` (log-uniform; ``(1, 1)``: none);
    ``ignore_index`` marks unlabeled mask pixels; with points, ``point_bias`` of the windows are drawn around a
    click (so sparse clicks on large rasters are seen) and propagated labels weigh ``propagate_weight`` per pixel
    (a click weighs 1)."""

    crop: int
    scale: float = 1.0
    mode: str = "bilinear"
    downsample: str = "soft"
    rescale: tuple[float, float] = (1.0, 1.0)
    ignore_index: int = 255
    point_bias: float = 0.0
    propagate_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.downsample not in DOWNSAMPLE:
            raise KeyError(f"unknown label down-sampling {self.downsample!r}; valid: {list(DOWNSAMPLE)}")
        if self.mode not in MODES:
            raise KeyError(f"unknown resize mode {self.mode!r}; valid: {list(MODES)}")
        if not 0 < self.scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {self.scale}")
        if not 0 < self.rescale[0] <= self.rescale[1]:
            raise ValueError(f"rescale must be a range (low, high) with 0 < low <= high, got {self.rescale}")


def random_window(height: int, width: int, side: int, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of a random ``side x side`` window (at 0 along an axis shorter than ``side``)."""
    return int(rng.integers(0, max(height - side, 0) + 1)), int(rng.integers(0, max(width - side, 0) + 1))


def window_around(position: int, length: int, side: int, rng: np.random.Generator) -> int:
    """The start of a random ``side``-long window on an axis of ``length`` that contains ``position`` (at 0 when
    the axis is shorter than the window)."""
    low, high = max(0, position - side + 1), min(position, length - side)
    return int(rng.integers(low, high + 1)) if high >= low else 0


def pad_to(array: np.ndarray, side: int, value: int) -> np.ndarray:
    """Pad the first two axes of ``array`` at the bottom/right up to ``side``."""
    ph, pw = side - array.shape[0], side - array.shape[1]
    if ph <= 0 and pw <= 0:
        return array
    pad = [(0, max(ph, 0)), (0, max(pw, 0))] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad, constant_values=value)


def item_rng(item: int | tuple[int, tuple[int, ...]]) -> tuple[int, np.random.Generator]:
    """``index`` or ``(index, key)`` -> the index and the generator of that item's crop and flips.

    Training draws ``(index, key)`` items (``train.StepBatches``: ``key`` = (seed, step, slot)), so every random
    choice of a sample is a function of the run's seed and step; a plain index seeds with the index alone.
    """
    index, key = item if isinstance(item, tuple) else (item, (item,))
    return index, np.random.default_rng(key)


def combine_targets(soft_a: np.ndarray, weight_a: np.ndarray, soft_b: np.ndarray, weight_b: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Two soft targets (C, h, w) with weights (h, w) as one: proportions averaged by weight, weights summed."""
    weight = weight_a + weight_b
    mixed = soft_a * weight_a + soft_b * weight_b
    soft = np.divide(mixed, weight, out=np.zeros_like(mixed), where=weight > 0)
    return soft.astype(np.float32), weight.astype(np.float32)


def dihedral(arrays: list[np.ndarray], k: int, flip: bool) -> list[np.ndarray]:
    """Rotate by ``k`` quarter turns and optionally flip the last two axes of each array (C, H, W) or (H, W)."""
    out = [np.rot90(a, k, axes=(-2, -1)) for a in arrays]
    return [np.array(a[..., ::-1] if flip else a) for a in out]  # fresh, writable, contiguous


class TrainDataset(Dataset):
    """Training samples: ``image`` (B, crop, crop), ``soft_mask`` (C, crop, crop), ``weight`` (crop, crop) and
    ``valid`` (crop, crop), 1 where the crop shows valid pixels of the sample (0 on padding and nodata).

    Args:
        source: the samples (typically a ``CachedSource``, so a window read is a slice).
        num_classes: number of classes ``C``.
        windows: how windows are cut and labeled (``Windows``).
        points: point labels; without them, dense masks are used.
        scaling: raw band values -> [0, 1] (default: the full range of the source's dtype, 0..255 for uint8).
        propagated: with points, full-resolution label masks per sample id of the clicks spread to their
            surroundings (``pointseg.propagation``), resampled like dense masks and added to the clicks' targets
            at ``windows.propagate_weight`` per pixel.

    Pixels a source marks invalid (``valid`` False: nodata, alpha) are unlabeled and get the value ``low``.
    """

    def __init__(self, source: Source, num_classes: int, windows: Windows, points: PointSet | None = None,
                 scaling: BandScaling | None = None, propagated: Mapping[str, MaskLike] | None = None) -> None:
        crop, scale, mode, rescale = windows.crop, windows.scale, windows.mode, tuple(windows.rescale)
        downsample, ignore_index, point_bias = windows.downsample, windows.ignore_index, windows.point_bias
        propagate_weight = windows.propagate_weight
        self.source = source
        self.refs = source.refs
        if points is not None:
            self.refs = [r for r in self.refs if r.id in points.images]
            if not self.refs:
                raise ValueError("no image of the dataset has points")
        self.crop, self.num_classes, self.scale, self.mode, self.points = crop, num_classes, scale, mode, points
        self.downsample, self.rescale, self.ignore_index = downsample, rescale, ignore_index
        self.scaling = scaling or default_scaling(source)
        self.point_bias = point_bias if points is not None else 0.0
        self.propagated, self.propagate_weight = propagated, propagate_weight

    def __len__(self) -> int:
        return len(self.refs)

    def labels(self, index: int, window: dict[str, np.ndarray], top: int, left: int, side: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """``soft`` (C, crop, crop) and ``weight`` (crop, crop) of the window at (top, left), read as ``window``."""
        ref, size = self.refs[index], (self.crop, self.crop)
        if self.points is not None:
            pts = self.points.images[ref.id]
            local = pts - np.array([top, left, 0])
            inside = (local[:, 0] >= 0) & (local[:, 0] < side) & (local[:, 1] >= 0) & (local[:, 1] < side)
            soft, weight = points_to_soft(local[inside], (side, side), size, self.num_classes)
            if self.propagated is None:
                return soft, weight
            spread = pad_to(self.propagated[ref.id][top:top + side, left:left + side], side, self.ignore_index)
            soft_spread, weight_spread = soft_downsample(spread, self.num_classes, size, self.mode, self.ignore_index)
            return combine_targets(soft, weight, soft_spread, self.propagate_weight * weight_spread)
        mask = window["mask"]
        if "valid" in window:
            mask = np.where(window["valid"], mask, self.ignore_index).astype(mask.dtype)
        if self.downsample == "nearest":
            return hard_to_soft(self.nearest_mask(mask, side), self.num_classes, self.ignore_index)
        return soft_downsample(pad_to(mask, side, self.ignore_index), self.num_classes, size, self.mode,
                               self.ignore_index)

    def nearest_mask(self, mask: np.ndarray, side: int) -> np.ndarray:
        """A window of a full-resolution mask, padded to ``side`` and nearest-neighbour resized: (crop, crop)."""
        padded = Image.fromarray(pad_to(mask, side, self.ignore_index))
        return np.asarray(padded.resize((self.crop, self.crop), Image.Resampling.NEAREST))

    def draw_window(self, index: int, size: tuple[int, int], rng: np.random.Generator) -> tuple[int, int, int]:
        """A random square window ``(top, left, side)`` in full-resolution pixels of sample ``index`` of ``size``:
        around one of its clicks with probability ``point_bias``, else anywhere."""
        factor = math.exp(rng.uniform(math.log(self.rescale[0]), math.log(self.rescale[1])))
        side = max(1, round(self.crop / (self.scale * factor)))  # window side at full resolution
        if self.point_bias > 0 and self.points is not None and rng.random() < self.point_bias:
            pts = self.points.images[self.refs[index].id]
            if len(pts):
                row, col, _ = pts[rng.integers(len(pts))]
                return window_around(int(row), size[0], side, rng), window_around(int(col), size[1], side, rng), side
        top, left = random_window(size[0], size[1], side, rng)
        return top, left, side

    def read_window(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, dict, int, int, int]:
        """A random window of sample ``index``: its image resized to the crop and scaled, ``(B, crop, crop)``
        float32, the window as read, and where it is."""
        ref = self.refs[index]
        top, left, side = self.draw_window(index, self.source.size(ref), rng)
        window = self.source.read(ref, (top, left, side, side))
        image = np.array(window["image"])  # a copy: cached windows are read-only memory maps
        if "valid" in window:
            image[~window["valid"]] = np.asarray(self.scaling.low).astype(image.dtype)
        image = resize_image(pad_to(image, side, 0), (self.crop, self.crop), self.mode)
        return self.scaling(image), window, top, left, side

    def valid_crop(self, window: dict[str, np.ndarray], side: int) -> np.ndarray:
        """``(crop, crop)`` uint8: 1 where the crop shows the sample's valid pixels, 0 on padding and nodata."""
        inside = np.zeros((side, side), dtype=np.uint8)
        inside[: window["image"].shape[0], : window["image"].shape[1]] = window.get("valid", 1)
        return np.asarray(Image.fromarray(inside).resize((self.crop, self.crop), Image.Resampling.NEAREST))

    def __getitem__(self, item: int | tuple[int, tuple[int, ...]]) -> dict[str, torch.Tensor]:
        index, rng = item_rng(item)
        image, window, top, left, side = self.read_window(index, rng)
        soft, weight = self.labels(index, window, top, left, side)
        image, soft, weight, valid = dihedral([image, soft, weight, self.valid_crop(window, side)],
                                              int(rng.integers(4)), bool(rng.random() < 0.5))
        return {"image": torch.from_numpy(image), "soft_mask": torch.from_numpy(soft),
                "weight": torch.from_numpy(weight), "valid": torch.from_numpy(valid).float()}


class UnlabeledDataset(TrainDataset):
    """Unlabeled training windows: ``image`` (3, crop, crop) and ``valid`` (crop, crop), 0 on padding.

    With ``with_mask``, ``mask`` (crop, crop) holds the nearest-neighbour labels of samples that have a mask on
    disk (``ignore_index`` for those that have none), for monitoring pseudo-label quality only: methods never
    train on it.
    """

    def __init__(self, source: Source, crop: int, scale: float = 1.0, mode: str = "bilinear",
                 rescale: tuple[float, float] = (1.0, 1.0), with_mask: bool = True, ignore_index: int = 255,
                 tags: dict[str, np.ndarray] | None = None, scaling: BandScaling | None = None) -> None:
        windows = Windows(crop, scale, mode, "nearest", rescale, ignore_index)
        super().__init__(source, source.classes.num_classes, windows, scaling=scaling)
        self.with_mask = with_mask
        if tags is not None:
            missing = [r.id for r in self.refs if r.id not in tags]
            if missing:
                raise ValueError(f"image-level tags missing for {len(missing)} unlabeled images, e.g. {missing[:3]}")
        self.tags = tags

    def __getitem__(self, item: int | tuple[int, tuple[int, ...]]) -> dict[str, torch.Tensor]:
        index, rng = item_rng(item)
        image, window, top, left, side = self.read_window(index, rng)
        size = (self.crop, self.crop)
        arrays = [image, self.valid_crop(window, side)]
        if self.with_mask:
            arrays.append(self.nearest_mask(window["mask"], side) if "mask" in window
                          else np.full(size, self.ignore_index, np.uint8))
        arrays = dihedral(arrays, int(rng.integers(4)), bool(rng.random() < 0.5))
        sample = {"image": torch.from_numpy(arrays[0]), "valid": torch.from_numpy(arrays[1]).float()}
        if self.with_mask:
            sample["mask"] = torch.from_numpy(arrays[2]).long()
        if self.tags is not None:
            sample["tags"] = torch.from_numpy(self.tags[self.refs[index].id]).float()  # (C,) multi-hot
        return sample


class ConcatSamples(ConcatDataset):
    """Datasets one after another, like ``ConcatDataset``; an ``(index, key)`` item keeps its key (``item_rng``)."""

    def __getitem__(self, item: int | tuple[int, tuple[int, ...]]) -> dict[str, torch.Tensor]:
        index, key = item if isinstance(item, tuple) else (item, None)
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        part = bisect.bisect_right(self.cumulative_sizes, index)
        local = index - (self.cumulative_sizes[part - 1] if part else 0)
        return self.datasets[part][local if key is None else (local, key)]


class EvalDataset(Dataset):
    """Whole images at ``scale`` (resampled with the ``mode`` filter, then scaled by ``scaling``) with their masks
    and validity at full resolution (``mask`` absent for images without one; ``valid`` for sources that mark
    invalid pixels, whose mask is then ``ignore_index`` there)."""

    def __init__(self, source: Source, scale: float = 1.0, mode: str = "bilinear",
                 scaling: BandScaling | None = None, ignore_index: int = 255) -> None:
        self.source, self.scale, self.mode, self.ignore_index = source, scale, mode, ignore_index
        self.refs = source.refs
        self.scaling = scaling or default_scaling(source)

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> dict:
        ref = self.refs[index]
        full = self.source.read(ref)
        height, width = full["image"].shape[:2]
        image = resize_image(np.asarray(full["image"]), scaled_size(height, width, self.scale), self.mode)
        sample = {"id": ref.id, "image": torch.from_numpy(self.scaling(image))}
        if "valid" in full:
            sample["valid"] = torch.from_numpy(np.array(full["valid"]))
        if "mask" in full:
            mask = full["mask"] if "valid" not in full else np.where(full["valid"], full["mask"], self.ignore_index)
            sample["mask"] = torch.from_numpy(np.array(mask)).long()
        return sample


def default_scaling(source: Source) -> BandScaling:
    """The full range of the source's band dtype (0..255 for images)."""
    ref = source.refs[0]
    return BandScaling.full_range(source.band_count(ref), source.band_dtype(ref))
