"""The names and defaults the command line offers, in a module that imports nothing heavy: ``pointseg --help`` and
every ``pointseg <command> --help`` are built from these without loading torch, rasterio or scikit-learn. The
modules that implement each choice take their names from here (``backends.BACKENDS``, ``inference.SCORES``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

BACKENDS = ("auto", "torch", "onnxruntime")  # who runs a model: pointseg.backends
PRECISIONS = ("float32", "bf16")  # of a prediction's forward pass with torch
SCORES = ("margin", "entropy", "max")  # a pixel's certainty: pointseg.inference.certainty
STRATEGIES = ("uniform", "class-balanced")  # simulated analysts: pointseg.data.points.simulate
OUTPUTS = ("probabilities", "logits")  # what an exported ONNX graph gives: pointseg.export
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2", ".nc")  # files predict maps as rasters


@dataclass(frozen=True)
class Tiling:
    """How a raster is cut: windows of ``tile`` model pixels a side, neighbours overlapping by ``overlap`` (a share
    of the window), ``batch_size`` windows per forward pass."""

    tile: int = 512
    overlap: float = 0.5
    batch_size: int = 4

    def __post_init__(self) -> None:
        if self.tile < 1:
            raise ValueError(f"--tile must be at least 1, got {self.tile}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"--overlap must be in [0, 1), got {self.overlap}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
