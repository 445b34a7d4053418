"""``pointseg map``: the analyst's one command. A raster and a GIS point layer in, a trained model, a GeoTIFF map
and a short report out: import the clicks -> train on the raster -> map it -> ``REPORT.md``."""

from __future__ import annotations

import argparse
from pathlib import Path

from pointseg.commands.options import map_options, with_config, with_tiling


def main(args: argparse.Namespace) -> Path:
    """Import clicks -> train on the raster -> GeoTIFF map -> REPORT.md."""
    from pointseg.workflows.map import MapRequest, run_map

    return run_map(MapRequest(raster=Path(args.raster), vector=Path(args.points), class_field=args.class_field,
                              out=Path(args.out), layer=args.layer, crs=args.crs, x_field=args.x_field,
                              y_field=args.y_field, classes=Path(args.classes) if args.classes else None,
                              config=Path(args.config) if args.config else None, overrides=args.set,
                              options=map_options(args), confidence=args.confidence, argv=args.argv, fast=args.fast))


def register(sub: argparse._SubParsersAction) -> None:
    mp = sub.add_parser("map", help="a raster and a GIS point layer in: a trained model, a GeoTIFF map and a report "
                                    "out (points import -> train -> predict)")
    mp.add_argument("--raster", required=True, help="the image to map (GeoTIFF or any GDAL raster)")
    mp.add_argument("--points", required=True, help="point layer of clicks (GeoPackage, Shapefile, GeoJSON, CSV)")
    mp.add_argument("--class-field", required=True, help="the layer's field with class names or values")
    mp.add_argument("--out", required=True, help="output folder: map.tif, REPORT.md, run/ ...")
    mp.add_argument("--layer", help="layer of a multi-layer file (GeoPackage)")
    mp.add_argument("--crs", help="CRS of CSV coordinates, e.g. EPSG:4326")
    mp.add_argument("--x-field", default="x", help="CSV column of x (easting/longitude)")
    mp.add_argument("--y-field", default="y", help="CSV column of y (northing/latitude)")
    mp.add_argument("--classes", help="class table value,name,r,g,b (names and colours; default: the field's values)")
    mp.add_argument("--confidence", action="store_true", help="also write confidence.tif (max-softmax, percent)")
    mp.add_argument("--fast", action="store_true", help="map with the fast model (seconds: a head over the frozen "
                                                        "encoder, see train --fast), with its click accuracy")
    with_tiling(mp)
    with_config(mp)
    mp.set_defaults(func=main, interrupted="pointseg: interrupted (run the same map command again to continue its "
                                           "training from the last checkpoint)")
