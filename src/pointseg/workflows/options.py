"""How maps are made and written, as the commands that map (``map``, ``predict``, ``evaluate``) are asked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pointseg import runs
from pointseg.backends import file_digest
from pointseg.choices import Tiling
from pointseg.data.classes import ClassTable
from pointseg.maps import MapResult
from pointseg.mapwriter import MapWriter, write_polygons
from pointseg.predictor import Predictor


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

    def __post_init__(self) -> None:
        if self.sieve < 0:
            raise ValueError(f"--sieve must be 0 or more pixels, got {self.sieve}")

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
