"""``pointseg export``: a run's model as ONNX (``pointseg.export``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pointseg.choices import OUTPUTS, Tiling


def main(args: argparse.Namespace) -> Path:
    Tiling(args.tile, args.overlap)  # the window checks of maps, before the run is loaded
    from pointseg import runs
    from pointseg.export import export_onnx

    trained = runs.load_run(args.run, device="cpu", head=args.dataset)
    predictor = trained.predictor()
    resolution = args.resolution or runs.training_resolution_cm(args.run, predictor.scale)
    result = export_onnx(predictor, args.out, args.tile, args.overlap, args.output, resolution,
                         min_segment=args.min_segment)
    print(f"wrote {result.path}: {args.output} of {args.tile} x {args.tile} windows; onnxruntime matches torch to "
          f"{result.max_abs_difference:.1g} (max abs difference)")
    return result.path


def register(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("export", help="the run's model as ONNX (onnxruntime, the QGIS plugin Deepness)")
    ex.add_argument("--run", required=True, help="run directory or its model.pt")
    ex.add_argument("--dataset", help="which dataset of a model trained on several (its head and class table)")
    ex.add_argument("--out", required=True, help="ONNX file to write")
    ex.add_argument("--tile", type=int, default=Tiling.tile, help="window side of the graph's input, in pixels")
    ex.add_argument("--overlap", type=float, default=Tiling.overlap, help="window overlap Deepness should use")
    ex.add_argument("--output", choices=OUTPUTS, default="probabilities",
                    help="softmax probabilities (Deepness) or logits")
    ex.add_argument("--resolution", type=float, help="cm per model pixel (default: from the run's training raster)")
    ex.add_argument("--min-segment", type=int, default=0,
                    help="Deepness's small-segment removal (its seg_small_segment, pixels; default 0: none)")
    ex.set_defaults(func=main)
