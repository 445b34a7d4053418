"""``pointseg sample``: the small real sample shipped inside the package (Dubai tiles with masks, a Landsat scene
with clicks; see its README), copied out to try the commands on."""

from __future__ import annotations

import argparse
from pathlib import Path


def main(args: argparse.Namespace) -> Path:
    from pointseg.workflows.sample import copy_sample

    out = copy_sample(args.out)
    print(f"copied the sample to {out}: {out / 'dubai'} (tiles with masks) and {out / 'landsat'} (a raster with "
          f"clicks); try: pointseg map --raster {out / 'landsat' / 'RGB.byte.tif'} --points "
          f"{out / 'landsat' / 'clicks.gpkg'} --class-field class --classes {out / 'landsat' / 'classes.csv'} "
          "--out runs/landsat")
    return out


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("sample", help="copy the small sample shipped with pointseg (tiles with masks, a raster with "
                                       "clicks) to try the commands on")
    sp.add_argument("--out", required=True, help="folder to copy it to")
    sp.set_defaults(func=main)
