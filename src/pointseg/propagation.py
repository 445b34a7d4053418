"""Click propagation: each click spreads over the nearby pixels that very likely share its class.

``superpixel``: around each click, a window of ``patch`` training-resolution pixels is read, resampled to the
training resolution, scaled like the model's input and cut into SLIC superpixels (scikit-image) of about
``superpixel_size`` pixels a side; the click's class spreads over its own superpixel, capped at the
``max_pixels`` pixels of it nearest to the click so a large superpixel of a thin class cannot flood its
neighbours. Pixels two clicks of different classes both reach are left unlabeled. The result is a full-resolution
label mask per image (``ignore_index`` where nothing spread) that training resamples like a dense mask, at a weight
below the clicks' own (``labels.propagate_weight``). Only the blocks of the mask that clicks reach are stored
(``BlockMask``), so a few clicks on a raster of any size take a few megabytes. Masks are computed once and kept in
the decoded-sample cache (counted against its cap), keyed on the image file, its clicks and these settings. Within
a process, each click's region is also kept in memory (``REGIONS``): a click's region depends only on the image
around it, so a session that adds clicks to an image (the app) computes only the new clicks' regions.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.segmentation import slic
from tqdm import tqdm

from pointseg.data.bands import BandScaling
from pointseg.data.cache import evict
from pointseg.data.labels import resize_image, scaled_size
from pointseg.data.points import PointSet
from pointseg.data.sources import SampleRef, Source
from pointseg.io import atomic_path

VERSION = 2  # of the computation and its files: a change of it invalidates cached masks
BLOCK = 256  # side of the blocks a propagated mask is stored in


class BlockMask:
    """A label mask of ``shape`` that is ``ignore_index`` except in the ``BLOCK`` x ``BLOCK`` blocks it stores:
    ``blocks`` (N, BLOCK, BLOCK) uint8 (e.g. memory-mapped) at block coordinates ``index`` (N, 2). Sliced like an
    array (``mask[top:bottom, left:right]`` gives a dense copy of the window, clipped to the shape), written a
    window at a time (``put``); ``np.asarray(mask)`` makes it dense (small images only)."""

    def __init__(self, shape: tuple[int, int], ignore_index: int, blocks: np.ndarray | None = None,
                 index: np.ndarray | None = None) -> None:
        self.shape, self.ignore_index = (int(shape[0]), int(shape[1])), ignore_index
        self.blocks: dict[tuple[int, int], np.ndarray] = {}
        if blocks is not None and index is not None:
            self.blocks = {(int(r), int(c)): block for (r, c), block in zip(index, blocks, strict=True)}

    @property
    def nbytes(self) -> int:
        return len(self.blocks) * BLOCK * BLOCK

    def _spans(self, top: int, left: int, height: int, width: int):
        for br in range(top // BLOCK, (top + height - 1) // BLOCK + 1):
            for bc in range(left // BLOCK, (left + width - 1) // BLOCK + 1):
                r0, c0 = max(top, br * BLOCK), max(left, bc * BLOCK)
                r1, c1 = min(top + height, (br + 1) * BLOCK), min(left + width, (bc + 1) * BLOCK)
                yield (br, bc), (slice(r0 - br * BLOCK, r1 - br * BLOCK), slice(c0 - bc * BLOCK, c1 - bc * BLOCK)), \
                    (slice(r0 - top, r1 - top), slice(c0 - left, c1 - left))

    def window(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        """A dense copy of the rows ``[top, top + height)`` and columns ``[left, left + width)``."""
        out = np.full((height, width), self.ignore_index, dtype=np.uint8)
        if height > 0 and width > 0:
            for key, inside, piece in self._spans(top, left, height, width):
                if key in self.blocks:
                    out[piece] = self.blocks[key][inside]
        return out

    def put(self, top: int, left: int, values: np.ndarray) -> None:
        """Write ``values`` (h, w) at ``(top, left)``; blocks are made where it holds labels."""
        for key, inside, piece in self._spans(top, left, *values.shape):
            part = values[piece]
            if key not in self.blocks:
                if not (part != self.ignore_index).any():
                    continue
                self.blocks[key] = np.full((BLOCK, BLOCK), self.ignore_index, dtype=np.uint8)
            self.blocks[key][inside] = part

    def __getitem__(self, key: tuple) -> np.ndarray:
        """``mask[r0:r1, c0:c1]``: a dense copy of the window (clipped to the shape); ``mask[row, col]``: a label."""
        if all(isinstance(k, int | np.integer) for k in key):
            return self.window(int(key[0]), int(key[1]), 1, 1)[0, 0]
        rows, cols = (range(*k.indices(n)) for k, n in zip(key, self.shape, strict=True))
        if rows.step != 1 or cols.step != 1:
            return np.asarray(self)[key]
        return self.window(rows.start, cols.start, len(rows), len(cols))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        dense = self.window(0, 0, *self.shape)
        return dense if dtype is None else dense.astype(dtype)

    def save(self, blocks_path: Path, index_path: Path) -> None:
        """The blocks and their index (shape, ignore value and block coordinates) as two ``.npy`` files."""
        keys = sorted(self.blocks)
        head = [[self.shape[0], self.shape[1]], [self.ignore_index, BLOCK]]
        np.save(index_path, np.array(head + [list(k) for k in keys], dtype=np.int64).reshape(-1, 2))
        np.save(blocks_path, np.stack([self.blocks[k] for k in keys]) if keys else
                np.zeros((0, BLOCK, BLOCK), np.uint8))

    @classmethod
    def load(cls, blocks_path: Path, index_path: Path) -> BlockMask:
        index = np.load(index_path)
        (height, width), (ignore, block) = index[:2]
        if block != BLOCK:
            raise ValueError(f"{index_path}: blocks of {block}, not {BLOCK}")
        return cls((height, width), int(ignore), np.load(blocks_path, mmap_mode="r"), index[2:])


def click_window(row: int, col: int, size: tuple[int, int], spread: Propagation) -> tuple[int, int, int]:
    """Top, left and side (full resolution) of the window around a click that its propagation reads and writes:
    ``spread.patch`` training-resolution pixels a side, shifted inside the image."""
    side = max(1, round(spread.patch / spread.scale))
    return (int(np.clip(row - side // 2, 0, max(size[0] - side, 0))),
            int(np.clip(col - side // 2, 0, max(size[1] - side, 0))), side)


def blocks_reached(points: np.ndarray, size: tuple[int, int], spread: Propagation) -> int:
    """How many blocks the propagation of ``points`` on an image of ``size`` may write (an upper bound)."""
    height, width = size
    keys: set[tuple[int, int]] = set()
    for row, col, _ in points:
        top, left, side = click_window(row, col, size, spread)
        keys.update((br, bc) for br in range(top // BLOCK, (min(top + side, height) - 1) // BLOCK + 1)
                    for bc in range(left // BLOCK, (min(left + side, width) - 1) // BLOCK + 1))
    return len(keys)


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


class RegionMemo:
    """Click regions (full-resolution boolean windows, kept as packed bits) by key, up to ``max_bytes``; the least
    recently used go first. Safe to share between threads."""

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes, self.bytes = max_bytes, 0
        self.items: OrderedDict[tuple, tuple[np.ndarray, tuple[int, int]]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple) -> np.ndarray | None:
        with self.lock:
            if key not in self.items:
                return None
            self.items.move_to_end(key)
            bits, shape = self.items[key]
        return np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape).astype(bool)

    def put(self, key: tuple, region: np.ndarray) -> None:
        bits = np.packbits(region)
        with self.lock:
            if key in self.items:
                return
            self.items[key] = bits, region.shape
            self.bytes += bits.nbytes
            while self.bytes > self.max_bytes and self.items:
                old, _ = self.items.popitem(last=False)[1]
                self.bytes -= old.nbytes


REGIONS = RegionMemo()


def click_region_of(source: Source, ref: SampleRef, row: int, col: int, window: tuple[int, int, int],
                    spread: Propagation, scaling: BandScaling, image_key: str) -> np.ndarray:
    """The full-resolution region (within the image's valid pixels) a click at ``(row, col)`` spreads over, in its
    ``window`` (top, left, side; clipped at the image's edges), from ``REGIONS`` when it was computed before
    (``image_key``: the image file, the settings and the scaling)."""
    key = (image_key, int(row), int(col))
    region = REGIONS.get(key)
    if region is not None:
        return region
    top, left, side = window
    read = source.read(ref, (top, left, side, side))
    h, w = read["image"].shape[:2]
    low = scaled_size(h, w, spread.scale)
    image = scaling(resize_image(np.nan_to_num(np.asarray(read["image"])), low, "bilinear"))  # (B, h', w')
    at = (min((row - top) * low[0] // h, low[0] - 1), min((col - left) * low[1] // w, low[1] - 1))
    region = click_region(np.ascontiguousarray(image.transpose(1, 2, 0)), *at, spread)
    region = np.array(Image.fromarray(region).resize((w, h), Image.Resampling.NEAREST))
    if "valid" in read:
        region &= np.asarray(read["valid"], dtype=bool)
    REGIONS.put(key, region)
    return region


def propagate(source: Source, ref: SampleRef, points: np.ndarray, spread: Propagation, scaling: BandScaling,
              num_classes: int, ignore_index: int) -> BlockMask:
    """The propagated labels of ``points`` (N, 3) of one sample. Reads and writes only windows around the clicks."""
    if num_classes >= 255:
        raise ValueError("click propagation needs fewer than 255 classes")
    clash = num_classes  # a value no class has: pixels two classes reach, unlabeled at the end
    height, width = source.size(ref)
    out = BlockMask((height, width), ignore_index)
    windows = []
    st = ref.image.stat()
    image_key = json.dumps([VERSION, str(ref.image.resolve()), st.st_mtime_ns, st.st_size, source.band_numbers(ref),
                            asdict(spread), scaling.to_dict()], sort_keys=True)
    for row, col, cls in points:
        top, left, side = click_window(row, col, (height, width), spread)
        region = click_region_of(source, ref, row, col, (top, left, side), spread, scaling, image_key)
        h, w = region.shape
        target = out.window(top, left, h, w)
        current = target[region]
        target[region] = np.where(current == ignore_index, cls, np.where(current == cls, cls, clash))
        out.put(top, left, target)
        windows.append((top, left, h, w))
    for top, left, h, w in windows:  # only the clicks' windows were written: a large raster is never scanned whole
        target = out.window(top, left, h, w)
        target[target == clash] = ignore_index
        out.put(top, left, target)
    for row, col, cls in points:  # a click's own pixel keeps its class even where another region reached it
        out.put(int(row), int(col), np.array([[cls]], dtype=np.uint8))
    return out


def cache_key(ref: SampleRef, points: np.ndarray, spread: Propagation, scaling: BandScaling, classes: dict) -> str:
    st = ref.image.stat()
    parts = [VERSION, str(ref.image.resolve()), st.st_mtime_ns, st.st_size, points.tolist(), asdict(spread),
             scaling.to_dict(), classes]
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def propagated_labels(source: Source, points: PointSet, spread: Propagation, scaling: BandScaling,
                      cache_dir: str | Path, ignore_index: int = 255, progress: bool = True,
                      max_bytes: int | None = None) -> dict[str, BlockMask]:
    """The propagated label mask of every clicked sample, its blocks memory-mapped from ``cache_dir`` (computed and
    stored there on first use, as ``<key>.propagated-blocks.npy`` and ``<key>.propagated-index.npy`` beside the
    decoded samples; ``max_bytes``: the cache's cap, enforced after each new mask)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    masks, used = {}, set()
    refs = [r for r in source.refs if r.id in points.images]
    for ref in tqdm(refs, desc="propagate clicks", disable=not progress, leave=False):
        pts = points.images[ref.id]
        key = cache_key(ref, pts, spread, scaling, source.classes.to_dict())
        used.add(key)
        paths = cache_dir / f"{key}.propagated-blocks.npy", cache_dir / f"{key}.propagated-index.npy"
        try:
            masks[ref.id] = BlockMask.load(*paths)
            continue
        except (OSError, ValueError, EOFError):
            pass
        mask = propagate(source, ref, pts, spread, scaling, source.classes.num_classes, ignore_index)
        with atomic_path(paths[0]) as blocks, atomic_path(paths[1]) as index:
            mask.save(blocks, index)
        masks[ref.id] = BlockMask.load(*paths)
        if max_bytes:
            evict(cache_dir, max_bytes, keep=used)
    return masks


def propagation_quality(masks: Mapping[str, BlockMask | np.ndarray], source: Source, num_classes: int,
                        ignore_index: int = 255) -> dict[str, np.ndarray]:
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
