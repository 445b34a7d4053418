"""Real clicks: a point layer from a GIS (GeoPackage, Shapefile, GeoJSON, or CSV with x/y columns) onto rasters.

Each point is reprojected to every raster's CRS (pyproj) and placed on the pixel that holds it; it becomes a
``[row, col, class]`` entry of the point file under the raster's id, with its original map coordinates and feature
id kept beside it. Nothing is dropped silently: points with an empty geometry, an empty or unknown class, outside
every raster, on a raster's nodata, or on a pixel another point gives another class are counted, a few of each
listed with their coordinates (``ImportReport``), and left out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
import shapely
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from pointseg.data.classes import ClassTable, default_colors
from pointseg.data.points import PointSet
from pointseg.data.raster import RasterSource, open_raster

EXAMPLES = 5  # listed per kind of skipped point
PROBLEMS = {
    "empty_geometry": "have an empty or non-point geometry",
    "no_class": "have no class value",
    "unknown_class": "have a class not in the class table",
    "outside": "lie outside every raster",
    "nodata": "lie on a raster's nodata",
    "conflict": "share a pixel with a point of another class",
}


@dataclass
class PointLayer:
    """The points of a vector layer: map coordinates ``x``, ``y`` in ``crs``, feature ids and class values."""

    path: Path
    layer: str | None
    crs: CRS
    fids: np.ndarray
    x: np.ndarray
    y: np.ndarray
    values: np.ndarray  # object array: class names or integer ids as read (None where empty)
    empty: np.ndarray  # bool: no usable point geometry
    kinds: np.ndarray | None = None  # object array: the geometry type of each feature ("" where empty)


@dataclass
class ImportReport:
    """What became of every point: counts per outcome and a few examples of each skipped kind."""

    total: int
    crs: str  # of the coordinates in the examples: the layer's
    imported: int = 0
    merged: int = 0  # duplicates of a kept point (same pixel, same class)
    clicks: int = 0  # points placed, once per raster they lie on (``imported`` counts each point once)
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def skip(self, kind: str, layer: PointLayer, i: int, detail: str = "") -> None:
        self.skipped[kind] += 1
        if len(self.examples[kind]) >= EXAMPLES:
            return
        if layer.empty[i]:
            shape = layer.kinds[i] if layer.kinds is not None else ""
            self.examples[kind].append(f"fid {layer.fids[i]} ({f'a {shape}' if shape else 'an empty'} geometry)"
                                       f"{detail}")
        else:
            self.examples[kind].append(f"fid {layer.fids[i]} at ({layer.x[i]:.2f}, {layer.y[i]:.2f}){detail}")

    def summary(self) -> str:
        several = f"; {self.clicks} clicks, as points on several rasters count on each" if self.clicks > self.imported \
            else ""
        lines = [f"imported {self.imported} of {self.total} points" + several
                 + (f" ({self.merged} repeated clicks on a pixel merged)" if self.merged else "")]
        for kind, count in self.skipped.items():
            lines.append(f"left out {count} points that {PROBLEMS[kind]}, e.g. {'; '.join(self.examples[kind])}"
                         f" (coordinates in {self.crs})")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"total": self.total, "crs": self.crs, "imported": self.imported, "clicks": self.clicks,
                "merged": self.merged,
                "skipped": dict(self.skipped), "examples": dict(self.examples)}


def read_point_layer(path: str | Path, class_field: str, layer: str | None = None, crs: str | None = None,
                     x_field: str = "x", y_field: str = "y") -> PointLayer:
    """Read the points and class values of a vector layer (GDAL formats through pyogrio; CSV with ``x_field``
    and ``y_field`` columns and ``crs``). Errors name the file and what is wrong."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: vector layer not found")
    csv = path.suffix.lower() == ".csv"
    try:
        if layer is None and not csv:
            layers = [name for name, kind in pyogrio.list_layers(path) if kind is not None]
            if len(layers) > 1:
                raise ValueError(f"{path}: holds several layers {layers}; choose one with --layer")
            layer = layers[0] if layers else None
        options = {"X_POSSIBLE_NAMES": x_field, "Y_POSSIBLE_NAMES": y_field} if csv else {}
        meta, fids, wkb, values = pyogrio.raw.read(path, layer=layer, return_fids=True, **options)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as e:
        raise ValueError(f"{path}: unreadable vector layer ({e})") from e
    fields = list(meta["fields"])
    if csv and not {x_field, y_field} <= set(fields):
        raise ValueError(f"{path}: a CSV of points needs columns {x_field!r} and {y_field!r}; it has {fields}")
    if wkb is None:
        raise ValueError(f"{path}: the layer has no geometry (a table, not points); give a point layer")
    if class_field not in fields:
        raise ValueError(f"{path}: no field {class_field!r} for the classes; the layer has fields {fields}")
    layer_crs = crs or meta["crs"]
    if layer_crs is None:
        raise ValueError(f"{path}: the layer has no CRS" + ("; give the CRS of the x/y columns with --crs, e.g. "
                                                            "--crs EPSG:4326" if csv else "; assign one in QGIS"))
    try:
        parsed_crs = CRS.from_user_input(layer_crs)
    except CRSError as e:
        raise ValueError(f"{path}: unknown CRS {layer_crs!r} ({e})") from e
    geoms = shapely.from_wkb(wkb)
    kinds = np.array(["" if g is None or g.is_empty else g.geom_type for g in geoms], dtype=object)
    if len(geoms) and all(k not in ("Point", "") for k in kinds):
        raise ValueError(f"{path}: a {kinds[0]} layer, but clicks are points; convert it in QGIS (e.g. Vector > "
                         "Geometry Tools > Centroids) or give the point layer")
    empty = np.array([g is None or g.is_empty or g.geom_type != "Point" for g in geoms], dtype=bool)
    x = np.array([np.nan if e else g.x for g, e in zip(geoms, empty, strict=True)], dtype=np.float64)
    y = np.array([np.nan if e else g.y for g, e in zip(geoms, empty, strict=True)], dtype=np.float64)
    return PointLayer(path, layer, parsed_crs, np.asarray(fids), x, y,
                      np.asarray(values[fields.index(class_field)], dtype=object), empty, kinds)


def class_table_from_values(values: np.ndarray, palette: Sequence[tuple[int, int, int]] | None = None) -> ClassTable:
    """A class table of the distinct non-empty values of a class field (names sorted; numbers as numbers)."""
    present = {v for v in values.tolist() if not _empty(v)}
    if not present:
        raise ValueError("the class field holds no values")
    numeric = all(isinstance(v, int | np.integer) or (isinstance(v, float) and float(v).is_integer())
                  for v in present)
    names = [str(int(v)) for v in sorted(present)] if numeric else sorted(str(v) for v in present)
    return ClassTable(tuple(names), tuple(default_colors(len(names), palette)))


def _empty(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or (isinstance(value, str)
                                                                               and not value.strip())


def _number(text: str) -> float | None:
    """The number a text holds (``"3"``, ``" 3.0 "``), or ``None``."""
    try:
        return float(text.strip())
    except ValueError:
        return None


def class_indices(layer: PointLayer, classes: ClassTable) -> tuple[np.ndarray, np.ndarray]:
    """Per point its class index (-1 where none) and whether the value was empty: names match ``classes.names``,
    integer ids match the table's raw ``values`` (or the names of a table made from integer values)."""
    by_name = {n: i for i, n in enumerate(classes.names)}
    by_value = {v: i for i, v in enumerate(classes.values)} if classes.values is not None else {}
    index = np.full(len(layer.values), -1, dtype=np.int64)
    empty = np.zeros(len(layer.values), dtype=bool)
    for i, value in enumerate(layer.values.tolist()):
        if _empty(value):
            empty[i] = True
            continue
        if isinstance(value, str):  # a name, or a number stored as text (a CSV column, a text field)
            index[i] = by_name.get(value.strip(), -1)
            number = _number(value)
            if index[i] < 0 and number is not None:
                value = number
            else:
                continue
        if float(value).is_integer():
            index[i] = by_value.get(int(value), by_name.get(str(int(value)), -1))
    return index, empty


def import_points(layer: PointLayer, rasters: Sequence[str | Path], classes: ClassTable
                  ) -> tuple[PointSet, ImportReport]:
    """Place ``layer``'s points on ``rasters`` (pixel holding each reprojected point) as a point set."""
    source = RasterSource(rasters, classes)
    report = ImportReport(total=len(layer.fids), crs=layer.crs.to_string())
    cls, no_class = class_indices(layer, classes)
    usable = np.ones(len(cls), dtype=bool)
    for i in np.flatnonzero(layer.empty):
        report.skip("empty_geometry", layer, int(i))
    usable &= ~layer.empty
    for i in np.flatnonzero(usable & no_class):
        report.skip("no_class", layer, int(i))
    for i in np.flatnonzero(usable & ~no_class & (cls < 0)):
        report.skip("unknown_class", layer, int(i), f" (class {layer.values[i]!r}; valid: {list(classes.names)})")
    usable &= cls >= 0
    images: dict[str, np.ndarray] = {}
    sizes: dict[str, tuple[int, int]] = {}
    extra: dict[str, dict[str, list]] = {}
    inside_any = np.zeros(len(cls), dtype=bool)
    for ref in source.refs:
        rows, cols, inside, valid = _place(layer, ref.image, usable)
        inside_any |= inside
        for i in np.flatnonzero(inside & ~valid):
            report.skip("nodata", layer, int(i), f" (on {ref.image.name})")
        keep = np.flatnonzero(inside & valid)
        pixels: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i in keep:
            pixels[(int(rows[i]), int(cols[i]))].append(int(i))
        entries = []
        for (row, col), members in pixels.items():
            if len({int(cls[m]) for m in members}) > 1:
                for m in members:
                    report.skip("conflict", layer, m, f" (class {layer.values[m]!r} on {ref.image.name} pixel "
                                                      f"row {row}, col {col})")
                continue
            report.merged += len(members) - 1
            entries.append((row, col, int(cls[members[0]]), members[0]))
        if entries:
            images[ref.id] = np.array([e[:3] for e in entries], dtype=np.int64)
            sizes[ref.id] = source.size(ref)
            extra[ref.id] = {"fid": [int(layer.fids[e[3]]) for e in entries],
                             "map_xy": [[float(layer.x[e[3]]), float(layer.y[e[3]])] for e in entries]}
    for i in np.flatnonzero(usable & ~inside_any):
        report.skip("outside", layer, int(i))
    report.clicks = sum(len(p) for p in images.values())
    report.imported = len({fid for e in extra.values() for fid in e["fid"]})
    meta = {"source": "import", "vector": str(layer.path.resolve()), "layer": layer.layer,
            "map_crs": layer.crs.to_string(), "rasters": [str(Path(r).resolve()) for r in rasters],
            "report": report.to_dict()}
    return PointSet(list(classes.names), images, sizes, meta, extra=extra), report


def _place(layer: PointLayer, raster: Path, usable: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixel rows and columns of the points on ``raster``, whether each is inside it, and whether on valid data."""
    with open_raster(raster) as ds:
        if ds.crs is None:
            raise ValueError(f"{raster}: the raster is not georeferenced (no CRS), so map points cannot be placed "
                             "on it")
        transformer = Transformer.from_crs(layer.crs, ds.crs, always_xy=True)
        x, y = transformer.transform(layer.x, layer.y)
        cols, rows = ~ds.transform @ (np.asarray(x), np.asarray(y))
        rows, cols = np.floor(rows), np.floor(cols)
        inside = usable & np.isfinite(rows) & (rows >= 0) & (rows < ds.height) & (cols >= 0) & (cols < ds.width)
        rows, cols = np.where(inside, rows, 0).astype(np.int64), np.where(inside, cols, 0).astype(np.int64)
        valid = np.zeros(len(rows), dtype=bool)
        for i in np.flatnonzero(inside):
            window = rasterio.windows.Window(int(cols[i]), int(rows[i]), 1, 1)
            valid[i] = bool(ds.read_masks(window=window).min() > 0)
    return rows, cols, inside, valid
