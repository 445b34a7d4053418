"""``pointseg suggest``: where to click next. Every image (a dataset split or rasters) is scored by the model's
uncertainty, and the picks (``pointseg.suggest``) are written as a point file with the clicks so far plus the new
clicks (class ``null``), an overlay picture per image and, for rasters, a GeoPackage to classify in QGIS."""

from __future__ import annotations

import argparse
from pathlib import Path

from pointseg.choices import SCORES
from pointseg.commands.options import with_backend


def main(args: argparse.Namespace) -> Path:
    from pointseg.workflows.suggest import SuggestRequest, run_suggestion

    request = SuggestRequest(per_image=args.per_image, score=args.score, min_distance=args.min_distance,
                             class_weight=args.class_weight, flips=args.flips, backend=args.backend, int8=args.int8,
                             precision=args.precision)
    points = run_suggestion(args.run, args.out, request, args.data_root, args.split, tuple(args.raster), args.points,
                            args.dataset)
    out = Path(args.out)
    suggested = sum(int((p[:, 2] < 0).sum()) for p in points.images.values())
    print(f"suggested {suggested} clicks on {len(points.images)} images: {out} (class null: to be given), pictures "
          f"in {out.parent / (out.stem + '_overlays')}" + (f", QGIS layers in {out.with_suffix('.gpkg')}"
                                                          if args.raster else ""))
    return out


def register(sub: argparse._SubParsersAction) -> None:
    sg = sub.add_parser("suggest", help="where to click next: uncertain pixels, spread out, on classes with few "
                                        "clicks so far")
    sg.add_argument("--run", required=True, help="run directory or its model.pt")
    sg.add_argument("--dataset", help="which dataset of a model trained on several (its head and class table)")
    sg.add_argument("--data-root", help="dataset root (with --split)")
    sg.add_argument("--split", default="Train", help="the split of --data-root to suggest clicks on")
    sg.add_argument("--raster", action="append", default=[], metavar="FILE", help="raster(s) instead of a data root")
    sg.add_argument("--points", help="the clicks made so far (point file)")
    sg.add_argument("--per-image", type=int, required=True, help="clicks to suggest per image")
    sg.add_argument("--score", choices=SCORES, default="margin", help="uncertainty: margin between the two most "
                                                                      "probable classes, entropy, or max probability")
    sg.add_argument("--min-distance", type=float,
                    help="full-resolution pixels between any two clicks, made or suggested (default: half the "
                         "spacing of all the clicks on a square grid over the image)")
    sg.add_argument("--class-weight", type=float, default=1.0,
                    help="how strongly classes with few clicks are favoured (0: not at all)")
    sg.add_argument("--flips", action="store_true", help="average the probabilities over flipped images")
    with_backend(sg)
    sg.add_argument("--out", required=True, help="point file: the clicks so far plus the suggestions (class null)")
    sg.set_defaults(func=main)
