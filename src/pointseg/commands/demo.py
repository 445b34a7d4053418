"""``pointseg demo``: the whole chain (simulated clicks -> train -> evaluate -> predict), written as one report, on
the sample shipped with pointseg or on a LoveDA root."""

from __future__ import annotations

import argparse
from pathlib import Path


def main(args: argparse.Namespace) -> Path:
    """Simulate 20 points/image -> train -> evaluate on Val -> predict a few images -> REPORT.md."""
    from pointseg.workflows.demo import run_demo

    return run_demo(args.data_root, args.out, args.set, download=args.download, per_image=args.per_image)


def register(sub: argparse._SubParsersAction) -> None:
    de = sub.add_parser("demo", help="the whole chain on the sample shipped with pointseg (or a LoveDA root), in "
                                     "minutes on a CPU")
    de.add_argument("--data-root", help="a LoveDA root (default: the Dubai tiles of the sample)")
    de.add_argument("--out", required=True, help="output folder: REPORT.md, run/, points.json, predictions/")
    de.add_argument("--per-image", type=int, default=20, help="simulated clicks per Train image")
    de.add_argument("--download", action="store_true", help="download LoveDA into --data-root if missing")
    de.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config key")
    de.set_defaults(func=main)
