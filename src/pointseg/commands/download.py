"""``pointseg download``: LoveDA from Zenodo (needs internet)."""

from __future__ import annotations

import argparse
from pathlib import Path


def main(args: argparse.Namespace) -> Path:
    from pointseg.data.download import download_loveda

    return download_loveda(args.root, tuple(args.splits))


def register(sub: argparse._SubParsersAction) -> None:
    dl = sub.add_parser("download", help="download LoveDA (needs internet)")
    dl.add_argument("--root", required=True, help="folder to download LoveDA into")
    dl.add_argument("--splits", nargs="+", default=["Train", "Val"], choices=["Train", "Val", "Test"],
                    help="the splits to download")
    dl.set_defaults(func=main)
