"""Georeferenced rasters (GeoTIFF or any GDAL format) as a source, read window by window through rasterio.

A raster is never read whole: ``read(ref, window)`` reads the window's blocks. Samples hold ``image`` (h, w, B) in
the raster's own dtype (uint8, uint16, float...), ``valid`` (h, w) bool, False where GDAL's mask says no data
(a nodata value, an alpha band or a per-dataset mask, on any selected band), and, with a reference mask raster on
the same grid, ``mask`` (h, w) uint8 class indices (the mask's nodata and unlisted pixels of invalid images are
``ignore_index``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyproj
import rasterio
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window as RioWindow

from pointseg.data.classes import ClassTable
from pointseg.data.sources import GeoRef, SampleRef, Source, Window

METRES_PER_DEGREE = 111_320.0  # of latitude, and of longitude at the equator (WGS 84, rounded)


def open_raster(path: str | Path) -> rasterio.DatasetReader:
    """Open a raster for reading; an unreadable file is a ``ValueError`` naming it. A raster without
    georeferencing opens quietly: the commands that need a CRS say so themselves."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except (RasterioError, OSError) as e:
        raise ValueError(f"{path}: unreadable raster ({e})") from e


def select_bands(path: str | Path, count: int, alpha: int | None, bands: Sequence[int] | None) -> tuple[int, ...]:
    """The 1-based bands to read: ``bands`` if given (checked against ``count``), else every band but alpha."""
    if bands is None:
        return tuple(b for b in range(1, count + 1) if b != alpha)
    bad = [b for b in bands if not 1 <= b <= count]
    if bad or not bands:
        raise ValueError(f"{path}: bands {list(bands)} out of range; the raster has bands 1..{count}")
    return tuple(bands)


def alpha_band(dataset: rasterio.DatasetReader) -> int | None:
    """The 1-based index of the alpha band, if the raster has one."""
    interp = [ci.name for ci in dataset.colorinterp]
    return interp.index("alpha") + 1 if "alpha" in interp else None


def read_mask_raster(path: str | Path, classes: ClassTable, window: RioWindow | None = None,
                     out_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Class indices (uint8) of a reference mask raster's ``window`` (decimated to ``out_shape`` if given): its
    nodata is ``ignore_index``, and values must be whole numbers the class table lists (else a ``ValueError``
    naming the file)."""
    with open_raster(path) as ms:
        try:
            raw = ms.read(1, window=window, out_shape=out_shape, resampling=Resampling.nearest)
            labeled = ms.read_masks(1, window=window, out_shape=out_shape, resampling=Resampling.nearest) > 0
        except RasterioError as e:
            raise ValueError(f"{path}: unreadable raster ({e})") from e
    values = raw[labeled]
    bad = (values != np.round(values)) | (values < 0) | (values > 255)
    if bad.any():
        raise ValueError(f"{path}: mask values must be whole numbers in 0..255, e.g. {values[bad][:3].tolist()}")
    out = np.full(raw.shape, classes.ignore_index, dtype=np.uint8)
    out[labeled] = classes.decode(values.astype(np.uint8)[None], source=str(path))[0]
    return out


def same_grid(a: str | Path, b: str | Path) -> None:
    """Fail unless rasters ``a`` and ``b`` share size, transform and CRS."""
    with open_raster(a) as x, open_raster(b) as y:
        if (x.width, x.height, x.transform, x.crs) != (y.width, y.height, y.transform, y.crs):
            raise ValueError(f"{b}: on another grid than {a} ({y.width}x{y.height} {y.crs} vs {x.width}x{x.height} "
                             f"{x.crs}); reproject it onto the same grid first")


def thumbnail_shape(path: str | Path, max_side: int = 512) -> tuple[int, int]:
    """``(h, w)`` of a raster decimated to at most ``max_side`` pixels a side."""
    with open_raster(path) as ds:
        step = max(1, -(-max(ds.height, ds.width) // max_side))
        return max(1, ds.height // step), max(1, ds.width // step)


def read_thumbnail(path: str | Path, max_side: int = 512, bands: Sequence[int] | None = None) -> np.ndarray:
    """A decimated read of a raster, at most ``max_side`` pixels a side, ``(h, w, B)`` (nearest: class maps keep
    their values); never the whole raster in memory."""
    shape = thumbnail_shape(path, max_side)
    with open_raster(path) as ds:
        indexes = list(bands) if bands else list(range(1, ds.count + 1))
        return np.moveaxis(ds.read(indexes, out_shape=(len(indexes), *shape), resampling=Resampling.nearest), 0, -1)


def display_thumbnail(path: str | Path, bands: Sequence[int], max_side: int = 512) -> np.ndarray:
    """An ``(h, w, 3)`` uint8 picture of a raster: its first three ``bands`` (one: grey), each stretched between
    its 2nd and 98th percentile, no-data black."""
    pixels = read_thumbnail(path, max_side, list(bands)[:3]).astype(np.float64)
    with open_raster(path) as ds:
        valid = ds.read_masks(list(bands)[:3], out_shape=(len(list(bands)[:3]), *pixels.shape[:2]),
                              resampling=Resampling.nearest).min(0) > 0
    if pixels.shape[-1] < 3:
        pixels = np.repeat(pixels[..., :1], 3, axis=-1)
    if valid.any():
        low, high = np.percentile(pixels[valid], [2, 98], axis=0)
        pixels = (pixels - low) / np.maximum(high - low, 1e-9)
    return np.where(valid[..., None], np.clip(pixels, 0, 1) * 255, 0).astype(np.uint8)


TRUE_COLOUR_NAMES = (("red", "b04", "b4"), ("green", "b03", "b3"), ("blue", "b02", "b2"))  # band descriptions


def picture_bands(path: str | Path, bands: Sequence[int]) -> tuple[int, ...]:
    """Which of ``bands`` to show as red, green and blue: by GDAL's colour interpretation, else by band
    descriptions (``red``, Sentinel-2/Landsat 8 ``B04``...), else the first three."""
    with open_raster(path) as ds:
        interp = {ds.colorinterp[b - 1]: b for b in bands}
        names = {(ds.descriptions[b - 1] or "").strip().lower(): b for b in bands}
    rgb = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
    if all(c in interp for c in rgb):
        return tuple(interp[c] for c in rgb)
    by_name = [next((names[n] for n in options if n in names), None) for options in TRUE_COLOUR_NAMES]
    if all(b is not None for b in by_name):
        return tuple(b for b in by_name if b is not None)
    return tuple(bands[:3])


def ground_sample_distance(path: str | Path) -> float | None:
    """A raster's pixel size in metres (the larger side; the sides' lengths, so a rotated grid's too; geographic CRSs
    converted at the raster's centre latitude), ``None`` without a CRS."""
    with open_raster(path) as ds:
        if ds.crs is None:
            return None
        crs = pyproj.CRS.from_user_input(ds.crs.to_wkt())
        t = ds.transform
        width, height = math.hypot(t.a, t.d), math.hypot(t.b, t.e)
        if crs.is_geographic:
            latitude = (ds.bounds.bottom + ds.bounds.top) / 2
            return max(width * math.cos(math.radians(latitude)), height) * METRES_PER_DEGREE
        return max(width, height) * crs.axis_info[0].unit_conversion_factor


class RasterSource(Source):
    """One sample per raster file; ids are the file names without suffix.

    Args:
        paths: the rasters.
        classes: the class table (for rasters, ``values`` are the mask rasters' class values).
        bands: 1-based bands to read from every raster (default: all bands but an alpha band).
        masks: a reference mask raster per raster (or ``None`` entries), on the same grid.
    """

    cacheable = False  # windows are read from the file's own blocks; a decoded copy would be a whole raster

    def __init__(self, paths: Sequence[str | Path], classes: ClassTable, bands: Sequence[int] | None = None,
                 masks: Sequence[str | Path | None] | None = None) -> None:
        files = [Path(p) for p in paths]
        mask_files = [Path(m) if m else None for m in (masks or [None] * len(files))]
        if len(mask_files) != len(files):
            raise ValueError(f"{len(mask_files)} mask rasters for {len(files)} rasters: give one --mask per --raster")
        refs, self.bands, self.dtypes = [], {}, {}
        for path, mask in zip(files, mask_files, strict=True):
            with open_raster(path) as ds:
                self.bands[path] = select_bands(path, ds.count, alpha_band(ds), bands)
                self.dtypes[path] = str(np.result_type(*[ds.dtypes[b - 1] for b in self.bands[path]]))
            first = files[0]
            if (len(self.bands[path]), self.dtypes[path]) != (len(self.bands[first]), self.dtypes[first]):
                raise ValueError(f"{path}: {len(self.bands[path])} {self.dtypes[path]} bands, but {first} has "
                                 f"{len(self.bands[first])} {self.dtypes[first]} bands; one model takes one kind")
            if mask is not None:
                same_grid(path, mask)
            refs.append(SampleRef(path.stem, path, mask))
        super().__init__(refs, classes, f"rasters {', '.join(p.name for p in files[:3])}"
                                        + (f" and {len(files) - 3} more" if len(files) > 3 else ""))

    def band_count(self, ref: SampleRef) -> int:
        return len(self.bands[ref.image])

    def band_dtype(self, ref: SampleRef) -> str:
        return self.dtypes[ref.image]

    def band_numbers(self, ref: SampleRef) -> tuple[int, ...] | None:
        return tuple(self.bands[ref.image])

    def sample_keys(self, ref: SampleRef) -> tuple[str, ...]:
        return ("image", "valid", "mask") if ref.mask is not None else ("image", "valid")

    def size(self, ref: SampleRef) -> tuple[int, int]:
        with open_raster(ref.image) as ds:
            return ds.height, ds.width

    def georef(self, ref: SampleRef) -> GeoRef:
        with open_raster(ref.image) as ds:
            return GeoRef(ds.crs.to_wkt() if ds.crs else None, tuple(ds.transform)[:6], ds.nodata)

    def read(self, ref: SampleRef, window: Window | None = None) -> dict[str, np.ndarray]:
        bands = self.bands[ref.image]
        with open_raster(ref.image) as ds:
            win = self._window(ds, window)
            try:
                image = ds.read(bands, window=win)  # (B, h, w)
                valid = ds.read_masks(bands, window=win).min(0) > 0  # GDAL's mask: nodata, alpha, dataset mask
            except RasterioError as e:
                raise ValueError(f"{ref.image}: unreadable raster ({e})") from e
        sample = {"image": np.moveaxis(image, 0, -1), "valid": valid}
        if ref.mask is not None:
            sample["mask"] = self._read_mask(ref.mask, win)
        return sample

    def read_mask(self, ref: SampleRef, image_size: tuple[int, int] | None = None) -> np.ndarray:
        if ref.mask is None:
            raise ValueError(f"{ref.image}: this raster has no mask raster")
        return self._read_mask(ref.mask, None)

    def _read_mask(self, path: Path, window: RioWindow | None) -> np.ndarray:
        return read_mask_raster(path, self.classes, window)

    @staticmethod
    def _window(ds: rasterio.DatasetReader, window: Window | None) -> RioWindow | None:
        """A pointseg window clipped to the raster, as rasterio's ``Window``."""
        if window is None:
            return None
        row, col, height, width = window
        height, width = max(0, min(height, ds.height - row)), max(0, min(width, ds.width - col))
        return RioWindow(col, row, width, height)
