"""``pointseg evaluate``: metrics at full label resolution, of a run on a dataset split, or of a map (made by a run,
or given) against a reference mask raster."""

from __future__ import annotations

import argparse
from pathlib import Path

from pointseg.commands.options import map_options, with_tiling


def main(args: argparse.Namespace) -> dict:
    from pointseg.workflows.evaluate import run_evaluation, run_map_evaluation

    if args.mask:
        metrics = run_map_evaluation(args.mask, args.out, args.run, args.raster, args.map, args.classes,
                                     map_options(args))
    elif args.run and args.data_root:
        metrics = run_evaluation(args.run, args.data_root, args.split, args.out, args.flips, args.dataset,
                                 args.backend, args.int8, args.precision)
    else:
        raise ValueError("evaluate needs --run with --data-root, or --mask with --run and --raster, or with --map")
    print(Path(args.out).with_suffix(".txt").read_text(), end="")
    return metrics


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("evaluate", help="metrics at full label resolution, on a dataset split or against a "
                                         "reference mask raster")
    ev.add_argument("--run", help="run directory or its model.pt")
    ev.add_argument("--data-root", help="dataset root (with --split)")
    ev.add_argument("--split", default="Val", help="the split of --data-root to score")
    ev.add_argument("--dataset", help="which dataset of a model trained on several (its head and class table)")
    ev.add_argument("--raster", help="raster the run maps, scored against --mask")
    ev.add_argument("--mask", help="reference mask raster on the grid of --raster or --map")
    ev.add_argument("--map", help="an existing map (GeoTIFF) to score against --mask")
    ev.add_argument("--classes", help="class table value,name,r,g,b with the mask's values (for --map without --run)")
    with_tiling(ev)
    ev.add_argument("--out", required=True, help="metrics JSON (table and plots are written beside it)")
    ev.set_defaults(func=main)
