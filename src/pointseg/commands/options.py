"""Arguments several subcommands share: the config (``--config``, ``--set``) and how rasters are cut and written.
Nothing heavy is imported here: ``--help`` builds every parser from this module and ``pointseg.choices``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from pointseg.choices import BACKENDS, PRECISIONS, Tiling

if TYPE_CHECKING:
    from pointseg.workflows.options import MapOptions

MIN_TILE = 32  # model pixels: the smallest window side maps are cut into from the command line


def with_config(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--config", help="YAML file overriding the default config")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config key")


def with_tiling(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--tile", type=int, default=Tiling.tile, help="raster window side in model pixels")
    sp.add_argument("--overlap", type=float, default=Tiling.overlap, help="share of a window its neighbour covers")
    sp.add_argument("--batch-size", type=int, default=Tiling.batch_size, help="raster windows per forward pass")
    sp.add_argument("--cog", action="store_true", help="write Cloud-Optimised GeoTIFFs with overviews")
    sp.add_argument("--aoi", metavar="FILE|minx,miny,maxx,maxy",
                    help="area of interest: a polygon layer in any CRS, or a box in the raster's CRS; only windows "
                         "touching it are computed, pixels outside it are nodata")
    sp.add_argument("--vector", action="store_true",
                    help="also write the map's regions as polygons: <map>.gpkg in the raster's CRS, fields class, "
                         "name, area")
    sp.add_argument("--sieve", type=int, default=0, metavar="N",
                    help="minimum mapping unit: regions of fewer than N pixels take their surrounding class "
                         "(rasterio's sieve, 4-connected, by bands of rows; default 0: none)")
    sp.add_argument("--flips", action="store_true",
                    help="test-time augmentation: average the class probabilities of the image and its left-right, "
                         "up-down and double flips (4x the forward passes)")
    with_backend(sp)


def with_backend(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--backend", choices=BACKENDS, default="auto",
                    help="who runs the model: torch, or onnxruntime (CPU, float32; its graphs are kept in the run "
                         "directory); auto (default): onnxruntime on the CPU, torch on a GPU")
    sp.add_argument("--int8", action="store_true",
                    help="onnxruntime's int8 graph (convolutions quantized, calibrated on windows of the run's "
                         "training images, or of the rasters mapped when those are gone)")
    sp.add_argument("--precision", choices=PRECISIONS, default="float32",
                    help="arithmetic of the model: float32 (default, whatever the run trained in) or bf16 (torch's "
                         "autocast; faster on GPUs and CPUs with AVX512-BF16/AMX, but its maps differ: see "
                         "BENCHMARKS 11)")


def map_options(args: argparse.Namespace) -> MapOptions:
    """The ``MapOptions`` of ``with_tiling``'s arguments; out-of-range values are errors here, before any work."""
    from pointseg.workflows.options import MapOptions

    if args.tile < MIN_TILE:
        raise ValueError(f"--tile must be at least {MIN_TILE} model pixels (smaller windows map a raster many "
                         f"times slower and see too little context), got {args.tile}")
    return MapOptions(tiling=Tiling(args.tile, args.overlap, args.batch_size), cog=args.cog, flips=args.flips,
                      backend=args.backend, int8=args.int8, sieve=args.sieve, vector=args.vector, aoi=args.aoi,
                      resume=getattr(args, "resume", False), precision=args.precision)
