"""The map writer: class maps (and their confidence) as GeoTIFFs that QGIS opens in the right place with the class
colours and names.

The map is a tiled, compressed single-band uint8 GeoTIFF on the input's grid (CRS, transform, size), nodata 255
where the input has none, with an embedded colour table, class names in a ``.aux.xml`` beside it (GDAL's category
names) and a ``.qml`` style that QGIS loads with the layer. Rows are written as they are finished, under a
temporary name; the file is closed, read back and only then renamed into place, so an interrupted or failed write
(a full disk, a file size limit) never leaves a map under its final name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window as RioWindow

from pointseg.data.classes import ClassTable
from pointseg.data.sources import GeoRef
from pointseg.io import atomic_path, remove_temporaries, write_text

NODATA = 255  # map value of pixels without input data
CONFIDENCE_NODATA = 255  # confidence is stored in percent, 0..100
COG_BLOCK = 512  # tile side of Cloud-Optimised GeoTIFFs
SIEVE_MARGIN = 64  # rows of context a sieve sees at least above and below the rows it writes
BLOCK = 256  # tile side of the maps as written


@dataclass(frozen=True)
class MapWriter:
    """Where and how a map is written: the class map ``map``, optionally its ``confidence`` (percent), with the
    colours and names of ``classes``; ``cog``: Cloud-Optimised GeoTIFFs with overviews (the map's by the mode of
    its classes, the confidence's by the mean)."""

    map: Path
    classes: ClassTable
    confidence: Path | None = None
    cog: bool = False
    sieve: int = 0  # minimum mapping unit: regions of fewer pixels take their surrounding class (0: none)

    @contextmanager
    def open(self, height: int, width: int, georef: GeoRef) -> Iterator[MapRows]:
        """The GeoTIFFs open for writing under temporary names; when the block succeeds each is closed, checked and
        renamed into place, and the class names (``.aux.xml``) and QGIS style (``.qml``) are written beside the
        map."""
        for path in (self.map, self.confidence):
            if path is not None:
                remove_temporaries(path)  # of an earlier, killed write (COG scratch too)
        transform = rasterio.Affine(*georef.transform) if georef.transform else rasterio.Affine.identity()
        profile = {"driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "uint8",
                   "nodata": NODATA, "crs": georef.crs, "transform": transform, "tiled": True, "blockxsize": BLOCK,
                   "blockysize": BLOCK, "compress": "deflate", "bigtiff": "IF_SAFER"}
        with ExitStack() as stack:  # closes (and checks) each dataset before renaming it
            dst = stack.enter_context(_geotiff(stack.enter_context(atomic_path(self.map)), self.map, profile,
                                               "mode" if self.cog else None))
            dst.write_colormap(1, colormap(self.classes))
            conf = None
            if self.confidence is not None:
                conf = stack.enter_context(_geotiff(stack.enter_context(atomic_path(self.confidence)),
                                                    self.confidence, {**profile, "nodata": CONFIDENCE_NODATA},
                                                    "average" if self.cog else None))
            rows = MapRows(dst, conf, self.sieve)
            yield rows
            rows.flush()
        write_text(self.map.with_name(self.map.name + ".aux.xml"), aux_xml(self.classes))
        write_text(self.map.with_suffix(".qml"), qml(self.classes))


class MapRows:
    """The open map (and confidence) datasets, written a band of rows at a time, in order from the top.

    With ``sieve`` (a minimum mapping unit of N pixels), class rows are held back until a margin of M = max(N, 64)
    rows below them is known: the held rows are sieved (``rasterio.features.sieve``, 4-connected, nodata left out)
    as predicted, with M rows above them as context, and written once M rows below them were sieved with them. A
    region of fewer than N pixels spans fewer than N rows, so every small region is seen whole by the sieve that
    writes it; a region cut by the margin spans more than N rows within it, so it is never taken for a small one.
    What can still differ from sieving the whole map: which neighbour a small region joins when a neighbour's size
    is only seen in part (GDAL merges it into its largest neighbour); the 64-row margin makes that rare (the tests
    find no difference)."""

    def __init__(self, map: rasterio.io.DatasetWriter, confidence: rasterio.io.DatasetWriter | None,
                 sieve: int = 0) -> None:
        self.map, self.confidence, self.sieve = map, confidence, sieve
        self.margin = max(sieve, SIEVE_MARGIN)  # rows of context above and below the rows a sieve writes
        self.held: tuple[int, np.ndarray, np.ndarray] | None = None  # top row, classes and validity held back
        self.written = 0  # class rows written so far

    def write(self, top: int, classes: np.ndarray, confidence: np.ndarray | None, valid: np.ndarray) -> None:
        """Rows ``top ..`` of the map: ``classes`` where ``valid``, nodata elsewhere (and their ``confidence``, when
        the map has one)."""
        window = RioWindow(0, top, classes.shape[1], classes.shape[0])
        if self.confidence is not None:
            if confidence is None:
                raise ValueError("this map is written with its confidence: the rows' confidence is needed")
            self.confidence.write(np.where(valid, confidence, CONFIDENCE_NODATA)[None], window=window)
        if not self.sieve:
            self.map.write(np.where(valid, classes, NODATA)[None], window=window)
            return
        if self.held is not None:
            classes, valid = np.concatenate([self.held[1], classes]), np.concatenate([self.held[2], valid])
            top = self.held[0]
        self.held = (top, classes, valid)
        self._sieve_and_write(final=False)

    def flush(self) -> None:
        """Write the class rows still held back (the map's last rows)."""
        if self.sieve and self.held is not None:
            self._sieve_and_write(final=True)
            self.held = None

    def _sieve_and_write(self, final: bool) -> None:
        from rasterio.features import sieve

        assert self.held is not None
        top, classes, valid = self.held  # as predicted: the held rows are sieved again with more context
        bottom = top + classes.shape[0] if final else max(self.written, top + classes.shape[0] - self.margin)
        if bottom > self.written:
            sieved = sieve(classes, self.sieve, mask=valid, connectivity=4) if valid.any() else classes
            rows = slice(self.written - top, bottom - top)
            window = RioWindow(0, self.written, classes.shape[1], bottom - self.written)
            self.map.write(np.where(valid[rows], sieved[rows], NODATA)[None], window=window)
            self.written = bottom
        keep = max(0, self.written - self.margin - top)  # rows above the next band kept as context
        self.held = (top + keep, classes[keep:], valid[keep:])


def check_written(path: Path, final: Path) -> None:
    """Read a closed GeoTIFF's first and last blocks back: a write that failed on close (a full disk, a file size
    limit) leaves a file GDAL cannot read, which must not be renamed into place (to ``final``)."""
    try:
        with rasterio.open(path) as ds:
            for row, col in ((0, 0), (ds.height - 1, ds.width - 1)):
                top, left = row - row % BLOCK, col - col % BLOCK
                ds.read(1, window=RioWindow(left, top, min(BLOCK, ds.width - left), min(BLOCK, ds.height - top)))
    except rasterio.errors.RasterioError as e:
        raise OSError(f"{final}: could not be written completely (the file GDAL wrote is unreadable); is the disk full "
                      "or a file size limit reached? Nothing was left in its place") from e


@contextmanager
def _geotiff(path: Path, final: Path, profile: dict, cog_resampling: str | None = None
             ) -> Iterator[rasterio.io.DatasetWriter]:
    """A GeoTIFF open for writing at ``path``. With ``cog_resampling`` it is written to a scratch file beside
    ``path`` and, on success, copied to ``path`` as a Cloud-Optimised GeoTIFF whose overviews are resampled so
    (GDAL's COG driver: tiles and overviews in the order HTTP range readers expect)."""
    if not cog_resampling:
        with rasterio.open(path, "w", **profile) as dst:
            yield dst
        check_written(path, final)
        return
    scratch = path.with_name(path.name + ".strips.tif")
    try:
        with rasterio.open(scratch, "w", **profile) as dst:
            yield dst
        rasterio.shutil.copy(scratch, path, driver="COG", compress="deflate", blocksize=COG_BLOCK,
                             overview_resampling=cog_resampling, bigtiff="IF_SAFER")
        check_written(path, final)
    finally:
        scratch.unlink(missing_ok=True)


POLYGON_CHUNK = 10000  # polygons written to the GeoPackage at a time


def write_polygons(map_path: Path, out: Path, classes: ClassTable) -> int:
    """The map's regions as polygons in a GeoPackage in the map's CRS (one layer, named after the map): fields
    ``class`` (value), ``name`` and ``area`` (CRS units squared); nodata left out. GDAL's polygonizer reads the map
    a row at a time and joins the pieces of a region across rows itself (so no region is cut at a band edge); the
    polygons are collected in memory (their size, not the raster's) and written in chunks. The number written."""
    import pyogrio.raw
    import shapely
    from rasterio.features import shapes

    names = list(classes.names)
    written = 0
    with rasterio.open(map_path) as ds, atomic_path(out) as tmp:
        tmp.unlink()
        crs = ds.crs.to_wkt() if ds.crs else None

        def flush(chunk: list[tuple[dict, int]]) -> None:
            geometry = shapely.from_geojson([json.dumps(g) for g, _ in chunk]) if chunk else []
            values = np.array([v for _, v in chunk], dtype=np.int32)
            pyogrio.raw.write(tmp, geometry=np.array(shapely.to_wkb(geometry), dtype=object),
                              field_data=[values, np.array([names[v] for v in values], dtype=object),
                                          shapely.area(geometry)],
                              fields=["class", "name", "area"], crs=crs, geometry_type="Polygon", driver="GPKG",
                              layer=map_path.stem, append=tmp.exists())

        chunk: list[tuple[dict, int]] = []
        for geometry, value in shapes(rasterio.band(ds, 1), connectivity=4, transform=ds.transform):
            if int(value) == NODATA:
                continue
            chunk.append((geometry, int(value)))
            if len(chunk) == POLYGON_CHUNK:
                flush(chunk)
                written, chunk = written + len(chunk), []
        if chunk or not written:
            flush(chunk)
            written += len(chunk)
    return written


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
