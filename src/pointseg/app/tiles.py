"""Tiles of a raster in its own pixel grid (no basemap offline, so no reprojection): zoom ``z`` of ``levels``
shows ``TILE * 2 ** (levels - z)`` raster pixels a side per tile, so the deepest zoom is the raster's own pixels.

Imagery is read by window with rio-tiler (decimated reads use the raster's overviews where it has them), shown in
true colour (``data.raster.picture_bands``: colour interpretation or band names) with each band stretched between
its 2nd and 98th percentile of a decimated read; pixels without data are transparent. Class maps are drawn in the
palette's colours from a function that gives the classes of a window.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from rio_tiler.io import Reader

from pointseg.app.project import lower_priority, rgb
from pointseg.data.raster import open_raster, picture_bands, read_thumbnail

TILE = 256
Window = tuple[int, int, int, int]  # top, left, height, width in raster pixels


def zoom_levels(height: int, width: int) -> int:
    """The deepest zoom: at zoom 0 one tile holds the whole raster."""
    return max(0, math.ceil(math.log2(max(height, width) / TILE)))


def tile_window(z: int, x: int, y: int, size: tuple[int, int]) -> tuple[Window, int]:
    """The raster window of tile ``(z, x, y)`` (clipped to the raster) and the pixels a tile pixel spans.

    Raises:
        ValueError: for a tile outside the raster or a zoom beyond its levels.
    """
    levels = zoom_levels(*size)
    if not 0 <= z <= levels:
        raise ValueError(f"zoom {z} is outside 0..{levels}")
    span = 2 ** (levels - z)
    top, left = y * TILE * span, x * TILE * span
    if x < 0 or y < 0 or top >= size[0] or left >= size[1]:
        raise ValueError(f"tile {z}/{x}/{y} is outside the raster")
    return (top, left, min(TILE * span, size[0] - top), min(TILE * span, size[1] - left)), span


def png(rgba: np.ndarray) -> bytes:
    """A ``(TILE, TILE, 4)`` uint8 array as PNG bytes."""
    out = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(out, format="PNG")
    return out.getvalue()


def padded(rgba: np.ndarray) -> np.ndarray:
    """``rgba`` (h, w, 4) on a transparent ``TILE x TILE`` tile (a tile at the raster's edge is partly empty)."""
    tile = np.zeros((TILE, TILE, 4), dtype=np.uint8)
    tile[: rgba.shape[0], : rgba.shape[1]] = rgba[:TILE, :TILE]
    return tile


SAMPLES = 4  # the stretch is computed on SAMPLES x SAMPLES windows of TILE pixels spread over the raster


def stretch_sample(raster: Path, bands: Sequence[int], size: tuple[int, int]) -> np.ndarray:
    """Pixels ``(N, B)`` of a grid of full-resolution windows spread over the raster (valid pixels only): a fast
    stand-in for a decimated read, which on a large raster without overviews reads every block."""
    from rasterio.windows import Window as RioWindow

    rows = np.linspace(0, max(size[0] - TILE, 0), SAMPLES).astype(int)
    cols = np.linspace(0, max(size[1] - TILE, 0), SAMPLES).astype(int)
    pixels = []
    with open_raster(raster) as ds:
        for top in sorted(set(rows)):
            for left in sorted(set(cols)):
                window = RioWindow(left, top, min(TILE, size[1]), min(TILE, size[0]))
                data = ds.read(list(bands), window=window)
                valid = ds.read_masks(list(bands), window=window).min(0) > 0
                pixels.append(data[:, valid].T)
    return np.concatenate(pixels).astype(np.float64)


OVERVIEW_LEVELS = 3  # images of fewer zoom levels (up to 2048 pixels a side) get no overviews
QUIET, WAIT = 1.0, 30.0  # overviews are built after QUIET seconds without an imagery tile (WAIT at most)


class ImageTiles:
    """True-colour tiles of ``raster``; with ``overviews`` (a VRT path in the project), reads move to a VRT of the
    raster with overviews built there (``build_overviews``), unless the raster has its own or is small."""

    def __init__(self, raster: str | Path, overviews: str | Path | None = None) -> None:
        self.raster = self.source = Path(raster)
        with open_raster(self.raster) as ds:
            self.size = (ds.height, ds.width)
            self.bands = picture_bands(self.raster, list(range(1, ds.count + 1)))[:3]
            self.crs = ds.crs.to_string() if ds.crs else None
            self.transform = tuple(ds.transform)[:6]
            self.has_overviews = bool(ds.overviews(1))
        sample = stretch_sample(self.raster, self.bands, self.size)
        if not len(sample):
            sample = read_thumbnail(self.raster, 1024, self.bands).astype(np.float64).reshape(-1, len(self.bands))
        self.low, self.high = np.percentile(sample, 2, axis=0), np.percentile(sample, 98, axis=0)
        self.vrt = Path(overviews) if overviews else None
        self.last_tile: float | None = None  # when the latest imagery tile was read (time.monotonic)
        if self.vrt is not None and self.vrt.exists() and self.vrt.with_suffix(".vrt.ovr").exists():
            self.source = self.vrt

    def build_overviews_later(self, quiet: float = QUIET, wait: float = WAIT) -> Path | None:
        """``build_overviews`` in a background thread of lower priority once the first view is served: after
        ``quiet`` seconds without a tile (``wait`` at most), so that building them, which reads the whole raster,
        does not slow the first view down."""
        lower_priority()
        started = time.monotonic()
        while time.monotonic() - started < wait:
            if self.last_tile is not None and time.monotonic() - self.last_tile >= quiet:
                break
            time.sleep(0.1)
        return self.build_overviews()

    def build_overviews(self) -> Path | None:
        """Overviews of the raster in the overview folder (a VRT that points at the raster and its ``.ovr``),
        built under temporary names and moved into place; tiles read from them as soon as they exist."""
        if self.has_overviews or self.vrt is None or self.source == self.vrt or self.levels < OVERVIEW_LEVELS:
            return None
        import rasterio
        import rasterio.shutil
        from rasterio.enums import Resampling

        self.vrt.parent.mkdir(parents=True, exist_ok=True)
        building = self.vrt.with_name(f".{self.vrt.stem}.building.vrt")
        rasterio.shutil.copy(self.raster, building, driver="VRT")
        factors = [2 ** i for i in range(1, self.levels + 1)]
        with rasterio.open(building, "r+") as ds:
            ds.build_overviews(factors, Resampling.average)
        Path(f"{building}.ovr").replace(f"{self.vrt}.ovr")
        building.replace(self.vrt)
        self.source = self.vrt
        return self.vrt

    @property
    def levels(self) -> int:
        return zoom_levels(*self.size)

    def tile(self, z: int, x: int, y: int) -> bytes:
        (top, left, height, width), span = tile_window(z, x, y, self.size)
        out = (max(1, round(height / span)), max(1, round(width / span)))
        with Reader(str(self.source)) as reader:
            image = reader.read(indexes=list(self.bands), window=((top, top + height), (left, left + width)),
                                height=out[0], width=out[1])
        data = image.data.astype(np.float64)  # (B, h, w)
        if data.shape[0] == 1:
            data = np.repeat(data, 3, axis=0)
        scale = np.maximum(self.high - self.low, np.finfo(np.float64).eps)
        rgb = np.clip((data - self.low[:, None, None]) / scale[:, None, None] * 255, 0, 255).astype(np.uint8)
        self.last_tile = time.monotonic()
        alpha = np.asarray(image.mask).astype(np.uint8).reshape(out)
        return png(padded(np.dstack([*rgb, np.where(alpha > 0, 255, 0).astype(np.uint8)])))


def lut_tile(values_of: Callable[[Window], np.ndarray | None], lut: np.ndarray, z: int, x: int, y: int,
             size: tuple[int, int]) -> bytes:
    """A tile of a layer of uint8 values drawn through ``lut`` (256 x RGBA); ``values_of(window)`` gives the
    window's values at full resolution, or ``None`` when there is no layer yet (a transparent tile)."""
    (top, left, height, width), span = tile_window(z, x, y, size)
    values = values_of((top, left, height, width))
    if values is None:
        return png(np.zeros((TILE, TILE, 4), dtype=np.uint8))
    return png(padded(lut[values[span // 2::span, span // 2::span] if span > 1 else values]))


def class_lut(colours: Sequence[str]) -> np.ndarray:
    """Class ``i`` in the palette's colour ``colours[i]`` (``#rrggbb``); 255 (no class) transparent."""
    lut = np.zeros((256, 4), dtype=np.uint8)
    for i, colour in enumerate(colours):
        lut[i] = [*rgb(colour), 255]
    return lut


def certainty_lut() -> np.ndarray:
    """Certainty 0-100 (percent) as a veil over the imagery: black where the map is unsure, fading to clear where
    it is sure (alpha 255 at 0 %, 0 at 100 %); 255 (no map) transparent."""
    lut = np.zeros((256, 4), dtype=np.uint8)
    lut[:101, 3] = np.round((100 - np.arange(101)) * 2.55).astype(np.uint8)
    return lut
