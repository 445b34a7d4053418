"""``pointseg export``: a trained model as ONNX, for onnxruntime and the QGIS plugin Deepness.

The graph takes a batch of square windows, ``(N, B, tile, tile)`` float32, the bands scaled to [0, 1] as pointseg
scales them (uint8 bands: divided by 255, which is what Deepness feeds a model), and returns class probabilities
(softmax; what Deepness's segmentor expects) or raw logits, ``(N, C, tile, tile)``; the batch size is free. The
model's own normalisation is inside the graph. The metadata holds what Deepness reads (``model_type``,
``class_names``, ``resolution`` in cm per pixel, ``tile_size``, ``tiles_overlap`` in percent), JSON-encoded, and
pointseg's band scaling and class colours for other runtimes (``pointseg_band_low``/``_high``: raw value of 0 and 1
per band). Deepness can only divide by 255: a model of uint16 or float bands needs its bands scaled as the metadata
says, which Deepness does not do.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pointseg import runs
from pointseg.data.raster import ground_sample_distance
from pointseg.io import atomic_path

log = logging.getLogger(__name__)

OUTPUTS = ("probabilities", "logits")
OPSET = 18
TOLERANCE = {"probabilities": 1e-4, "logits": 1e-3}  # max abs difference onnxruntime vs torch, float32


class ExportedModel(nn.Module):
    """The model as exported: logits, or their softmax over classes."""

    def __init__(self, model: nn.Module, output: str) -> None:
        super().__init__()
        self.model, self.output = model, output

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.model(image)
        return logits.softmax(1) if self.output == "probabilities" else logits


@dataclass
class Export:
    """A written ONNX model and how closely onnxruntime reproduced torch on a random batch."""

    path: Path
    metadata: dict[str, str]
    max_abs_difference: float


def training_resolution_cm(run: str | Path, cfg: dict) -> float | None:
    """Centimetres per model pixel of a run trained on rasters: the first raster's pixel size over ``data.scale``
    (``None`` for image tiles, whose pixel size is not known, or a raster that is gone)."""
    run_dir = runs.model_file(run).parent
    try:
        rasters = runs.read_info(run_dir)["inputs"].get("rasters") or []
    except (ValueError, KeyError):
        return None
    if not rasters or not Path(rasters[0]).exists():
        return None
    gsd = ground_sample_distance(rasters[0])
    return None if gsd is None else gsd * 100 / cfg["data"]["scale"]


def deepness_metadata(trained: runs.TrainedModel, tile: int, overlap: float, resolution_cm: float | None,
                      output: str) -> dict[str, str]:
    """Metadata properties, each value JSON-encoded (as Deepness parses them)."""
    meta = {"model_type": "Segmentor", "class_names": {str(i): n for i, n in enumerate(trained.classes.names)},
            "tile_size": tile, "tiles_overlap": round(overlap * 100), "pointseg_output": output,
            "pointseg_band_low": list(trained.scaling.low), "pointseg_band_high": list(trained.scaling.high),
            "pointseg_bands": trained.head_cfg["data"]["bands"],
            "pointseg_class_colors": [list(c) for c in trained.classes.colors]}
    if resolution_cm is not None:
        meta["resolution"] = round(resolution_cm, 4)
    return {k: json.dumps(v) for k, v in meta.items()}


def export_onnx(run: str | Path, out: str | Path, tile: int = 512, overlap: float = 0.5,
                output: str = "probabilities", resolution_cm: float | None = None, seed: int = 0,
                dataset: str | None = None) -> Export:
    """Export a run's model to ``out`` (see the module doc) and check it: onnxruntime's output on a random
    batch must match torch's within ``TOLERANCE`` (else ``RuntimeError``; nothing is written). ``dataset``: the
    dataset (head, and its experts) of a model trained on several."""
    import onnx
    import onnxruntime as ort

    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    trained = runs.load_run(run, device="cpu", head=dataset)
    divisor = getattr(trained.model, "size_divisor", 1)
    if tile <= 0 or tile % divisor:
        raise ValueError(f"--tile must be a positive multiple of {divisor} for this model, got {tile}")
    model = ExportedModel(trained.model.float().eval(), output).eval()
    resolution_cm = resolution_cm or training_resolution_cm(run, trained.head_cfg)
    if resolution_cm is None:
        log.warning("the run's pixel size is unknown (image tiles): give --resolution CM for Deepness")
    example = torch.rand(2, trained.scaling.bands, tile, tile, generator=torch.Generator().manual_seed(seed))
    metadata = deepness_metadata(trained, tile, overlap, resolution_cm, output)
    out = Path(out)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        torch.onnx.export(model, (example,), tmp, input_names=["image"], output_names=[output], opset_version=OPSET,
                          dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True, verbose=False,
                          external_data=False)
        graph = onnx.load(tmp)
        for key, value in metadata.items():
            graph.metadata_props.add(key=key, value=value)
        graph.doc_string = f"pointseg model: {', '.join(trained.classes.names)}"
        onnx.save(graph, tmp)
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = session.run(None, {"image": example.numpy()})[0]
        with torch.no_grad():
            want = model(example).numpy()
        difference = float(np.abs(got - want).max())
        if difference > TOLERANCE[output]:
            raise RuntimeError(f"{out}: onnxruntime differs from torch by {difference:.2g} "
                               f"(tolerance {TOLERANCE[output]:g}); not written")
    return Export(out, metadata, difference)
