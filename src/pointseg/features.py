"""The feature cache: a frozen encoder's feature maps of each image (or raster window), computed once, on disk.

The click loop refits a light head over a pretrained encoder's features every round (``pointseg.fast``); the
encoder is the expensive part and does not change between rounds, so its features are kept beside the decoded
samples (``data.cache_dir``, counted against ``data.cache_max_gb``, evicted least recently used first). An entry
is the stages a hypercolumn model reads, each stored at its own resolution in float16
(``<key>.features-<stage>.npy``): MobileNetV2's five stages of a 1024 x 1024 tile at scale 0.5 take about 4 MB,
far less than the hypercolumn at the head's grid (1448 channels). Keys cover the image file (path, modification
time, size), the window, the encoder's weights and normalisation, the bands read and their scaling, the scale and
resampling filter, and the stages.

Image tiles are encoded whole; rasters in windows of a grid (``FeatureCache.windows``), each encoded alone, so
memory stays bounded whatever the raster's size.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pointseg.data.bands import BandScaling
from pointseg.data.cache import evict
from pointseg.data.labels import scaled_size
from pointseg.data.sources import SampleRef, Source
from pointseg.inference import pad_to_multiple
from pointseg.io import NotEnoughSpace, atomic_path, check_space, size_text
from pointseg.models.segmentation import SegmentationModel
from pointseg.predictor import model_pixels

VERSION = 1  # of the computation and its files: a change of it invalidates cached features
Window = tuple[int, int, int, int]  # top, left, height, width at full resolution


@dataclass(frozen=True)
class Unit:
    """What one cache entry holds: a sample (``ref``) or a ``window`` of it (``None``: the whole sample)."""

    ref: SampleRef
    window: Window | None = None

    @property
    def name(self) -> str:
        return self.ref.id if self.window is None else f"{self.ref.id}@{self.window[0]},{self.window[1]}"


def grid_windows(size: tuple[int, int], side: int) -> list[Window]:
    """A grid of windows of ``side`` full-resolution pixels over an image of ``size`` (the last ones clipped)."""
    return [(top, left, min(side, size[0] - top), min(side, size[1] - left))
            for top in range(0, size[0], side) for left in range(0, size[1], side)]


def encoder_digest(model: SegmentationModel) -> str:
    """A digest of the encoder's weights and buffers and the model's input normalisation."""
    digest = hashlib.sha1()
    tensors = {**{f"encoder.{k}": v for k, v in model.encoder.state_dict().items()},
               "mean": model.mean, "std": model.std}
    for name, tensor in sorted(tensors.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class FeatureCache:
    """The encoder features of ``model`` (a ``SegmentationModel`` whose decoder reads ``stages``) for images read
    from ``source`` with bands ``scaling`` at ``scale`` (``mode`` filter), kept in ``directory`` under
    ``max_bytes`` (0: no cap); ``bands``: the bands the source reads (part of the key). ``encoded`` counts the
    windows the encoder ran on (the rest came from disk)."""

    def __init__(self, model: SegmentationModel, source: Source, scaling: BandScaling, scale: float, mode: str,
                 stages: Sequence[int], directory: str | Path, max_bytes: int = 0, window: int = 1024,
                 bands: Sequence[int] | None = None) -> None:
        self.model, self.source, self.scaling, self.scale, self.mode = model, source, scaling, scale, mode
        self.stages = tuple(sorted({0, *stages}))  # stage 0, the input, also gives the input's size
        self.directory, self.max_bytes, self.window = Path(directory), max_bytes, window
        self.bands = list(bands) if bands else None  # the bands read (1-based; None: every band but alpha)
        self.digest = encoder_digest(model)
        self.encoded, self.used = 0, set[str]()

    def units(self, refs: Sequence[SampleRef] | None = None) -> list[Unit]:
        """Every entry of ``refs`` (default: all of the source): tiles whole, rasters in grid windows."""
        out = []
        for ref in refs if refs is not None else self.source.refs:
            size = self.source.size(ref)
            if self.source.cacheable:
                out.append(Unit(ref))
            else:
                out += [Unit(ref, w) for w in grid_windows(size, self.window)]
        return out

    def model_size(self, unit: Unit) -> tuple[int, int]:
        """The unit's size as the model sees it (at ``scale``)."""
        height, width = unit.window[2:] if unit.window else self.source.size(unit.ref)
        return scaled_size(height, width, self.scale)

    def padded_size(self, unit: Unit) -> tuple[int, int]:
        """The unit's size as the encoder sees it (padded to its size divisor)."""
        h, w = self.model_size(unit)
        divisor = self.model.size_divisor
        return -(-h // divisor) * divisor, -(-w // divisor) * divisor

    def nbytes(self, unit: Unit) -> int:
        """Bytes the unit's entry takes on disk."""
        h, w = self.padded_size(unit)
        channels = self.model.feature_channels
        return sum(2 * channels[s] * (h >> s) * (w >> s) for s in self.stages)

    def check_space(self, units: Sequence[Unit]) -> None:
        """Refuse, before anything is written, features that would pass the cap or the disk."""
        needed = sum(self.nbytes(u) for u in units)
        what = f"the encoder features of {len(units)} images or windows"
        if self.max_bytes and needed > self.max_bytes:
            raise NotEnoughSpace(f"{self.directory}: {what} need about {size_text(needed)}, over data.cache_max_gb="
                                 f"{self.max_bytes / 1e9:g}; raise it (--set data.cache_max_gb=N), choose fewer stages "
                                 "(model.hypercolumn_stages) or map less")
        check_space(self.directory, needed, what, "point data.cache_dir at a larger disk (--set data.cache_dir=DIR)")

    def key(self, unit: Unit) -> str:
        st = unit.ref.image.stat()
        parts = [VERSION, str(unit.ref.image.resolve()), st.st_mtime_ns, st.st_size, unit.window, self.digest,
                 self.bands, self.scaling.to_dict(), self.scale, self.mode, self.stages]
        return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def paths(self, key: str) -> list[Path]:
        return [self.directory / f"{key}.features-{s}.npy" for s in self.stages]

    def get(self, unit: Unit) -> list[torch.Tensor | None]:
        """The unit's encoder features (float32, padded to the encoder's size divisor), one per encoder stage
        (``None`` for stages not kept)."""
        key = self.key(unit)
        self.used.add(key)
        paths = self.paths(key)
        try:
            arrays = [np.load(p) for p in paths]
        except (OSError, ValueError, EOFError):
            arrays = self._encode(unit, key, paths)
        out: list[torch.Tensor | None] = [None] * len(self.model.feature_channels)
        for stage, array in zip(self.stages, arrays, strict=True):
            out[stage] = torch.from_numpy(np.asarray(array, dtype=np.float32))[None]
        return out

    @torch.no_grad()
    def _encode(self, unit: Unit, key: str, paths: list[Path]) -> list[np.ndarray]:
        window = self.source.read(unit.ref, unit.window)
        pixels = self.scaling(model_pixels(window, self.scaling, self.scale, self.mode))
        x = pad_to_multiple(torch.from_numpy(pixels)[None].to(next(self.model.parameters()).device),
                            self.model.size_divisor)
        self.model.eval()
        features = self.model.encode(x)
        arrays = [features[s][0].float().cpu().numpy().astype(np.float16) for s in self.stages]
        self.directory.mkdir(parents=True, exist_ok=True)
        for path, array in zip(paths, arrays, strict=True):
            with atomic_path(path) as tmp:
                np.save(tmp, array)
        self.encoded += 1
        if self.max_bytes:
            evict(self.directory, self.max_bytes, keep=self.used)
        return arrays
