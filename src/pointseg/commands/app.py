"""``pointseg app``: click on a raster (or a folder of image tiles), see the fast model's map, correct it, in a
local web page.

``pointseg app --raster scene.tif [--points clicks.gpkg --class-field F] [--classes T.csv] --project DIR`` or
``pointseg app --data-root R --split S [--points clicks.json] --project DIR`` starts a project; ``pointseg app
--project DIR`` (or the command that started it, again) reopens it as it was left, and ``--set KEY=VALUE`` with it
changes its settings. The server binds 127.0.0.1 by default and prints a URL with a fresh
token (see ``pointseg.app.security``).
"""

from __future__ import annotations

import argparse

from pointseg.commands.options import with_config

NEEDS = "pointseg app needs its extra: pip install 'pointseg[app]' (FastAPI, uvicorn, rio-tiler)"


def main(args: argparse.Namespace) -> None:
    try:
        import uvicorn

        from pointseg.app.security import new_token
        from pointseg.app.server import create_app
        from pointseg.app.session import Session
        from pointseg.app.start import open_project
    except ImportError as e:
        raise ValueError(f"{NEEDS} ({e})") from e
    if args.raster and args.data_root:
        raise ValueError("start a project on --raster or on --data-root, not both")
    project = open_project(args)
    session = Session(project, project.info.get("settings") or {})
    token = new_token()
    app = create_app(project, token, args.host, args.port, session)
    print(f"pointseg app on {project.folder}: open http://{args.host}:{args.port}/?token={token}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


def register(sub: argparse._SubParsersAction) -> None:
    ap = sub.add_parser("app", help="a local web page: click on a raster, see the map in seconds, correct it")
    ap.add_argument("--project", required=True,
                    help="the project folder (everything of the session is kept there); alone, it reopens the project "
                         "as it was left, and with --set KEY=VALUE it changes the project's settings")
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
    ap.add_argument("--port", type=int, default=8765, help="port to serve the page on")
    with_config(ap)
    ap.set_defaults(func=main, interrupted="pointseg app: stopped (every acknowledged click is in the project)")

