"""``pointseg app``: click on a raster (or a folder of image tiles), see the fast model's map, correct it, in a
local web page.

``pointseg app --raster scene.tif [--points clicks.gpkg --class-field F] [--classes T.csv] --project DIR`` or
``pointseg app --data-root R --split S [--points clicks.json] --project DIR`` starts a project; ``pointseg app
--project DIR`` reopens it as it was left. The server binds 127.0.0.1 by default and prints a URL with a fresh
token (see ``pointseg.app.security``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from pointseg import build
from pointseg.commands.map import raster_defaults
from pointseg.commands.options import with_config
from pointseg.commands.points import import_point_layer
from pointseg.config import deep_update, load_settings, resolve_settings
from pointseg.data.classes import ClassTable
from pointseg.data.points import PointSet, check_against, load_points
from pointseg.data.raster import open_raster

if TYPE_CHECKING:
    from pointseg.app.project import Project

NEEDS = "pointseg app needs its extra: pip install 'pointseg[app]' (FastAPI, uvicorn, rio-tiler)"


def start_project(args: argparse.Namespace) -> Project:
    """A new project on ``--raster``, its palette from ``--classes`` or the point layer's classes, its clicks
    from ``--points``."""
    from pointseg.app.project import Project, hex_colour

    if args.mask is True:
        raise ValueError("--mask with --raster names the reference mask raster: --mask REF.tif")
    raster = Path(args.raster)
    with open_raster(raster) as ds:
        images = {raster.stem: {"height": ds.height, "width": ds.width}}
    project_dir = Path(args.project)
    table = ClassTable.from_csv(args.classes, color_coded=False) if args.classes else None
    points = None
    if args.points:
        if not args.class_field:
            raise ValueError("--points needs --class-field (the layer's field with class names or values)")
        points, report = import_point_layer(args.points, [raster], args.class_field, project_dir / "import" /
                                            "points.json", classes=args.classes)
        print(report.summary())
        table = ClassTable.from_csv(project_dir / "import" / "points.classes.csv", color_coded=False)
    classes = [{"name": n, "color": hex_colour(c)} for n, c in zip(table.names, table.colors, strict=True)] \
        if table else []
    defaults, why = raster_defaults(raster, fast=True)
    print(f"{raster.name}: {why}")
    settings = deep_update(defaults, load_settings(args.config, args.set))
    source: dict = {"rasters": [str(raster.resolve())]}
    if args.mask:
        if table is None or table.values is None:
            raise ValueError("--mask needs --classes TABLE.csv with the mask's class values")
        source |= {"mask": str(Path(args.mask).resolve()), "class_values": list(table.values)}
    return add_points(Project.create(project_dir, images, classes, source, settings), points)


def start_tiles(args: argparse.Namespace) -> Project:
    """A new project on the image tiles of ``--split`` under ``--data-root``; its palette is the dataset's class
    table (``--classes`` for a folder dataset), its clicks from a point file (``--points``, e.g. of ``points
    simulate``); with ``--mask``, the maps are scored against the split's masks."""
    from pointseg.app.project import Project, hex_colour

    if isinstance(args.mask, str):
        raise ValueError("--mask takes no file with --data-root: give --mask alone to score against the split's "
                         "own masks")
    if args.class_field:
        raise ValueError("--class-field is for point layers on a --raster; with --data-root, --points is a point "
                         "file (points.json)")
    settings = load_settings(args.config, args.set)
    data = {"train_split": args.split}
    if args.classes:
        data |= {"classes": str(Path(args.classes).resolve()), "format": settings.get("data", {}).get("format",
                                                                                                     "folder")}
    settings = deep_update(settings, {"data": data})
    source = build.build_source(resolve_settings(settings), args.data_root, args.split, require_masks=False)
    if not source.refs:
        raise ValueError(f"{args.data_root}: no images in split {args.split}")
    if args.mask and not any(ref.mask for ref in source.refs):
        raise ValueError(f"{args.data_root}: split {args.split} has no masks to score the maps against (--mask)")
    images = {}
    for ref in source.refs:
        height, width = source.size(ref)
        images[ref.id] = {"height": height, "width": width}
    table = source.classes
    points = None
    if args.points:
        points = load_points(args.points)
        check_against(points, list(images), {k: (v["height"], v["width"]) for k, v in images.items()},
                      list(table.names))
    classes = [{"name": n, "color": hex_colour(c)} for n, c in zip(table.names, table.colors, strict=True)]
    info = {"data_root": str(Path(args.data_root).resolve()), "split": args.split} | ({"mask": True}
                                                                                     if args.mask else {})
    return add_points(Project.create(Path(args.project), images, classes, info, settings), points)


def add_points(project: Project, points: PointSet | None) -> Project:
    """``project`` with the clicks of ``points`` added."""
    for image, pts in (points.images.items() if points else []):
        for row, col, cls in pts.tolist():
            project.add_click(image, row, col, cls)
    return project


def main(args: argparse.Namespace) -> None:
    try:
        import uvicorn

        from pointseg.app.project import Project
        from pointseg.app.security import new_token
        from pointseg.app.server import create_app
        from pointseg.app.session import Session
    except ImportError as e:
        raise ValueError(f"{NEEDS} ({e})") from e
    project_dir = Path(args.project)
    if args.raster and args.data_root:
        raise ValueError("start a project on --raster or on --data-root, not both")
    if args.raster:
        project = start_project(args)
    elif args.data_root:
        project = start_tiles(args)
    elif args.points or args.classes or args.mask:
        raise ValueError("--points, --classes and --mask start a project: give --raster or --data-root too")
    else:
        project = Project.open(project_dir)
    settings = project.info.get("settings") or load_settings(args.config, args.set)
    session = Session(project, settings)
    token = new_token()
    app = create_app(project, token, args.host, args.port, session)
    print(f"pointseg app on {project.folder}: open http://{args.host}:{args.port}/?token={token}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


def register(sub: argparse._SubParsersAction) -> None:
    ap = sub.add_parser("app", help="a local web page: click on a raster, see the map in seconds, correct it")
    ap.add_argument("--project", required=True, help="the project folder (everything of the session is kept there)")
    ap.add_argument("--raster", help="start a project on this raster (any GDAL raster, a VRT mosaic included)")
    ap.add_argument("--data-root", help="start a project on a folder of image tiles (LoveDA layout, or "
                                        "data.format=folder), the images of --split")
    ap.add_argument("--split", default="Train", help="with --data-root: the split whose images are clicked")
    ap.add_argument("--points", help="clicks to start from: a point layer (GeoPackage, Shapefile, GeoJSON, CSV) on "
                                     "a --raster, a point file (points.json) on --data-root")
    ap.add_argument("--class-field", help="the point layer's field with class names or values")
    ap.add_argument("--classes", help="class table value,name,r,g,b (the palette; with --data-root: the folder "
                                      "dataset's table, data.classes)")
    ap.add_argument("--mask", nargs="?", const=True,
                    help="demos and benchmarks: score every map against a reference, a mask raster on the grid of "
                         "--raster (needs --classes with its values), or, given alone with --data-root, the "
                         "split's masks")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    ap.add_argument("--port", type=int, default=8765)
    with_config(ap)
    ap.set_defaults(func=main, interrupted="pointseg app: stopped (every acknowledged click is in the project)")

