"""``pointseg export``: a trained model as ONNX, for onnxruntime and the QGIS plugin Deepness.

The graph takes a batch of square windows, ``(N, B, tile, tile)`` float32, the bands scaled to [0, 1] as pointseg
scales them (uint8 bands: divided by 255, which is what Deepness feeds a model), and returns class probabilities
(softmax; what Deepness's segmentor expects) or raw logits, ``(N, C, tile, tile)``; the batch size is free. The
model's own normalisation is inside the graph. The metadata holds what Deepness reads (``model_type``,
``class_names``, ``resolution`` in cm per pixel, ``tile_size``, ``tiles_overlap`` in percent), JSON-encoded, and
pointseg's band scaling and class colours for other runtimes (``pointseg_band_low``/``_high``: raw value of 0 and 1
per band), and Deepness's ``seg_thresh`` (0) and ``seg_small_segment``. IR version 9 and opset 18: what the
onnxruntime 1.17 Deepness installs loads. Deepness can only divide by 255: a model of uint16 or float bands needs
its bands scaled as the metadata says, which Deepness does not do.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pointseg.backends import ExportedModel, export_graph
from pointseg.choices import OUTPUTS
from pointseg.io import atomic_path
from pointseg.models.hypercolumn import graph_refusal
from pointseg.predictor import Predictor

log = logging.getLogger(__name__)

TOLERANCE = {"probabilities": 1e-4, "logits": 1e-3}  # max abs difference onnxruntime vs torch, float32


@dataclass
class Export:
    """A written ONNX model and how closely onnxruntime reproduced torch on a random batch."""

    path: Path
    metadata: dict[str, str]
    max_abs_difference: float


def deepness_metadata(predictor: Predictor, tile: int, overlap: float, resolution_cm: float | None,
                      output: str, min_segment: int = 0) -> dict[str, str]:
    """Metadata properties, each value JSON-encoded (as Deepness parses them). ``seg_thresh`` 0: every pixel takes
    its most probable class (Deepness's default, 0.5, sends the pixels below it to class index 0, a real class
    here); ``seg_small_segment``: Deepness's small-segment removal (``min_segment``, 0: none)."""
    if min_segment < 0:
        raise ValueError(f"--min-segment must be 0 or more, got {min_segment}")
    meta = {"model_type": "Segmentor", "class_names": {str(i): n for i, n in enumerate(predictor.classes.names)},
            "tile_size": tile, "tiles_overlap": round(overlap * 100), "seg_thresh": 0,
            "seg_small_segment": min_segment, "pointseg_output": output,
            "pointseg_band_low": list(predictor.scaling.low), "pointseg_band_high": list(predictor.scaling.high),
            "pointseg_bands": list(predictor.read_bands) if predictor.read_bands else None,
            "pointseg_class_colors": [list(c) for c in predictor.classes.colors]}
    if resolution_cm is not None:
        meta["resolution"] = round(resolution_cm, 4)
    return {k: json.dumps(v) for k, v in meta.items()}


def check_export(predictor: Predictor, tile: int, output: str) -> None:
    """Refuse an output kind or a window size the model cannot be exported with."""
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    refusal = graph_refusal(predictor.model)
    if refusal:
        raise ValueError(f"export: {refusal}")
    divisor = getattr(predictor.model, "size_divisor", 1)
    if tile <= 0 or tile % divisor:
        raise ValueError(f"--tile must be a positive multiple of {divisor} for this model, got {tile}")


def export_onnx(predictor: Predictor, out: str | Path, tile: int = 512, overlap: float = 0.5,
                output: str = "probabilities", resolution_cm: float | None = None, seed: int = 0,
                min_segment: int = 0) -> Export:
    """Export the model of ``predictor`` (on the CPU) to ``out`` (see the module doc) and check it: onnxruntime's
    output on a random batch must match torch's within ``TOLERANCE`` (else ``RuntimeError``; nothing is written).
    ``resolution_cm``: centimetres per model pixel, ``min_segment``: small-segment removal, for Deepness."""
    import onnxruntime as ort

    check_export(predictor, tile, output)
    model = ExportedModel(predictor.model.float().eval(), output).eval()
    if resolution_cm is None:
        log.warning("the run's pixel size is unknown (image tiles): give --resolution CM for Deepness")
    example = torch.rand(2, predictor.bands, tile, tile, generator=torch.Generator().manual_seed(seed))
    metadata = deepness_metadata(predictor, tile, overlap, resolution_cm, output, min_segment)
    out = Path(out)
    with atomic_path(out) as tmp:
        export_graph(predictor.model, example, tmp, output, metadata,
                     f"pointseg model: {', '.join(predictor.classes.names)}")
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = session.run(None, {"image": example.numpy()})[0]
        with torch.no_grad():
            want = model(example).numpy()
        difference = float(np.abs(got - want).max())
        if difference > TOLERANCE[output]:
            raise RuntimeError(f"{out}: onnxruntime differs from torch by {difference:.2g} "
                               f"(tolerance {TOLERANCE[output]:g}); not written")
    return Export(out, metadata, difference)
