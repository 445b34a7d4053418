"""``pointseg app``: click on a raster, see the fast model's map, correct it, in a local web page.

``pointseg app --raster scene.tif [--points clicks.gpkg --class-field F] [--classes T.csv] --project DIR`` starts a
project; ``pointseg app --project DIR`` reopens it as it was left. The server binds 127.0.0.1 by default and
prints a URL with a fresh token (see ``pointseg.app.security``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from pointseg.commands.map import raster_defaults
from pointseg.commands.options import with_config
from pointseg.commands.points import import_point_layer
from pointseg.config import deep_update, load_settings
from pointseg.data.classes import ClassTable
from pointseg.data.raster import open_raster

if TYPE_CHECKING:
    from pointseg.app.project import Project

NEEDS = "pointseg app needs its extra: pip install 'pointseg[app]' (FastAPI, uvicorn, rio-tiler)"


def start_project(args: argparse.Namespace) -> Project:
    """A new project on ``--raster``, its palette from ``--classes`` or the point layer's classes, its clicks
    from ``--points``."""
    from pointseg.app.project import Project, hex_colour

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
    project = Project.create(project_dir, images, classes, source, settings)
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
    if args.raster:
        project = start_project(args)
    elif args.points or args.classes:
        raise ValueError("--points and --classes start a project: give --raster too")
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
    ap.add_argument("--raster", help="start a project on this raster (any GDAL raster)")
    ap.add_argument("--points", help="clicks to start from: a point layer (GeoPackage, Shapefile, GeoJSON, CSV)")
    ap.add_argument("--class-field", help="the point layer's field with class names or values")
    ap.add_argument("--classes", help="class table value,name,r,g,b (the palette)")
    ap.add_argument("--mask", help="a reference mask raster on the grid of --raster (demos, benchmarks): the app "
                                   "scores every map against it (needs --classes with its values)")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    ap.add_argument("--port", type=int, default=8765)
    with_config(ap)
    ap.set_defaults(func=main, interrupted="pointseg app: stopped (every acknowledged click is in the project)")

