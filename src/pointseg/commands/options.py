"""Arguments several subcommands share: the config (``--config``, ``--set``) and how rasters are cut and written."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pointseg import runs
from pointseg.backends import BACKENDS, file_digest
from pointseg.build import PRECISIONS
from pointseg.data.classes import ClassTable
from pointseg.maps import MapResult, Tiling
from pointseg.mapwriter import MapWriter, write_polygons
from pointseg.predictor import Predictor

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


@dataclass(frozen=True)
class MapOptions:
    """How maps are made and written: the ``tiling``, Cloud-Optimised GeoTIFFs (``cog``), test-time ``flips``, the
    inference ``backend`` (``pointseg.backends``) and its ``int8`` graph, the minimum mapping unit ``sieve``, the
    map's polygons (``vector``), an area of interest (``aoi``), rows kept to continue a killed map (``resume``)."""

    tiling: Tiling = Tiling()
    cog: bool = False
    flips: bool = False
    backend: str = "auto"
    int8: bool = False
    sieve: int = 0
    vector: bool = False
    aoi: str | None = None
    resume: bool = False
    precision: str = "float32"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> MapOptions:
        """From ``with_tiling``'s arguments; out-of-range values are errors here, before any work."""
        if args.tile < MIN_TILE:
            raise ValueError(f"--tile must be at least {MIN_TILE} model pixels (smaller windows map a raster many "
                             f"times slower and see too little context), got {args.tile}")
        if args.sieve < 0:
            raise ValueError(f"--sieve must be 0 or more pixels, got {args.sieve}")
        return cls(Tiling(args.tile, args.overlap, args.batch_size), args.cog, args.flips, args.backend, args.int8,
                   args.sieve, args.vector, args.aoi, getattr(args, "resume", False), args.precision)

    def predictor(self, trained: runs.TrainedModel, rasters: Sequence[str | Path] = ()) -> Predictor:
        """``trained``'s predictor as these options say (``rasters``: those being mapped, int8's calibration when
        the run's training images are gone)."""
        return trained.predictor(self.flips, self.backend, self.int8, rasters, self.precision)

    def resume_key(self, trained: runs.TrainedModel) -> str | None:
        """What identifies the model of a resumable map (``maps.map_raster`` adds the raster and the options):
        its model file's digest; ``None`` without ``resume``."""
        if not self.resume:
            return None
        if trained.path is None:
            raise ValueError("--resume needs a model saved in a run directory")
        return file_digest(trained.path)

    def products(self, result: MapResult, classes: ClassTable) -> list[Path]:
        """What is written from a finished map besides it: its polygons with ``vector``."""
        if not self.vector:
            return []
        polygons = result.map.with_suffix(".gpkg")
        write_polygons(result.map, polygons, classes)
        return [polygons]

    def writer(self, target: str | Path, classes: ClassTable, confidence: str | Path | None = None) -> MapWriter:
        return MapWriter(Path(target), classes, Path(confidence) if confidence else None, self.cog, self.sieve)
