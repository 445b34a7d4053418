"""Points-budget and loss benchmark on LoveDA-mini (train Train 0-15, evaluate Val 16-23 at full resolution).

Every cell uses the same protocol (the default recipe of ``pointseg train`` at commit 4e5a526, where these
numbers were first measured; label settings pinned below): images at scale 0.5 (512x512),
random 256x256 crops with flips/90-degree turns, batch 8, AdamW (lr 1e-3, weight decay 1e-4), 25 warm-up
steps then cosine decay, 250 steps, bf16 autocast + channels_last, 2 CPU threads. A seed sets both the
simulated points and the training run. Results land in ``benchmarks/results/<cell>_s<seed>.json``; finished
runs are skipped, so the script can be stopped and started again.

    python benchmarks/points_budget.py --data-root ../shared/data/loveda-mini \
        --weights ../shared/weights/mobilenet_v2-b0353104.pth --work /tmp/pointseg-bench
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from common import RECIPE_V1
from pointseg.build import TrainInputs, build_source
from pointseg.config import load_config
from pointseg.data.points import save_points, simulate
from pointseg.io import write_json
from pointseg.workflows.evaluate import run_evaluation
from pointseg.workflows.train import run_training

RESULTS = Path(__file__).parent / "results"
MODELS = ("unet-mobilenetv2", "unet-small")


def cells(seeds: tuple[int, ...]) -> list[tuple[str, str, int | None, str, int]]:
    """(cell name, model, points per image or None for dense, loss, seed), most important first."""
    out = []
    for seed in seeds:
        for model in MODELS:
            out += [(f"{model}_p20_ce", model, 20, "ce", seed), (f"{model}_p20_focal", model, 20, "focal", seed),
                    (f"{model}_dense_ce", model, None, "ce", seed)]
        if seed == seeds[0]:
            for model in MODELS:
                out += [(f"{model}_p{n}_ce", model, n, "ce", seed) for n in (5, 100)]
    return out


def run_cell(name: str, model: str, per_image: int | None, loss: str, seed: int, args: argparse.Namespace) -> dict:
    # The protocol as first measured (commit 4e5a526): bilinear image filter, nearest-neighbour dense labels.
    overrides = [*RECIPE_V1, f"model.name={model}", f"loss.name={loss}", f"seed={seed}", "data.domains=[Rural]",
                 "labels.mode=bilinear", "labels.downsample=nearest", "method.name=supervised"]
    weights = args.weights if model != "unet-small" else None
    overrides.append(f"model.encoder_weights={weights}" if weights else "model.encoder_weights=null")
    cfg = load_config(None, overrides)
    work = Path(args.work) / f"{name}_s{seed}"
    shutil.rmtree(work, ignore_errors=True)
    points = None
    if per_image is not None:
        source = build_source(cfg, args.data_root, "Train")
        points = save_points(work / "points.json", simulate(source, per_image, seed, progress=False))
    t0 = time.perf_counter()
    run_training(cfg, work / "run", TrainInputs(args.data_root, points))
    train_s = time.perf_counter() - t0
    metrics = run_evaluation(work / "run", args.data_root, "Val", work / "val.json")
    return {"cell": name, "model": model, "points_per_image": per_image, "loss": loss, "seed": seed,
            "miou": metrics["miou"], "pixel_accuracy": metrics["pixel_accuracy"],
            "per_class_iou": metrics["per_class_iou"], "train_seconds": round(train_s, 1),
            "total_seconds": round(time.perf_counter() - t0, 1), "overrides": overrides}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--weights", required=True, help="ImageNet MobileNetV2 checkpoint file")
    p.add_argument("--work", default="/tmp/pointseg-bench")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    for name, model, per_image, loss, seed in cells(tuple(args.seeds)):
        out = RESULTS / f"{name}_s{seed}.json"
        if out.exists():
            continue
        print(f"=== {name} seed {seed}", flush=True)
        result = run_cell(name, model, per_image, loss, seed, args)
        write_json(out, result)
        print(f"    mIoU {result['miou']:.4f}  ({result['total_seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
