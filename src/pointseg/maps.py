"""Maps from rasters: tiled, blended inference over a whole raster, written as a GeoTIFF that QGIS opens in the
right place with the class colours and names.

Windows of ``tile`` model pixels overlap by ``overlap`` and reach every edge (the last window of a row or column is
aligned to the raster's edge, so any size works). Each window's class probabilities are weighted by a 2-D Hann
window and summed; a pixel's map class is the argmax of its weighted sum over its weight sum, so window borders leave
no seams. Sums are kept for one band of rows (one window high, the raster's width) and written as soon as no later
window reaches them; a wide band is kept in a file and only the pages in use are held in memory, so memory does not
grow with the raster's height or width. The model runs through a ``Predictor``; the GeoTIFFs are written by a
``MapWriter`` (``pointseg.mapwriter``).
"""

from __future__ import annotations

import logging
import mmap
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
import torch
from tqdm import tqdm

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

from pointseg.data.raster import RasterSource
from pointseg.data.sources import SampleRef
from pointseg.inference import certainty, top_class
from pointseg.io import check_space
from pointseg.mapwriter import MapRows, MapWriter
from pointseg.predictor import Predictor

log = logging.getLogger(__name__)

SPILL_BYTES = 256 * 2**20  # row bands larger than this are kept in a file (see RowBand)
BAND_BLOCK = 512  # columns per contiguous block of a band of sums
GDAL_CACHE_BYTES = 128 * 2**20  # GDAL's block cache while mapping (its default grows with the machine's RAM)


def window_starts(length: int, side: int, stride: int) -> list[int]:
    """Starts of ``side``-long windows every ``stride`` along ``length``, the last one aligned to the end."""
    if length <= side:
        return [0]
    starts = list(range(0, length - side, stride))
    return starts + [length - side]


def hann(side: int) -> np.ndarray:
    """A 1-D Hann window of ``side`` samples, positive everywhere (so a pixel seen by one window keeps its value)."""
    return (np.sin(np.pi * (np.arange(side) + 0.5) / side) ** 2).astype(np.float32)


@dataclass(frozen=True)
class Tiling:
    """How a raster is cut: windows of ``tile`` model pixels a side, neighbours overlapping by ``overlap`` (a share
    of the window), ``batch_size`` windows per forward pass."""

    tile: int = 512
    overlap: float = 0.5
    batch_size: int = 4

    def __post_init__(self) -> None:
        if self.tile < 1:
            raise ValueError(f"--tile must be at least 1, got {self.tile}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"--overlap must be in [0, 1), got {self.overlap}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")


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
    """Weighted probability sums for the rows ``[top, top + height)`` of a raster ``width`` wide.

    The band is stored in blocks of ``block`` columns, each block contiguous (class sums, weight sum, validity for
    all its rows), so a window touches the memory of the few blocks it overlaps and nothing beside them. With
    ``spill`` (a folder), the blocks live in a file there, mapped into memory, and the pages a step touched are
    handed back to the page cache after it (``release``): the process holds about one batch of windows, whatever
    the width, and the kernel may write the rest to disk. The file is unlinked at once, so nothing is left behind,
    even after a kill.
    """

    def __init__(self, classes: int, height: int, width: int, spill: str | Path | None = None,
                 block: int | None = None) -> None:
        self.top, self.width, self.block, self.classes, self._mmap = 0, width, block or BAND_BLOCK, classes, None
        shape = (-(-width // self.block), classes + 2, height, self.block)  # planes: sums, weight sum, validity
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

    def add(self, probs: np.ndarray, weight: np.ndarray, valid: np.ndarray, row: int, col: int) -> None:
        """Add one window's ``probs`` (C, h, w), weighted, at raster ``row``, ``col``."""
        r, (h, w), c = row - self.top, weight.shape, self.classes
        for b, inside, piece in self._pieces(col, w):
            data = self._data[b, :, r:r + h, inside]
            part = torch.from_numpy(weight[:, piece])
            torch.from_numpy(data[:c]).addcmul_(torch.from_numpy(probs[:, :, piece]), part)  # in place, threaded
            torch.from_numpy(data[c]).add_(part)
            np.maximum(data[c + 1], valid[:, piece], out=data[c + 1])

    def finish(self, rows: int, certainty_kind: str = "max") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Class, confidence (percent; ``certainty_kind`` as ``inference.certainty``, the max probability by default)
        and validity of the first ``rows`` rows; the band then moves down by them (block by block)."""
        classes = np.empty((rows, self.width), np.uint8)
        confidence, valid = np.empty_like(classes), np.empty((rows, self.width), bool)
        c = self.classes
        for b, inside, piece in self._pieces(0, self.width):
            data = self._data[b]
            probs = torch.from_numpy(data[:c, :rows, inside]) / torch.from_numpy(data[c, :rows, inside]).clamp(1e-12)
            classes[:, piece] = top_class(probs).numpy()
            confidence[:, piece] = (certainty(probs, certainty_kind) * 100).round().numpy()
            valid[:, piece] = data[c + 1, :rows, inside] > 0
            data[:, :-rows] = data[:, rows:]  # numpy copies overlapping slices safely
            data[:, -rows:] = 0
            self.release()
        self.top += rows
        return classes, confidence, valid

    def release(self) -> None:
        """Hand the pages touched so far back to the page cache (a spilled band only; its contents stay)."""
        if self._mmap is not None:
            self._mmap.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        if self._mmap is not None:
            del self._data
            self._mmap.close()
            self._mmap = None


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


def predict_raster(predictor: Predictor, source: RasterSource, ref: SampleRef, writer: MapWriter,
                   tiling: Tiling = Tiling(), *, progress: bool = True, spill_bytes: int = SPILL_BYTES,
                   certainty_kind: str = "max", aoi: BaseGeometry | None = None) -> MapResult:
    """Predict the class map of raster ``ref`` of ``source`` with ``predictor`` and write it with ``writer`` (see
    the module doc).

    ``tiling``: windows of ``tiling.tile`` model pixels (the model sees the raster at ``predictor.scale`` of its
    resolution); ``spill_bytes``: a band of sums larger than this is kept in a file beside the map (see
    ``RowBand``); ``certainty_kind``: what the confidence holds (``inference.certainty``: ``max`` probability,
    ``margin`` or ``entropy``); ``aoi``: an area of interest in the raster's CRS: only the windows touching it are
    computed, and pixels outside it are nodata.
    """
    if source.band_count(ref) != predictor.bands:
        raise ValueError(f"{ref.image}: {source.band_count(ref)} bands, but the model takes {predictor.bands} "
                         "bands")
    if predictor.dtype is not None and source.band_dtype(ref) != predictor.dtype:
        log.warning("%s: %s bands, but the model was trained on %s bands: they are scaled with the training "
                    "statistics (%s to %s), which may not suit them; check the map", ref.image, source.band_dtype(ref),
                    predictor.dtype, predictor.scaling.low[0], predictor.scaling.high[0])
    height, width = source.size(ref)
    side = max(1, round(tiling.tile / predictor.scale))  # window side at full resolution
    stride = max(1, round(side * (1 - tiling.overlap)))
    rows, cols = window_starts(height, side, stride), window_starts(width, side, stride)
    georef = source.georef(ref)
    transform = rasterio.Affine(*georef.transform) if georef.transform else rasterio.Affine.identity()
    touches = _touching(aoi, transform, side, height, width)
    t0, forward, computed = time.perf_counter(), 0.0, 0
    classes = predictor.classes.num_classes
    band_bytes = (classes + 2) * min(side, height) * width * 4
    spill = writer.map.parent if band_bytes > spill_bytes else None
    map_bytes = height * width * (2 if writer.confidence else 1) * (2 if writer.cog else 1)  # uncompressed
    check_space(writer.map.parent, map_bytes + (band_bytes if spill else 0), f"the map of {ref.image} ({height} x "
                f"{width} pixels, uncompressed, with its scratch files)", "map to another --out, or a smaller raster")
    writer.map.parent.mkdir(parents=True, exist_ok=True)
    band = RowBand(classes, min(side, height), width, spill)
    weight_rows, weight_cols = hann(min(side, height)), hann(min(side, width))
    bar = tqdm(total=height * width, unit="pix", unit_scale=True, desc=f"map {ref.id}", disable=not progress,
               leave=False)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), writer.open(height, width, source.georef(ref)) as out:
        try:
            for i, row in enumerate(rows):
                for batch in _batches([(row, col) for col in cols if touches(row, col)], tiling.batch_size):
                    computed += len(batch)
                    windows = [source.read(ref, (row, col, side, side)) for row, col in batch]
                    probabilities, seconds = predictor.window_probabilities(windows)
                    forward += seconds
                    for (r, c), window, probs in zip(batch, windows, probabilities, strict=True):
                        h, w = window["valid"].shape
                        band.add(probs, weight_rows[:h, None] * weight_cols[None, :w], window["valid"], r, c)
                    band.release()
                done = (rows[i + 1] if i + 1 < len(rows) else height) - row
                _write_rows(out, band, done, certainty_kind, aoi, transform)
                bar.update(done * width)
                bar.set_postfix(mpix_s=f"{(band.top * width / 1e6) / (time.perf_counter() - t0):.2f}")
        finally:
            band.close()
    bar.close()
    result = MapResult(writer.map, writer.confidence, tuple(source.bands[ref.image]), height, width,
                       time.perf_counter() - t0, forward, computed)
    log.info("%s: %d x %d pixels, %d windows in %.1f s (%.2f MPix/s), of which the model %.1f s", ref.image, height,
             width, result.windows, result.seconds, result.megapixels_per_s, forward)
    return result


def map_raster(predictor: Predictor, raster: str | Path, writer: MapWriter, tiling: Tiling = Tiling(),
               certainty_kind: str = "max", aoi: str | None = None) -> MapResult:
    """The map of one raster file (see ``predict_raster``; ``aoi``: as ``read_aoi`` takes it)."""
    source = predictor.raster_source((raster,))
    area = read_aoi(aoi, raster) if aoi else None
    return predict_raster(predictor, source, source.refs[0], writer, tiling, certainty_kind=certainty_kind,
                          aoi=area)


def _touching(aoi: BaseGeometry | None, transform: rasterio.Affine, side: int, height: int, width: int
              ) -> Callable[[int, int], bool]:
    """Whether the window of ``side`` pixels at (row, col) touches ``aoi`` (always, without one)."""
    if aoi is None:
        return lambda row, col: True
    from shapely.geometry import box
    from shapely.prepared import prep

    prepared = prep(aoi)

    def touches(row: int, col: int) -> bool:
        bottom, right = min(row + side, height), min(col + side, width)
        xs, ys = zip(*(transform @ (c, r) for r, c in ((row, col), (bottom, right))), strict=True)
        return bool(prepared.intersects(box(min(xs), min(ys), max(xs), max(ys))))

    return touches


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _write_rows(out: MapRows, band: RowBand, rows: int, certainty_kind: str = "max",
                aoi: BaseGeometry | None = None, transform: rasterio.Affine | None = None) -> None:
    top = band.top
    classes, confidence, valid = band.finish(rows, certainty_kind)
    if aoi is not None and transform is not None:  # pixels whose centre is outside the area of interest: nodata
        from rasterio.features import geometry_mask

        valid &= geometry_mask([aoi], out_shape=valid.shape, transform=transform @ rasterio.Affine.translation(0, top),
                               invert=True)
    out.write(top, classes, confidence, valid)
