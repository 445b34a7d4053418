"""``pointseg predict``: GeoTIFF maps of rasters (a raster, a folder or a ``.txt`` list; on Ray actors with
``--ray``), or PNG masks of a folder of image files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pointseg.commands.options import map_options, with_tiling


def main(args: argparse.Namespace) -> list[Path]:
    from pointseg.workflows.predict import run_prediction

    written, unreadable = run_prediction(args.run, args.input, args.out, map_options(args), args.confidence,
                                         args.ray, args.ray_address, args.dataset)
    maps = [p for p in written if p.suffix == ".tif" and not p.stem.endswith("_confidence")]
    done = len(maps) if maps else len(written) // 2
    print(f"wrote {len(maps)} GeoTIFF maps" if maps else f"wrote {done} masks (index and colour PNGs)", "to", args.out)
    if unreadable:
        for message in unreadable:
            print(f"pointseg: skipped: {message}", file=sys.stderr)
        raise ValueError(f"{len(unreadable)} of {done + len(unreadable)} inputs could not be read and were skipped "
                         f"(listed in {Path(args.out) / 'unreadable.txt'})")
    return written


def register(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser("predict", help="GeoTIFF maps of rasters, or PNG masks of a folder of images "
                                        "(unreadable inputs are skipped and listed; exit code 2 if any)")
    pr.add_argument("--run", required=True, help="run directory or its model.pt")
    pr.add_argument("--dataset", help="which dataset of a model trained on several (its head and class table)")
    pr.add_argument("--input", required=True, help="a raster, a folder of rasters or images, or a .txt list of "
                                                   "rasters")
    pr.add_argument("--out", required=True, help="output folder")
    with_tiling(pr)
    pr.add_argument("--confidence", action="store_true",
                    help="also write <name>_confidence.tif: max-softmax probability in percent")
    pr.add_argument("--resume", action="store_true",
                    help="keep each map's finished rows beside it (.<map>.partial/), so that a killed prediction run "
                         "again with --resume continues from its last finished band of rows (same result)")
    pr.add_argument("--ray", type=int, nargs="?", const=0, metavar="WORKERS",
                    help="map rasters in parallel on Ray actors (WORKERS: how many; default one per CPU)")
    pr.add_argument("--ray-address", help="a running Ray cluster (default: start a local one)")
    pr.set_defaults(func=main)
