"""Soft vs nearest label down-sampling at 1/2, 1/4 and 1/8 of 1024 on LoveDA-mini (dense labels).

Cells: label path ``nearest``, ``soft`` (multi-class pixels on: MC) and ``soft`` single-class pixels only
(MC off), for unet-small and the ImageNet MobileNetV2 U-Net. Train on Train 0-15, evaluate on Val 16-23 at
full resolution. Protocol otherwise that of ``pointseg train`` (batch 8, AdamW 1e-3, 250 steps, bf16); the crop
is 256 or the whole image when smaller (1/8: 128). Each run is a separate ``pointseg`` process (its peak
memory is its own); the command is stored with the result. Finished cells are skipped on a re-run.

    python benchmarks/soft_labels.py --data-root ../shared/data/loveda-mini \\
        --weights ../shared/weights/mobilenet_v2-b0353104.pth --work /tmp/pointseg-soft
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from pointseg.io import write_json

RESULTS = Path(__file__).parent / "results"
LABELS = {"nearest": ["labels.downsample=nearest"], "soft-mc": ["labels.downsample=soft", "labels.multi_class=true"],
          "soft-sc": ["labels.downsample=soft", "labels.multi_class=false"]}


def cells(seeds: list[int], scales: list[float]) -> list[tuple[str, str, float, str, int]]:
    return [(f"soft_{model}_s{scale:g}_{labels}", model, scale, labels, seed)
            for seed in seeds for scale in scales for model in ("unet-mobilenetv2", "unet-small") for labels in LABELS]


def run(cmd: list[str]) -> None:
    print("+", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--work", default="/tmp/pointseg-soft")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--scales", type=float, nargs="+", default=[0.5, 0.25, 0.125])
    args = p.parse_args()
    for name, model, scale, labels, seed in cells(args.seeds, args.scales):
        out = RESULTS / f"{name}_seed{seed}.json"
        if out.exists():
            continue
        work = Path(args.work) / f"{name}_seed{seed}"
        weights = args.weights if model != "unet-small" else "null"
        sets = [f"model.name={model}", f"model.encoder_weights={weights}", f"data.scale={scale}",
                f"data.crop={min(256, round(1024 * scale))}", "data.domains=[Rural]", "loss.name=ce",
                f"seed={seed}", *LABELS[labels]]
        train = [sys.executable, "-m", "pointseg.cli", "train", "--data-root", args.data_root, "--out",
                 str(work / "run"), *[a for s in sets for a in ("--set", s)]]
        evaluate = [sys.executable, "-m", "pointseg.cli", "evaluate", "--run", str(work / "run"), "--data-root",
                    args.data_root, "--split", "Val", "--out", str(work / "val.json")]
        t0 = time.perf_counter()
        run(train)
        train_s = time.perf_counter() - t0
        run(evaluate)
        metrics = json.loads((work / "val.json").read_text())
        last = json.loads((work / "run" / "metrics.jsonl").read_text().splitlines()[-1])
        write_json(out, {"cell": name, "model": model, "scale": scale, "labels": labels, "seed": seed,
                         "miou": metrics["miou"], "per_class_iou": metrics["per_class_iou"],
                         "train_seconds": round(train_s, 1), "total_seconds": round(time.perf_counter() - t0, 1),
                         "peak_memory_mb": last.get("peak_memory_mb"), "commands": [shlex.join(train),
                                                                                     shlex.join(evaluate)]})


if __name__ == "__main__":
    main()
