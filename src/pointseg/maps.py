"""Maps from rasters: tiled, blended inference over a whole raster, written as a GeoTIFF that QGIS opens in the
right place with the class colours and names.

Windows of ``tile`` model pixels overlap by ``overlap`` and reach every edge (the last window of a row or column is
aligned to the raster's edge, so any size works). Each window's class probabilities are weighted by a 2-D Hann
window and summed (on the grid of the model's pixels where the model sees the raster at 1/k of its resolution,
then up-sampled once); a pixel's map class is the argmax of its weighted sum over its weight sum, so window borders
leave no seams. Sums are kept for one band of rows (one window high, the raster's width) and written as soon as no later
window reaches them; a wide band is kept in a file and only the pages in use are held in memory. Memory does not
grow with the raster's height; what a band of rows holds across the width (the rows read, their validity, the
finished rows) grows with its width only (BENCHMARKS 11: 20k x 20k within 1.07-1.11x of 10k x 10k). The model
runs through a ``Predictor``; the GeoTIFFs are written by a ``MapWriter`` (``pointseg.mapwriter``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import mmap
import shutil
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from tqdm import tqdm

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

from pointseg.choices import Tiling
from pointseg.data.raster import RasterSource
from pointseg.data.sources import SampleRef
from pointseg.inference import certainty, top_class
from pointseg.io import check_space, write_json
from pointseg.mapwriter import BLOCK as MAP_BLOCK
from pointseg.mapwriter import NODATA, MapRows, MapWriter
from pointseg.predictor import Predictor, blend_grid, model_pixels, window_sizes

log = logging.getLogger(__name__)

SPILL_BYTES = 64 * 2**20  # row bands larger than this are kept in a file (see RowBand)
BAND_BLOCK = 512  # columns per contiguous block of a band of sums
GDAL_CACHE_BYTES = 32 * 2**20  # GDAL's block cache while mapping, at least (its default grows with the machine's RAM)
CACHED_BLOCK_ROWS = 3  # rows of the map's blocks GDAL's cache holds, at most (written ones wait there to be flushed)


def shift_up(a: np.ndarray, rows: int, held: int | None = None) -> None:
    """Move the rows ``[rows, held)`` of ``a`` (``held``: all of them) to its top, in place, in pieces that do not
    overlap (numpy would copy overlapping ones to a temporary array first); the rows left behind keep their
    values."""
    held = a.shape[0] if held is None else held
    for start in range(0, max(0, held - rows), rows):
        stop = min(start + rows, held - rows)
        a[start:stop] = a[start + rows:stop + rows]


def window_starts(length: int, side: int, stride: int) -> list[int]:
    """Starts of ``side``-long windows every ``stride`` along ``length``, the last one aligned to the end."""
    if length <= side:
        return [0]
    starts = list(range(0, length - side, stride))
    return starts + [length - side]


def hann(side: int) -> np.ndarray:
    """A 1-D Hann window of ``side`` samples, positive everywhere (so a pixel seen by one window keeps its value)."""
    return (np.sin(np.pi * (np.arange(side) + 0.5) / side) ** 2).astype(np.float32)


@dataclass
class MapResult:
    """A written map: its paths, size and the time spent."""

    map: Path
    confidence: Path | None
    bands: tuple[int, ...]  # of the raster, as the model read them
    height: int
    width: int
    seconds: float
    forward_seconds: float = 0.0  # of the model alone
    windows: int = 0

    @property
    def megapixels_per_s(self) -> float:
        return self.height * self.width / 1e6 / max(self.seconds, 1e-9)


class RowBand:
    """Weighted probability sums for the rows ``[top, top + height)`` of a raster ``width`` wide, at the resolution
    the windows are blended at (``predictor.blend_grid``).

    The band is stored in blocks of ``block`` columns, each block contiguous (class sums and weight sum for all its
    rows), so a window touches the memory of the few blocks it overlaps and nothing beside them. With ``spill`` (a
    folder), the blocks live in a file there, mapped into memory, and the pages a step touched are handed back to
    the page cache after it (``release``): the process holds about one batch of windows, whatever the width, and
    the kernel may write the rest to disk. The file is unlinked at once, so nothing is left behind, even after a
    kill.
    """

    def __init__(self, classes: int, height: int, width: int, spill: str | Path | None = None,
                 block: int | None = None) -> None:
        self.top, self.width, self.block, self.classes, self._mmap = 0, width, block or BAND_BLOCK, classes, None
        shape = (-(-width // self.block), classes + 1, height, self.block)  # planes: sums, weight sum
        self._data: np.ndarray
        if spill is None:
            self._data = np.zeros(shape, dtype=np.float32)
        else:
            with tempfile.TemporaryFile(dir=spill, prefix=".pointseg-band-") as f:
                f.truncate(int(np.prod(shape)) * 4)
                self._mmap = mmap.mmap(f.fileno(), 0)
            self._data = np.frombuffer(self._mmap, dtype=np.float32).reshape(shape)

    def _pieces(self, col: int, width: int) -> Iterator[tuple[int, slice, slice]]:
        """``(block, columns in the block, columns of the piece)`` of the columns ``[col, col + width)``."""
        for b in range(col // self.block, (col + width - 1) // self.block + 1):
            start, stop = max(col, b * self.block), min(col + width, (b + 1) * self.block)
            yield b, slice(start - b * self.block, stop - b * self.block), slice(start - col, stop - col)

    def add(self, probs: np.ndarray, weight: np.ndarray, row: int, col: int) -> None:
        """Add one window's ``probs`` (C, h, w), weighted, at ``row``, ``col``."""
        r, (h, w), c = row - self.top, weight.shape, self.classes
        for b, inside, piece in self._pieces(col, w):
            data = self._data[b, :, r:r + h, inside]
            part = torch.from_numpy(weight[:, piece])
            torch.from_numpy(data[:c]).addcmul_(torch.from_numpy(probs[:, :, piece]), part)  # in place, threaded
            torch.from_numpy(data[c]).add_(part)

    def probabilities(self, start: int, rows: int) -> torch.Tensor:
        """The blended class probabilities ``(C, rows, width)`` of the band's rows ``[start, start + rows)`` (sums
        over weight sums; 0 where no window reached)."""
        out = torch.empty(self.classes, rows, self.width)
        c = self.classes
        for b, inside, piece in self._pieces(0, self.width):
            data = torch.from_numpy(self._data[b, :, start:start + rows, inside])
            torch.div(data[:c], data[c].clamp(1e-12), out=out[:, :, piece])
        self.release()
        return out

    def advance(self, rows: int) -> None:
        """Move the band down by ``rows`` (block by block; the new rows start at 0)."""
        for b in range(self._data.shape[0]):
            data = self._data[b].swapaxes(0, 1)  # (rows, planes, columns)
            shift_up(data, rows)
            data[-rows:] = 0
            self.release()
        self.top += rows

    def release(self) -> None:
        """Hand the pages touched so far back to the page cache (a spilled band only; its contents stay)."""
        if self._mmap is not None:
            self._mmap.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        if self._mmap is not None:
            del self._data
            self._mmap.close()
            self._mmap = None


class ValidRows:
    """Which raster pixels of the rows ``[top, top + height)`` some window read as valid (full resolution)."""

    def __init__(self, height: int, width: int) -> None:
        self.top, self._data = 0, np.zeros((height, width), bool)

    def add(self, valid: np.ndarray, row: int, col: int) -> None:
        h, w = valid.shape
        self._data[row - self.top:row - self.top + h, col:col + w] |= valid

    def take(self, rows: int) -> np.ndarray:
        """The first ``rows`` rows; the band then moves down by them."""
        taken = self._data[:rows].copy()
        shift_up(self._data, rows)
        self._data[-rows:] = False
        self.top += rows
        return taken


class Upsampling:
    """Rows of blended probabilities at a ``grid`` of k x k raster pixels -> the raster's rows (``height`` x
    ``width``), bilinearly, equal to up-sampling the whole blended raster at once (pixel centres aligned, k-fold).

    Rows come in order from the top; a full-resolution row needs the two grid rows around it, so each call keeps its
    last grid row as the next call's context and hands out the raster rows those rows fix: up to ``k * b - k // 2``
    after ``b`` grid rows, and the rest with the last call. ``grid`` 1: the rows as they come."""

    def __init__(self, grid: int, height: int, width: int) -> None:
        self.grid, self.height, self.width = grid, height, width
        self.received = 0  # grid rows so far
        self.done = 0  # raster rows handed out so far
        self.context: torch.Tensor | None = None

    def __call__(self, probs: torch.Tensor, last: bool) -> tuple[int, torch.Tensor]:
        """The next grid rows ``probs`` (C, n, w) -> ``(first raster row, probabilities (C, rows, width))``."""
        k, top = self.grid, self.done
        self.received += probs.shape[1]
        if k == 1:
            self.done = min(self.height, self.received)
            return top, probs[:, :self.done - top, :self.width]
        stack = probs if self.context is None else torch.cat([self.context, probs], 1)
        first = (self.received - stack.shape[1]) * k  # raster row of the stack's first up-sampled row
        full = F.interpolate(stack[None], scale_factor=k, mode="bilinear", align_corners=False)[0]
        self.done = self.height if last else min(self.height, k * self.received - k // 2)
        self.context = probs[:, -1:]
        return top, full[:, top - first:self.done - first, :self.width]


class PartialMap:
    """The rows of a map computed so far, kept with ``--resume`` in a folder beside the map (``.<map>.partial``):
    the classes (``NODATA`` where no pixel was valid) and the confidence as raw arrays the size of the map, flushed
    to disk after each band of rows, then ``progress.json`` (written atomically after them): the inputs' ``key``,
    the window rows done and the bands of raster rows finished. A killed map continues from its last finished band
    (``predict_raster`` recomputes the windows that still reach below it, without writing their rows); once every
    row is there the map is written from the arrays in the same bands, so the result equals an uninterrupted map's.
    A folder whose key differs (another model, raster, tiling, backend...) is started afresh."""

    def __init__(self, map_path: Path, key: str, height: int, width: int, confidence: bool) -> None:
        self.folder, self.key = map_path.with_name(f".{map_path.name}.partial"), key
        progress = self.folder / "progress.json"
        state = None
        if progress.exists():
            try:
                state = json.loads(progress.read_text())
            except (OSError, ValueError):
                state = None
            if state is not None and state.get("key") != key:
                log.warning("%s: the partial map there was made with other inputs; starting afresh", self.folder)
                state = None
        if state is None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
        self.windows_done: int = state["windows_done"] if state else 0  # window rows finished
        self.bands: list[tuple[int, int]] = [tuple(b) for b in state["bands"]] if state else []  # (top, rows)
        mode: Literal["r+", "w+"] = "r+" if state else "w+"
        self.classes = np.memmap(self.folder / "classes.u8", np.uint8, mode, shape=(height, width))
        self.confidence = (np.memmap(self.folder / "confidence.u8", np.uint8, mode, shape=(height, width))
                           if confidence else None)

    @property
    def rows_done(self) -> int:
        return sum(rows for _, rows in self.bands)

    def add(self, window_row: int, top: int, classes: np.ndarray, confidence: np.ndarray | None, valid: np.ndarray
            ) -> None:
        """Keep the finished raster rows ``top ..`` (of window row ``window_row``), durably."""
        rows = slice(top, top + classes.shape[0])
        self.classes[rows] = np.where(valid, classes, NODATA)
        self.classes.flush()
        if self.confidence is not None and confidence is not None:
            self.confidence[rows] = confidence
            self.confidence.flush()
        self.windows_done, self.bands = window_row + 1, [*self.bands, (top, classes.shape[0])]
        write_json(self.folder / "progress.json", {"key": self.key, "windows_done": self.windows_done,
                                                   "bands": self.bands})

    def write(self, out: MapRows, aoi: BaseGeometry | None, transform: rasterio.Affine) -> None:
        """Write the map from the kept rows, band by band as they were finished."""
        for top, rows in self.bands:
            classes = np.array(self.classes[top:top + rows])
            confidence = np.array(self.confidence[top:top + rows]) if self.confidence is not None else None
            _write_rows(out, top, classes, confidence, classes != NODATA, aoi, transform)

    def remove(self) -> None:
        del self.classes, self.confidence
        shutil.rmtree(self.folder, ignore_errors=True)


def read_aoi(aoi: str, raster: str | Path) -> BaseGeometry:
    """The area of interest ``aoi`` in ``raster``'s CRS: ``minx,miny,maxx,maxy`` (a box in the raster's CRS) or a
    polygon layer in any CRS (its polygons' union, reprojected)."""
    import shapely
    from shapely.geometry import box, mapping, shape

    parts = aoi.split(",")
    if len(parts) == 4:
        try:
            minx, miny, maxx, maxy = (float(v) for v in parts)
        except ValueError:
            pass
        else:
            if not (minx < maxx and miny < maxy):
                raise ValueError(f"--aoi {aoi}: give minx,miny,maxx,maxy with min < max")
            return box(minx, miny, maxx, maxy)
    import pyogrio.raw
    from rasterio.warp import transform_geom

    try:
        meta, _, geometry, _ = pyogrio.raw.read(aoi, read_geometry=True, columns=[])
    except Exception as e:  # noqa: BLE001 - pyogrio's errors name the file's problem
        raise ValueError(f"{aoi}: cannot read the area of interest ({e})") from e
    shapes = [g for g in shapely.from_wkb(geometry) if g is not None and g.area > 0]
    if not shapes:
        raise ValueError(f"{aoi}: no polygon in the area of interest")
    with rasterio.open(raster) as ds:
        crs = ds.crs
    union = shapely.union_all(shapes)
    if meta.get("crs") and crs is not None:
        union = shape(transform_geom(meta["crs"], crs, mapping(union)))
    elif meta.get("crs") != (crs.to_wkt() if crs else None) and (meta.get("crs") or crs):
        raise ValueError(f"{aoi}: the area of interest or the raster has no CRS: give a box in the raster's CRS")
    return union


def release_free_memory() -> None:
    """Hand the pages of freed memory back to the system (glibc's ``malloc_trim``; nothing elsewhere).

    Called after each band of rows. glibc keeps freed blocks in the heap of the thread that allocated them (the
    model's, the reader's, the writer's) and, once blocks of a few MB were freed, serves blocks up to 32 MiB from
    those heaps rather than mapping them: a map's temporaries of a band of rows (in proportion to the raster's
    width) then leave the heaps fragmented and resident: the peak memory of a 20k x 20k map was 1.16x a 10k x 10k
    map's before this and the other changes of BENCHMARKS 11's memory fix."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _glibc():  # -> ctypes.CDLL | None
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()


def predict_raster(predictor: Predictor, source: RasterSource, ref: SampleRef, writer: MapWriter,
                   tiling: Tiling = Tiling(), *, progress: bool = True, spill_bytes: int = SPILL_BYTES,
                   certainty_kind: str = "max", aoi: BaseGeometry | None = None, resume: str | None = None
                   ) -> MapResult:
    """Predict the class map of raster ``ref`` of ``source`` with ``predictor`` and write it with ``writer`` (see
    the module doc).

    ``tiling``: windows of ``tiling.tile`` model pixels (the model sees the raster at ``predictor.scale`` of its
    resolution); ``spill_bytes``: a band of sums larger than this is kept in a file beside the map (see
    ``RowBand``); ``certainty_kind``: what the confidence holds (``inference.certainty``: ``max`` probability,
    ``margin`` or ``entropy``); ``aoi``: an area of interest in the raster's CRS: only the windows touching it are
    computed, and pixels outside it are nodata; ``resume``: a key of the inputs (model, raster, options): rows are
    kept as they are finished (``PartialMap``), and a map killed before the end continues from its last finished
    band of rows when it is run again with the same key.

    Where ``1 / scale`` is a whole number k, windows are cut on the grid of the model's pixels (k x k raster
    pixels each) and blended there, and each finished band of rows is up-sampled to full resolution once
    (``Upsampling``); otherwise each window is resampled to full resolution and blended there. On the model's grid
    each window row's rows are read and reduced once (``_inputs_by_rows``; with an area of interest, window by
    window); the next ones are read while the model runs, and finished rows are written while the next band is
    computed.
    """
    if source.band_count(ref) != predictor.bands:
        raise ValueError(f"{ref.image}: {source.band_count(ref)} bands, but the model takes {predictor.bands} "
                         "bands")
    if predictor.dtype is not None and source.band_dtype(ref) != predictor.dtype:
        log.warning("%s: %s bands, but the model was trained on %s bands: they are scaled with the training "
                    "statistics (%s to %s), which may not suit them; check the map", ref.image, source.band_dtype(ref),
                    predictor.dtype, predictor.scaling.low[0], predictor.scaling.high[0])
    height, width = source.size(ref)
    grid = blend_grid(predictor.scale)  # raster pixels per side of a blended pixel
    side = tiling.tile if grid > 1 else max(1, round(tiling.tile / predictor.scale))  # window side, grid pixels
    stride = max(1, round(side * (1 - tiling.overlap)))
    grid_height, grid_width = -(-height // grid), -(-width // grid)
    rows, cols = window_starts(grid_height, side, stride), window_starts(grid_width, side, stride)
    georef = source.georef(ref)
    transform = rasterio.Affine(*georef.transform) if georef.transform else rasterio.Affine.identity()
    touches = _touching(aoi, transform, side * grid, grid, height, width)
    t0, forward = time.perf_counter(), 0.0
    classes = predictor.classes.num_classes
    band_height = min(side, grid_height)
    band_bytes = (classes + 1) * band_height * grid_width * 4
    spill = writer.map.parent if band_bytes > spill_bytes else None
    copies = 1 + bool(writer.cog) + bool(resume)  # the map, a COG's scratch copy, the rows kept to resume
    map_bytes = height * width * (2 if writer.confidence else 1) * copies  # uncompressed
    check_space(writer.map.parent, map_bytes + (band_bytes if spill else 0), f"the map of {ref.image} ({height} x "
                f"{width} pixels, uncompressed, with its scratch files)", "map to another --out, or a smaller raster")
    writer.map.parent.mkdir(parents=True, exist_ok=True)
    partial = PartialMap(writer.map, resume, height, width, writer.confidence is not None) if resume else None
    start = partial.windows_done if partial else 0
    # a resumed map recomputes, without writing them, the window rows that reach below its last finished band
    replay = next((j for j in range(start) if rows[j] + side >= rows[start]), start) if start < len(rows) else start
    band, valid = RowBand(classes, band_height, grid_width, spill), ValidRows(min(grid * (side + 1), height), width)
    upsample = Upsampling(grid, height, width)
    if replay:  # the state of an uninterrupted map at window row ``replay``, but for rows that are not written
        band.top = upsample.received = rows[replay]
        upsample.done = valid.top = grid * rows[replay] - grid // 2
        upsample.context = torch.zeros(classes, 1, grid_width)
    weight_rows, weight_cols = hann(band_height), hann(min(side, grid_width))
    bar = tqdm(total=height * width, initial=(partial.rows_done if partial else 0) * width, unit="pix",
               unit_scale=True, desc=f"map {ref.id}", disable=not progress, leave=False)

    batches = [(i, batch) for i, row in enumerate(rows) if i >= replay
               for batch in _batches([(row, col) for col in cols if touches(row * grid, col * grid)],
                                     tiling.batch_size)]
    shape = WindowGrid(grid, side, height, width)
    by_rows = aoi is None and abs(grid * predictor.scale - 1) < 1e-9  # windows on the model's grid, all of them
    files = 1 + (writer.confidence is not None)
    cache = max(GDAL_CACHE_BYTES, CACHED_BLOCK_ROWS * MAP_BLOCK * width * files)  # more would only hold finished rows
    with rasterio.Env(GDAL_CACHEMAX=cache), writer.open(height, width, georef) as out, \
            ThreadPoolExecutor(1, thread_name_prefix="pointseg-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="pointseg-write") as writing:
        inputs = (_inputs_by_rows(predictor, source, ref, shape, rows, batches, reader) if by_rows else
                  _inputs_by_window(predictor, source, ref, shape, batches, reader))
        written: Future | None = None
        try:
            pending = next(inputs, None)
            for i, row in enumerate(rows):
                if i < replay:
                    continue
                while pending is not None and pending[0] == i:
                    _, batch, sizes, images, validity = pending
                    probabilities, seconds = predictor.input_probabilities(images, sizes)
                    forward += seconds
                    for (r, c), probs in zip(batch, probabilities, strict=True):
                        h, w = probs.shape[1:]
                        band.add(probs, weight_rows[:h, None] * weight_cols[None, :w], r, c)
                    for raster_row, raster_col, pixels_valid in validity:
                        valid.add(pixels_valid, raster_row, raster_col)
                    band.release()
                    pending = next(inputs, None)
                finished = (rows[i + 1] if i + 1 < len(rows) else grid_height) - row
                top, map_classes, confidence = _finish(band, upsample, finished, i + 1 == len(rows),
                                                       certainty_kind if writer.confidence else None)
                valid_rows = valid.take(map_classes.shape[0])
                if i < start:
                    continue  # finished before the map was resumed
                if written is not None:
                    written.result()  # in order, one band at a time
                if partial is not None:
                    written = writing.submit(partial.add, i, top, map_classes, confidence, valid_rows)
                else:
                    written = writing.submit(_write_rows, out, top, map_classes, confidence, valid_rows, aoi,
                                             transform)
                release_free_memory()
                bar.update(map_classes.shape[0] * width)
                bar.set_postfix(mpix_s=f"{(upsample.done * width / 1e6) / (time.perf_counter() - t0):.2f}")
            if written is not None:
                written.result()
            if partial is not None:
                partial.write(out, aoi, transform)
        finally:
            band.close()
            inputs.close()
    if partial is not None:
        partial.remove()
    bar.close()
    result = MapResult(writer.map, writer.confidence, tuple(source.bands[ref.image]), height, width,
                       time.perf_counter() - t0, forward, sum(len(b) for _, b in batches))
    log.info("%s: %d x %d pixels, %d windows in %.1f s (%.2f MPix/s), of which the model %.1f s", ref.image, height,
             width, result.windows, result.seconds, result.megapixels_per_s, forward)
    return result


ROWS_AT_ONCE = 8  # grid rows up-sampled at a time (bounds the full-resolution probabilities held at once)
READ_COLUMNS = 2048  # raster columns read and reduced at a time (rounded down to a multiple of the grid)


def _finish(band: RowBand, upsample: Upsampling, rows: int, last: bool, certainty_kind: str | None
            ) -> tuple[int, np.ndarray, np.ndarray | None]:
    """The first ``rows`` rows of ``band`` are final: their raster rows (first row, classes, confidence in percent;
    None without a ``certainty_kind``: no confidence is written) that ``upsample`` can hand out now; the band then
    moves down by them."""
    top = upsample.done
    most = min(upsample.height - top, (rows + 1) * upsample.grid)  # raster rows this can hand out at most
    classes = np.empty((most, upsample.width), np.uint8)
    confidence = np.empty((most, upsample.width), np.uint8) if certainty_kind else None
    for start in range(0, rows, ROWS_AT_ONCE):
        n = min(ROWS_AT_ONCE, rows - start)
        first, probs = upsample(band.probabilities(start, n), last and start + n == rows)
        fixed = slice(first - top, first - top + probs.shape[1])
        classes[fixed] = top_class(probs).numpy()
        if certainty_kind and confidence is not None:
            confidence[fixed] = (certainty(probs, certainty_kind) * 100).round().numpy()
        del probs  # before the next piece's are made
    done = upsample.done - top
    band.advance(rows)
    return top, classes[:done], confidence[:done] if confidence is not None else None


def map_raster(predictor: Predictor, raster: str | Path, writer: MapWriter, tiling: Tiling = Tiling(),
               certainty_kind: str = "max", aoi: str | None = None, resume: str | None = None) -> MapResult:
    """The map of one raster file (see ``predict_raster``; ``aoi``: as ``read_aoi`` takes it; ``resume``: a key of
    the model, which the raster's path, size and time, the tiling, the area of interest and the predictor's backend
    and precision complete)."""
    source = predictor.raster_source((raster,))
    area = read_aoi(aoi, raster) if aoi else None
    if resume is not None:
        stat = Path(raster).stat()
        resume = json.dumps({"model": resume, "raster": str(Path(raster).resolve()), "bytes": stat.st_size,
                             "mtime_ns": stat.st_mtime_ns, "tiling": dataclasses.astuple(tiling), "aoi": aoi,
                             "certainty": certainty_kind, "backend": predictor.backend,
                             "precision": predictor.precision, "flips": predictor.flips, "head": predictor.head,
                             "confidence": bool(writer.confidence)})
    return predict_raster(predictor, source, source.refs[0], writer, tiling, certainty_kind=certainty_kind,
                          aoi=area, resume=resume)


@dataclass(frozen=True)
class WindowGrid:
    """Windows of ``side`` pixels of a ``grid`` (``grid`` x ``grid`` raster pixels each) over a raster ``height``
    x ``width``."""

    grid: int
    side: int
    height: int
    width: int

    def full(self, row: int, col: int) -> tuple[int, int, int, int]:
        """The raster pixels ``(row, col, height, width)`` of the window at grid ``row``, ``col`` (clipped)."""
        top, left = row * self.grid, col * self.grid
        return (top, left, min(self.side * self.grid, self.height - top),
                min(self.side * self.grid, self.width - left))


Validity = list[tuple[int, int, np.ndarray]]  # (raster row, raster column, validity) of pixels a batch brings
Sizes = list[tuple[int, int]] | None  # the sizes the windows' probabilities are blended at (None: the inputs')
Inputs = Generator[tuple[int, list[tuple[int, int]], Sizes, list[torch.Tensor], Validity], None, None]


def _inputs_by_window(predictor: Predictor, source: RasterSource, ref: SampleRef, shape: WindowGrid,
                      batches: list[tuple[int, list[tuple[int, int]]]], reader: ThreadPoolExecutor) -> Inputs:
    """``(window row, batch, sizes, model inputs, validity)`` of each batch, each window read and reduced on its
    own (the validity: each window's); the next batch is read while the caller works on this one."""

    def read(batch: list[tuple[int, int]]) -> tuple[list[dict[str, np.ndarray]], list[torch.Tensor]]:
        windows = [source.read(ref, shape.full(r, c)) for r, c in batch]
        return windows, predictor.window_inputs(windows, shape.grid)

    ahead = reader.submit(read, batches[0][1]) if batches else None
    try:
        for j, (i, batch) in enumerate(batches):
            assert ahead is not None
            windows, images = ahead.result()
            ahead = reader.submit(read, batches[j + 1][1]) if j + 1 < len(batches) else None
            yield i, batch, window_sizes(windows, shape.grid), images, [
                (r * shape.grid, c * shape.grid, w["valid"]) for (r, c), w in zip(batch, windows, strict=True)]
    finally:
        if ahead is not None:
            ahead.cancel()


def _inputs_by_rows(predictor: Predictor, source: RasterSource, ref: SampleRef, shape: WindowGrid, rows: list[int],
                    batches: list[tuple[int, list[tuple[int, int]]]], reader: ThreadPoolExecutor) -> Inputs:
    """As ``_inputs_by_window`` for windows on the model's grid (``grid`` = 1 / scale) over the whole raster:
    each window row's rows are read across the whole width and reduced to the model's grid once (the rows it shares
    with the previous window row are kept), and its windows are cut from them: each raster pixel is read and
    reduced once instead of once per window over it (about four times at overlap 0.5), the same model inputs. The
    next window row's rows are read while the caller works on this one."""
    grid, side = shape.grid, shape.side
    grid_height, grid_width = -(-shape.height // grid), -(-shape.width // grid)
    by_row: dict[int, list[list[tuple[int, int]]]] = {}
    for i, batch in batches:
        by_row.setdefault(i, []).append(batch)
    order = sorted(by_row)
    spans, end = {}, rows[order[0]] if order else 0  # the grid rows each window row reads anew
    for i in order:
        spans[i] = (max(end, rows[i]), min(rows[i] + side, grid_height))
        end = max(end, spans[i][1])
    # reads after the first go to two buffers in turn (one filled while the rows of the other are used)
    most = max((spans[i][1] - spans[i][0] for i in order[1:]), default=0)
    buffers: list[tuple[np.ndarray | None, np.ndarray]] = [(None, np.empty((most * grid, shape.width), bool))
                                                           for _ in range(2)]

    def read(first: int, stop: int, slot: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Grid rows ``[first, stop)``: the model's pixels ``(n, grid width, B)`` (raw values, reduced; scaled per
        window, so the rows held stay in the raster's dtype) and the raster's validity, in buffer ``slot`` (None:
        new arrays)."""
        n, top = max(0, stop - first), first * grid
        rows = max(0, min(n * grid, shape.height - top))
        pixels, valid = buffers[slot] if slot is not None else (None, np.empty((rows, shape.width), bool))
        step = max(grid, READ_COLUMNS // grid * grid)  # pieces on the grid join exactly
        for left in range(0, shape.width if rows else 0, step):  # in pieces: a read's own arrays stay small
            window = source.read(ref, (top, left, rows, min(step, shape.width - left)))
            reduced = model_pixels(window, predictor.scaling, predictor.scale, predictor.mode, grid)
            if pixels is None:  # in the dtype the reduction gives
                pixels = np.empty((n if slot is None else most, grid_width, predictor.bands), reduced.dtype)
                if slot is not None:
                    buffers[slot] = (pixels, valid)
            pixels[:n, left // grid:left // grid + reduced.shape[1]] = reduced
            valid[:rows, left:left + window["valid"].shape[1]] = window["valid"]
        if pixels is None:
            return np.zeros((0, grid_width, predictor.bands), np.uint8), valid[:0]
        return pixels[:n], valid[:rows]

    ahead = reader.submit(read, *spans[order[0]], None) if order else None
    images: np.ndarray | None = None  # the grid rows held, ``held`` of them from grid row ``top``, kept in place
    top = held = 0
    try:
        for n, i in enumerate(order):
            assert ahead is not None
            new_images, new_valid = ahead.result()
            ahead = reader.submit(read, *spans[order[n + 1]], n % 2) if n + 1 < len(order) else None
            if images is None:
                images = np.empty((min(side, grid_height), grid_width, predictor.bands), new_images.dtype)
            if rows[i] >= top + held:
                top, held = spans[i][0], 0
            else:
                drop = rows[i] - top
                shift_up(images, drop, held)
                top, held = rows[i], held - drop
            images[held:held + len(new_images)] = new_images
            held += len(new_images)
            fresh: Validity = [(spans[i][0] * grid, 0, new_valid)]  # the rows' validity, once
            for batch in by_row[i]:
                inputs = []
                for r, c in batch:
                    _, _, h, w = shape.full(r, c)
                    pixels = images[r - top:r - top + -(-h // grid), c:c + -(-w // grid)]
                    inputs.append(torch.from_numpy(predictor.scaling(pixels)))
                yield i, batch, None, inputs, fresh
                fresh = []
    finally:
        if ahead is not None:
            ahead.cancel()


def _touching(aoi: BaseGeometry | None, transform: rasterio.Affine, side: int, margin: int, height: int, width: int
              ) -> Callable[[int, int], bool]:
    """Whether the window of ``side`` raster pixels at (row, col), grown by ``margin`` pixels on every side,
    touches ``aoi`` (always, without one). The margin is one blended pixel: the up-sampling of a pixel inside the
    area reads its neighbours, whose windows are computed too, so the map inside equals the whole map's."""
    if aoi is None:
        return lambda row, col: True
    from shapely.geometry import box
    from shapely.prepared import prep

    prepared = prep(aoi)

    def touches(row: int, col: int) -> bool:
        top, left = max(0, row - margin), max(0, col - margin)
        bottom, right = min(row + side + margin, height), min(col + side + margin, width)
        xs, ys = zip(*(transform @ (c, r) for r, c in ((top, left), (bottom, right))), strict=True)
        return bool(prepared.intersects(box(min(xs), min(ys), max(xs), max(ys))))

    return touches


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _write_rows(out: MapRows, top: int, classes: np.ndarray, confidence: np.ndarray | None, valid: np.ndarray,
                aoi: BaseGeometry | None = None, transform: rasterio.Affine | None = None) -> None:
    if aoi is not None and transform is not None:  # pixels whose centre is outside the area of interest: nodata
        from rasterio.features import geometry_mask

        valid &= geometry_mask([aoi], out_shape=valid.shape, transform=transform @ rasterio.Affine.translation(0, top),
                               invert=True)
    out.write(top, classes, confidence, valid)
