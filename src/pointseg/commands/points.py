"""``pointseg points``: clicks simulated from dense masks (or suggested clicks answered from them), and clicks
imported from a GIS point layer onto rasters."""

from __future__ import annotations

import argparse
from pathlib import Path

from pointseg.choices import STRATEGIES
from pointseg.commands.options import with_config


def main_simulate(args: argparse.Namespace) -> Path:
    from pointseg.config import load_config
    from pointseg.data.points import answer, load_points, save_points, simulate
    from pointseg.workflows.points import simulate_corrective, simulation_source

    where = {"data_root": args.data_root, "split": args.split, "raster": args.raster, "mask": args.mask,
             "table": args.classes}
    if args.per_image is not None and args.per_image < 1:
        raise ValueError(f"--per-image must be at least 1, got {args.per_image}")
    cfg = load_config(args.config, args.set)
    if args.strategy == "corrective":
        if args.per_image is None:
            raise ValueError("--strategy corrective needs --per-image K (clicks added per image)")
        points = simulate_corrective(args.run, args.points, args.per_image, args.seed, **where)
        save_points(args.out, points)
        print(f"wrote {len(points)} points ({args.per_image} per image where the map of {args.run} is wrong, added to "
              f"those of {args.points}) on {len(points.images)} images to {args.out}")
        return Path(args.out)
    source = simulation_source(cfg, None, **where)
    if args.at:
        points, dropped = answer(source, load_points(args.at, unclassified=True))
        save_points(args.out, points)
        print(f"answered the suggested clicks of {args.at} from the masks of {args.data_root} ({args.split}): "
              f"{len(points)} points on {len(points.images)} images in {args.out}")
        if dropped:
            print(f"left out {len(dropped)} suggestions on unlabeled pixels, e.g. {', '.join(dropped[:3])}")
        return Path(args.out)
    if args.per_image is None:
        raise ValueError("points simulate needs --per-image N (or --at SUGGESTIONS to answer suggested clicks)")
    points = simulate(source, args.per_image, args.seed, args.strategy)
    save_points(args.out, points)
    print(f"wrote {len(points)} points on {len(points.images)} images to {args.out}")
    return Path(args.out)


def main_import(args: argparse.Namespace) -> Path:
    from pointseg.workflows.points import import_point_layer

    points, report = import_point_layer(args.vector, args.raster, args.class_field, args.out, args.layer, args.crs,
                                        args.classes, args.x_field, args.y_field)
    print(report.summary())
    print(f"wrote {len(points)} points on {len(points.images)} rasters to {args.out} (classes: "
          f"{', '.join(points.classes)}; table {Path(args.out).with_suffix('.classes.csv')})")
    return Path(args.out)


def register(sub: argparse._SubParsersAction) -> None:
    pts = sub.add_parser("points", help="clicks: simulated from dense masks, or imported from a GIS point "
                                        "layer").add_subparsers(dest="points_command", required=True)
    sim = pts.add_parser("simulate", help="simulate N clicks per image from dense masks")
    sim.add_argument("--data-root", help="tiles with masks (with --split)")
    sim.add_argument("--split", default="Train", help="the split of --data-root whose images are clicked")
    sim.add_argument("--raster", help="instead of --data-root: a raster, with its reference --mask")
    sim.add_argument("--mask", help="the mask raster of --raster (its unlabelled pixels are never clicked)")
    sim.add_argument("--classes", help="class table value,name,r,g,b of --mask (default with --run: the run's)")
    sim.add_argument("--run", help="corrective: the run whose map the new clicks correct")
    sim.add_argument("--points", help="corrective: the clicks so far (kept, and never clicked again)")
    sim.add_argument("--per-image", type=int, help="clicks per image")
    sim.add_argument("--at", metavar="SUGGESTIONS", help="instead: give the suggested clicks of this point file "
                                                         "(pointseg suggest) the classes of the dense masks")
    sim.add_argument("--seed", type=int, default=0, help="seed of the random draws (the same seed, the same clicks)")
    sim.add_argument("--strategy", choices=[*STRATEGIES, "corrective"], default="uniform",
                     help="uniform | class-balanced | corrective: --per-image clicks where --run's map is wrong")
    sim.add_argument("--out", required=True, help="point file to write (points.json)")
    with_config(sim)
    sim.set_defaults(func=main_simulate)

    imp = pts.add_parser("import", help="clicks from a GIS point layer (GeoPackage, Shapefile, GeoJSON, CSV) onto "
                                        "rasters, reprojected to each raster's CRS")
    imp.add_argument("--vector", required=True, help="point layer file")
    imp.add_argument("--layer", help="layer name (files with several layers, e.g. GeoPackages)")
    imp.add_argument("--raster", required=True, action="append", help="raster the points are clicked on (repeatable)")
    imp.add_argument("--class-field", required=True, help="field holding class names or integer class values")
    imp.add_argument("--classes", help="class table CSV value,name,r,g,b (default: the field's distinct values)")
    imp.add_argument("--crs", help="CRS of the points (required for a CSV, e.g. EPSG:4326)")
    imp.add_argument("--x-field", default="x", help="CSV column of x / longitude")
    imp.add_argument("--y-field", default="y", help="CSV column of y / latitude")
    imp.add_argument("--out", required=True, help="point file to write (its class table goes beside it)")
    imp.set_defaults(func=main_import)
