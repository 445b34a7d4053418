"""Semi-supervised benchmark on LoveDA-mini (evaluated on Val 16-23 at full resolution).

1. ``points``: 20 simulated points per Train image (0-15); supervised vs fixmatch vs pseudoseg, both models.
2. ``few-masks``: dense masks of 2 Train images (``--labeled``, ids 0 and 1), the other 14 Train images
   and the Dubai set (out of domain) unlabeled; supervised vs fixmatch vs pseudoseg.
3. ``view``: PseudoSeg's strong view as the paper has it (SimCLR colour distortion, one 50 x 50 CutOut box; the
   default since issue 20) against pointseg's earlier view (``strong_view=v1``), 20 points, MobileNetV2 U-Net, on
   one machine (results ``semi_view_{paper,v1}_seed*.json``).
4. ``ablation``: PseudoSeg pseudo-label source (decoder / sgc, T 0.5) and sharpening of the fused labels
   (T 0.7, 1.0), 20 points, MobileNetV2 U-Net; fused at T 0.5 is the ``points`` cell of that model. Every
   PseudoSeg run logs the accuracy and ECE of all three sources, whichever one it trains on.

Protocol: ``pointseg train`` defaults (batch 8 labeled + 8 unlabeled, AdamW 1e-3, 250 steps, bf16), partial CE,
PseudoSeg with LoveDA's ``background`` as background class. The 2 labeled images of ``few-masks`` are drawn with
replacement to fill each labeled batch (8 random crops). Finished cells are skipped on a re-run.

    python benchmarks/semi_supervised.py --data-root ../shared/data/loveda-mini --dubai ../shared/data/dubai-aerial \\
        --weights ../shared/weights/mobilenet_v2-b0353104.pth --work /tmp/pointseg-semi
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import pointseg, run, run_cell

METHODS = ("supervised", "fixmatch", "pseudoseg")
MODELS = ("unet-mobilenetv2", "unet-small")
ABLATION = (("decoder", 0.5), ("sgc", 0.5), ("fused", 0.7), ("fused", 1.0))  # + ("fused", 0.5): the points cell


def cell_name(part: str, model: str, method: str) -> str:
    """Result name of a ``points`` or ``few`` (few-masks) cell."""
    return f"semi_{part}_{model}_{method}"


def ablation_name(source: str, temperature: float) -> str:
    """Result name of an ablation cell; fused at T 0.5 is the PseudoSeg cell of the points part (same recipe)."""
    if (source, temperature) == ("fused", 0.5):
        return cell_name("points", "unet-mobilenetv2", "pseudoseg")
    return f"semi_ablation_{source}_T{temperature:g}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--dubai", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--work", default="/tmp/pointseg-semi")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--parts", nargs="+", default=["points", "few-masks", "ablation", "view"])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    labeled = work / "labeled-2.txt"
    labeled.write_text("Rural/0\nRural/1\n")
    for seed in args.seeds:
        points = work / f"points20-seed{seed}.json"
        if not points.exists():
            run(pointseg("points", "simulate", "--data-root", args.data_root, "--split", "Train", "--per-image", "20",
                         "--seed", str(seed), "--set", "data.domains=[Rural]", "--out", str(points)))
        for model in args.models:
            weights = args.weights if model != "unet-small" else "null"
            base = [f"model.name={model}", f"model.encoder_weights={weights}", "data.domains=[Rural]", "loss.name=ce",
                    "method.pseudoseg.background_class=0"]
            for method in args.methods:
                if "points" in args.parts:
                    run_cell(cell_name("points", model, method), seed, args.data_root, work,
                             [*base, f"method.name={method}"], ["--points", str(points)], part="points", model=model,
                             method=method)
                if "few-masks" in args.parts:
                    run_cell(cell_name("few", model, method), seed, args.data_root, work,
                             [*base, f"method.name={method}"], ["--labeled", str(labeled), "--unlabeled", args.dubai],
                             part="few-masks", model=model, method=method)
            if "view" in args.parts and model == "unet-mobilenetv2":
                for view in ("paper", "v1"):
                    run_cell(f"semi_view_{view}", seed, args.data_root, work,
                             [*base, "method.name=pseudoseg", f"method.pseudoseg.strong_view={view}"],
                             ["--points", str(points)], part="view", view=view)
            if "ablation" in args.parts and model == "unet-mobilenetv2":
                for source, t in ABLATION:
                    sets = [*base, "method.name=pseudoseg", f"method.pseudoseg.pseudo_source={source}",
                            f"method.pseudoseg.temperature={t}"]
                    run_cell(ablation_name(source, t), seed, args.data_root, work, sets,
                             ["--points", str(points)], part="ablation", source=source, temperature=t)


if __name__ == "__main__":
    main()
