"""Maps from rasters: tiled, blended inference over a whole raster, written as a GeoTIFF that QGIS opens in the
right place with the class colours and names.

Windows of ``tile`` model pixels overlap by ``overlap`` and reach every edge (the last window of a row or column is
aligned to the raster's edge, so any size works). Each window's class probabilities are weighted by a 2-D Hann
window and summed; a pixel's map class is the argmax of its weighted sum over its weight sum, so window borders leave
no seams. Sums are kept for one band of rows (one window high, the raster's width) and written as soon as no later
window reaches them; a wide band is kept in a file and only the pages in use are held in memory, so memory does not
grow with the raster's height or width. The map is a tiled, compressed
single-band uint8 GeoTIFF on the input's grid (CRS, transform, size), nodata 255 where the input has none, with an
embedded colour table, class names in a ``.aux.xml`` beside it (GDAL's category names) and a ``.qml`` style that
QGIS loads with the layer. It is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import logging
import mmap
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import rasterio.shutil
import torch
import torch.nn.functional as F
from rasterio.windows import Window as RioWindow
from tqdm import tqdm

from pointseg.data.bands import BandScaling
from pointseg.data.classes import ClassTable
from pointseg.data.raster import RasterSource
from pointseg.data.sources import SampleRef
from pointseg.inference import predict_logits
from pointseg.io import atomic_path, write_text
from pointseg.labels import resize_image
from pointseg.suggest import certainty

log = logging.getLogger(__name__)

NODATA = 255  # map value of pixels without input data
CONFIDENCE_NODATA = 255  # confidence is stored in percent, 0..100
COG_BLOCK = 512  # tile side of Cloud-Optimised GeoTIFFs
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
        """Class, confidence (percent; ``certainty_kind`` as ``suggest.certainty``, the max probability by default)
        and validity of the first ``rows`` rows; the band then moves down by them (block by block)."""
        classes = np.empty((rows, self.width), np.uint8)
        confidence, valid = np.empty_like(classes), np.empty((rows, self.width), bool)
        c = self.classes
        for b, inside, piece in self._pieces(0, self.width):
            data = self._data[b]
            probs = torch.from_numpy(data[:c, :rows, inside]) / torch.from_numpy(data[c, :rows, inside]).clamp(1e-12)
            classes[:, piece] = probs.argmax(0).numpy()
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


def predict_raster(model: torch.nn.Module, source: RasterSource, ref: SampleRef, out: str | Path, *,
                   classes: ClassTable, scaling: BandScaling, scale: float = 1.0, mode: str = "area",
                   tile: int = 512, overlap: float = 0.5, batch_size: int = 4, amp: bool = False,
                   confidence: str | Path | None = None, cog: bool = False, progress: bool = True,
                   spill_bytes: int = SPILL_BYTES, flips: bool = False, certainty_kind: str = "max") -> MapResult:
    """Predict the class map of raster ``ref`` of ``source`` into the GeoTIFF ``out`` (see the module doc).

    ``tile``: window side in model pixels (the model sees the raster at ``scale`` of its resolution, resampled
    with ``mode``); ``overlap``: the share of a window its neighbour covers; ``confidence``: also write the
    max-softmax probability, in percent, to this GeoTIFF; ``cog``: write Cloud-Optimised GeoTIFFs with overviews
    (the map's by the mode of its classes, the confidence's by the mean); ``spill_bytes``: a band of sums larger
    than this is kept in a file beside ``out`` (see ``RowBand``); ``flips``: test-time augmentation, each window
    also predicted flipped (four forward passes, see ``inference.predict_logits``); ``certainty_kind``: what the
    confidence holds (``suggest.certainty``: ``max`` probability, ``margin`` or ``entropy``).
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if source.band_count(ref) != scaling.bands:
        raise ValueError(f"{ref.image}: {source.band_count(ref)} bands, but the model takes {scaling.bands} bands "
                         "(choose them with data.bands)")
    height, width = source.size(ref)
    side = max(1, round(tile / scale))  # window side at full resolution
    stride = max(1, round(side * (1 - overlap)))
    rows, cols = window_starts(height, side, stride), window_starts(width, side, stride)
    t0, forward, out = time.perf_counter(), 0.0, Path(out)
    band_bytes = (classes.num_classes + 2) * min(side, height) * width * 4
    out.parent.mkdir(parents=True, exist_ok=True)
    spill = out.parent if band_bytes > spill_bytes else None
    band = RowBand(classes.num_classes, min(side, height), width, spill)
    weight_rows, weight_cols = hann(min(side, height)), hann(min(side, width))
    bar = tqdm(total=height * width, unit="pix", unit_scale=True, desc=f"map {ref.id}", disable=not progress,
               leave=False)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), map_writer(source, ref, out, classes, confidence,
                                                                cog) as (dst, conf):
        try:
            for i, row in enumerate(rows):
                for batch in _batches([(row, col) for col in cols], batch_size):
                    windows = [source.read(ref, (row, col, side, side)) for row, col in batch]
                    probabilities, seconds = _probabilities(model, windows, scaling, scale, mode, amp, flips)
                    forward += seconds
                    for (r, c), window, probs in zip(batch, windows, probabilities, strict=True):
                        h, w = window["valid"].shape
                        band.add(probs, weight_rows[:h, None] * weight_cols[None, :w], window["valid"], r, c)
                    band.release()
                done = (rows[i + 1] if i + 1 < len(rows) else height) - row
                _write_rows(dst, conf, band, done, width, certainty_kind)
                bar.update(done * width)
                bar.set_postfix(mpix_s=f"{(band.top * width / 1e6) / (time.perf_counter() - t0):.2f}")
        finally:
            band.close()
    bar.close()
    result = MapResult(out, Path(confidence) if confidence else None, tuple(source.bands[ref.image]), height, width,
                       time.perf_counter() - t0, forward, len(rows) * len(cols))
    log.info("%s: %d x %d pixels, %d windows in %.1f s (%.2f MPix/s), of which the model %.1f s", ref.image, height,
             width, result.windows, result.seconds, result.megapixels_per_s, forward)
    return result


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@torch.no_grad()
def _probabilities(model: torch.nn.Module, windows: list[dict[str, np.ndarray]], scaling: BandScaling,
                   scale: float, mode: str, amp: bool, flips: bool = False) -> tuple[list[np.ndarray], float]:
    """Class probabilities (C, h, w) at full resolution of each window (invalid pixels read as the band's low),
    and the seconds the model itself took."""
    sizes = {w["valid"].shape for w in windows}
    images = []
    for window in windows:
        pixels = np.array(window["image"])
        pixels[~window["valid"]] = np.asarray(scaling.low).astype(pixels.dtype)
        h, w = pixels.shape[:2]
        pixels = resize_image(pixels, (max(1, round(h * scale)), max(1, round(w * scale))), mode)
        images.append(torch.from_numpy(scaling(pixels)))
    if len(sizes) == 1:  # one batch (the usual case: only rasters smaller than a window differ)
        logits, seconds = _timed_logits(model, torch.stack(images), amp, flips)
        return list(_at_size(logits.softmax(1), next(iter(sizes)))), seconds
    probs, total = [], 0.0
    for image, w in zip(images, windows, strict=True):
        logits, seconds = _timed_logits(model, image[None], amp, flips)
        probs.append(_at_size(logits.softmax(1), w["valid"].shape)[0])
        total += seconds
    return probs, total


def _timed_logits(model: torch.nn.Module, images: torch.Tensor, amp: bool, flips: bool = False
                  ) -> tuple[torch.Tensor, float]:
    """``predict_logits`` and its wall time (CUDA synchronised)."""
    device = next(model.parameters()).device
    t0 = time.perf_counter()
    logits = predict_logits(model, images, amp=amp, flips=flips)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return logits, time.perf_counter() - t0


def _at_size(probs: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Probabilities ``(N, C, h, w)`` at the model's resolution, bilinearly resampled to the raster's ``size``
    (softmax before resampling: a quarter of the work at ``scale`` 0.5, and still a distribution per pixel)."""
    if tuple(probs.shape[-2:]) != tuple(size):
        probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
    return probs.cpu().numpy()


def _write_rows(dst: rasterio.io.DatasetWriter, conf: rasterio.io.DatasetWriter | None, band: RowBand, rows: int,
                width: int, certainty_kind: str = "max") -> None:
    top = band.top
    classes, confidence, valid = band.finish(rows, certainty_kind)
    window = RioWindow(0, top, width, rows)
    dst.write(np.where(valid, classes, NODATA)[None], window=window)
    if conf is not None:
        conf.write(np.where(valid, confidence, CONFIDENCE_NODATA)[None], window=window)


@contextmanager
def map_writer(source: RasterSource, ref: SampleRef, out: Path, classes: ClassTable,
               confidence: str | Path | None = None, cog: bool = False
               ) -> Iterator[tuple[rasterio.io.DatasetWriter, rasterio.io.DatasetWriter | None]]:
    """The map (and confidence) GeoTIFFs open for writing under temporary names; when the block succeeds they are
    renamed into place and the class names (``.aux.xml``) and the QGIS style (``.qml``) are written beside the map."""
    height, width = source.size(ref)
    geo = source.georef(ref)
    transform = rasterio.Affine(*geo.transform) if geo.transform else rasterio.Affine.identity()
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "uint8", "nodata": NODATA,
               "crs": geo.crs, "transform": transform, "tiled": True, "blockxsize": 256,
               "blockysize": 256, "compress": "deflate", "bigtiff": "IF_SAFER"}
    with ExitStack() as stack:  # closes each dataset before renaming it
        dst = stack.enter_context(_geotiff(stack.enter_context(atomic_path(out)), profile, "mode" if cog else None))
        dst.write_colormap(1, colormap(classes))
        conf = None
        if confidence is not None:
            conf = stack.enter_context(_geotiff(stack.enter_context(atomic_path(confidence)),
                                                {**profile, "nodata": CONFIDENCE_NODATA},
                                                "average" if cog else None))
        yield dst, conf
    write_text(out.with_name(out.name + ".aux.xml"), aux_xml(classes))
    write_text(out.with_suffix(".qml"), qml(classes))


@contextmanager
def _geotiff(path: Path, profile: dict, cog_resampling: str | None = None
             ) -> Iterator[rasterio.io.DatasetWriter]:
    """A GeoTIFF open for writing at ``path``. With ``cog_resampling`` it is written to a scratch file beside
    ``path`` and, on success, copied to ``path`` as a Cloud-Optimised GeoTIFF whose overviews are resampled so
    (GDAL's COG driver: tiles and overviews in the order HTTP range readers expect)."""
    if not cog_resampling:
        with rasterio.open(path, "w", **profile) as dst:
            yield dst
        return
    scratch = path.with_name(path.name + ".strips.tif")
    try:
        with rasterio.open(scratch, "w", **profile) as dst:
            yield dst
        rasterio.shutil.copy(scratch, path, driver="COG", compress="deflate", blocksize=COG_BLOCK,
                             overview_resampling=cog_resampling, bigtiff="IF_SAFER")
    finally:
        scratch.unlink(missing_ok=True)


def colormap(classes: ClassTable) -> dict[int, tuple[int, int, int, int]]:
    """The map's colour table: each class's colour, nodata transparent."""
    table = {i: (*c, 255) for i, c in enumerate(classes.colors)}
    return {**table, NODATA: (0, 0, 0, 0)}


def aux_xml(classes: ClassTable) -> str:
    """GDAL's sidecar (PAM) for the map's band: the class names as category names (what GDAL itself writes for a
    GeoTIFF, which cannot hold them; the colour table is in the GeoTIFF)."""
    names = "".join(f"      <Category>{escape(n)}</Category>\n" for n in classes.names)
    return (f'<PAMDataset>\n  <PAMRasterBand band="1">\n    <CategoryNames>\n{names}    </CategoryNames>\n'
            f"  </PAMRasterBand>\n</PAMDataset>\n")


def map_class_names(map_path: str | Path) -> tuple[str, ...] | None:
    """The class names of a map, in the order of its values, from the ``.aux.xml`` written beside it (``None``
    without one)."""
    sidecar = Path(f"{map_path}.aux.xml")
    if not sidecar.exists():
        return None
    try:
        names = ElementTree.parse(sidecar).getroot().findall("./PAMRasterBand/CategoryNames/Category")
    except ElementTree.ParseError as e:
        raise ValueError(f"{sidecar}: unreadable ({e})") from e
    return tuple(n.text or "" for n in names) or None


def qml(classes: ClassTable) -> str:
    """A QGIS layer style: a paletted renderer with each class's colour and name (QGIS loads ``<map>.qml``)."""
    entries = "".join(f'        <paletteEntry value="{i}" color="#{r:02x}{g:02x}{b:02x}" alpha="255" '
                      f'label="{escape(n, {chr(34): "&quot;"})}"/>\n'
                      for i, (n, (r, g, b)) in enumerate(zip(classes.names, classes.colors, strict=True)))
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            '<qgis version="3.28" styleCategories="Symbology">\n  <pipe>\n'
            '    <rasterrenderer type="paletted" band="1" opacity="1" nodataColor="">\n'
            f"      <colorPalette>\n{entries}      </colorPalette>\n"
            "    </rasterrenderer>\n  </pipe>\n</qgis>\n")
