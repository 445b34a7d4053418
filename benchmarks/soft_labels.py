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

from common import run_cell

LABELS = {"nearest": ["labels.downsample=nearest"], "soft-mc": ["labels.downsample=soft", "labels.multi_class=true"],
          "soft-sc": ["labels.downsample=soft", "labels.multi_class=false"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--work", default="/tmp/pointseg-soft")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--scales", type=float, nargs="+", default=[0.5, 0.25, 0.125])
    p.add_argument("--models", nargs="+", default=["unet-mobilenetv2", "unet-small"])
    args = p.parse_args()
    for seed in args.seeds:
        for scale in args.scales:
            for model in args.models:
                for labels, label_sets in LABELS.items():
                    weights = args.weights if model != "unet-small" else "null"
                    sets = [f"model.name={model}", f"model.encoder_weights={weights}", f"data.scale={scale}",
                            f"data.crop={min(256, round(1024 * scale))}", "data.domains=[Rural]", "loss.name=ce",
                            *label_sets]
                    run_cell(f"soft_{model}_s{scale:g}_{labels}", seed, args.data_root, args.work, sets,
                             model=model, scale=scale, labels=labels)


if __name__ == "__main__":
    main()
