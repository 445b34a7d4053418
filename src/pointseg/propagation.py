"""Click propagation: each click spreads over the nearby pixels that very likely share its class.

``superpixel``: around each click, a window of ``patch`` training-resolution pixels is read, resampled to the
training resolution, scaled like the model's input and cut into SLIC superpixels (scikit-image) of about
``superpixel_size`` pixels a side; the click's class spreads over its own superpixel, capped at the
``max_pixels`` pixels of it nearest to the click so a large superpixel of a thin class cannot flood its
neighbours. Pixels two clicks of different classes both reach are left unlabeled. The result is a full-resolution
label mask per image (``ignore_index`` where nothing spread) that training resamples like a dense mask, at a weight
below the clicks' own (``labels.propagate_weight``). Masks are computed once and kept in the decoded-sample cache,
keyed on the image file, its clicks and these settings.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.segmentation import slic
from tqdm import tqdm

from pointseg.data.bands import BandScaling
from pointseg.data.labels import resize_image, scaled_size
from pointseg.data.points import PointSet
from pointseg.data.sources import SampleRef, Source
from pointseg.io import atomic_path

VERSION = 1  # of the computation: a change of it invalidates cached masks


@dataclass(frozen=True)
class Propagation:
    """How clicks spread (sizes in training-resolution pixels, at ``scale`` of the full resolution)."""

    scale: float
    superpixel_size: int = 16
    compactness: float = 10.0
    max_pixels: int = 256
    patch: int = 96
    method: str = "superpixel"


def click_region(image: np.ndarray, row: int, col: int, spread: Propagation) -> np.ndarray:
    """The pixels of ``image`` (h, w, B) in [0, 1] that the click at (row, col) spreads to: ``(h, w)`` bool.

    Its SLIC superpixel, capped at the ``spread.max_pixels`` pixels of it nearest to the click (ties in
    row-major order); the click's own pixel is always in it.
    """
    h, w = image.shape[:2]
    segments = slic(image, n_segments=max(1, round(h * w / spread.superpixel_size**2)),
                    compactness=spread.compactness, channel_axis=-1, start_label=0,
                    convert2lab=image.shape[2] == 3)
    rows, cols = np.nonzero(segments == segments[row, col])
    if len(rows) > spread.max_pixels:
        nearest = np.argsort((rows - row) ** 2 + (cols - col) ** 2, kind="stable")[: spread.max_pixels]
        rows, cols = rows[nearest], cols[nearest]
    region = np.zeros((h, w), dtype=bool)
    region[rows, cols] = True
    return region


def propagate(source: Source, ref: SampleRef, points: np.ndarray, spread: Propagation, scaling: BandScaling,
              num_classes: int, ignore_index: int, out: np.ndarray) -> np.ndarray:
    """Write the propagated labels of ``points`` (N, 3) of one sample into ``out`` (H, W) uint8, which must hold
    ``ignore_index`` everywhere; returns it. Reads only windows around the clicks."""
    if num_classes >= 255:
        raise ValueError("click propagation needs fewer than 255 classes")
    clash = num_classes  # a value no class has: pixels two classes reach, unlabeled at the end
    height, width = source.size(ref)
    side = max(1, round(spread.patch / spread.scale))  # window side at full resolution
    windows = []
    for row, col, cls in points:
        top = int(np.clip(row - side // 2, 0, max(height - side, 0)))
        left = int(np.clip(col - side // 2, 0, max(width - side, 0)))
        window = source.read(ref, (top, left, side, side))
        h, w = window["image"].shape[:2]
        low = scaled_size(h, w, spread.scale)
        image = scaling(resize_image(np.asarray(window["image"]), low, "bilinear"))  # (B, h', w') in [0, 1]
        at = (min((row - top) * low[0] // h, low[0] - 1), min((col - left) * low[1] // w, low[1] - 1))
        region = click_region(np.ascontiguousarray(image.transpose(1, 2, 0)), *at, spread)
        region = np.array(Image.fromarray(region).resize((w, h), Image.Resampling.NEAREST))
        if "valid" in window:
            region &= np.asarray(window["valid"], dtype=bool)
        target = out[top:top + h, left:left + w]  # a view: written in place
        current = target[region]
        target[region] = np.where(current == ignore_index, cls, np.where(current == cls, cls, clash))
        windows.append(target)
    for target in windows:  # only the clicks' windows were written: a large raster is never scanned whole
        target[target == clash] = ignore_index
    for row, col, cls in points:  # a click's own pixel keeps its class even where another region reached it
        out[row, col] = cls
    return out


def cache_key(ref: SampleRef, points: np.ndarray, spread: Propagation, scaling: BandScaling, classes: dict) -> str:
    st = ref.image.stat()
    parts = [VERSION, str(ref.image.resolve()), st.st_mtime_ns, st.st_size, points.tolist(), asdict(spread),
             scaling.to_dict(), classes]
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def propagated_labels(source: Source, points: PointSet, spread: Propagation, scaling: BandScaling,
                      cache_dir: str | Path, ignore_index: int = 255, progress: bool = True
                      ) -> dict[str, np.ndarray]:
    """Full-resolution propagated label masks of every clicked sample, memory-mapped from ``cache_dir`` (computed
    and stored there on first use, as ``<key>.propagated.npy`` beside the decoded samples)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    masks = {}
    refs = [r for r in source.refs if r.id in points.images]
    for ref in tqdm(refs, desc="propagate clicks", disable=not progress, leave=False):
        pts = points.images[ref.id]
        path = cache_dir / f"{cache_key(ref, pts, spread, scaling, source.classes.to_dict())}.propagated.npy"
        try:
            masks[ref.id] = np.load(path, mmap_mode="r")
            continue
        except (OSError, ValueError, EOFError):
            pass
        with atomic_path(path) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=source.size(ref))
            out[:] = ignore_index
            propagate(source, ref, pts, spread, scaling, source.classes.num_classes, ignore_index, out)
            out.flush()
            del out
        masks[ref.id] = np.load(path, mmap_mode="r")
    return masks


def propagation_quality(masks: dict[str, np.ndarray], source: Source, num_classes: int, ignore_index: int = 255
                        ) -> dict[str, np.ndarray]:
    """Per class, against the dense masks of ``source``: ``pixels`` the propagated labels give the class and
    ``correct`` those of them the mask agrees with (pixels the mask ignores are left out)."""
    pixels = np.zeros(num_classes, dtype=np.int64)
    correct = np.zeros(num_classes, dtype=np.int64)
    for ref in source.refs:
        if ref.id not in masks:
            continue
        spread, truth = np.asarray(masks[ref.id]), source.read_mask(ref)
        known = (spread != ignore_index) & (truth != ignore_index)
        pixels += np.bincount(spread[known], minlength=num_classes)[:num_classes]
        correct += np.bincount(spread[known & (spread == truth)], minlength=num_classes)[:num_classes]
    return {"pixels": pixels, "correct": correct}
