"""Diagnostic of the multi-dataset phase (issue 13): re-estimate a shared decoder's BatchNorm statistics on one
dataset's Train images alone, then evaluate that dataset's head on its Val split.

A model trained on two datasets through one decoder keeps running BatchNorm statistics of both; if evaluating
each dataset with its own statistics recovers the separate model's score, the shared statistics are the cause.
Train images are read whole at the run's ``data.scale`` (cut to the patch size) with BatchNorm in training mode
and a cumulative average (``momentum=None``); no weight changes. Writes a copy of the run; the original is kept.

    python benchmarks/s5_bn_recalibrate.py RUN DATASET TRAIN_IMAGES VAL_ROOT OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pointseg.build import build_model_from_config
from pointseg.runs import read_model
from pointseg.workflows.evaluate import run_evaluation


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run", type=Path)
    p.add_argument("dataset", help="the head (dataset name) to recalibrate and evaluate")
    p.add_argument("train_images", type=Path, help="folder of that dataset's Train images")
    p.add_argument("val_root", type=Path, help="that dataset's root with a Val split")
    p.add_argument("out", type=Path)
    args = p.parse_args()
    saved = read_model(args.run)
    model = build_model_from_config(saved.cfg, {n: t.num_classes for n, t in saved.heads.items()}, pretrained=False,
                                    in_channels=saved.scaling.bands)
    model.load_state_dict(saved.state)
    model.eval()
    norms = [m for m in model.decoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over every image
        bn.train()
    scale, divisor = saved.cfg["data"]["scale"], model.size_divisor
    with torch.no_grad():
        for path in sorted(args.train_images.iterdir()):
            image = Image.open(path).convert("RGB")
            w, h = (int(side * scale) // divisor * divisor for side in image.size)
            x = np.asarray(image.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32) / 255
            model(torch.from_numpy(x).permute(2, 0, 1)[None], args.dataset)
    args.out.mkdir(parents=True, exist_ok=True)
    for f in args.run.iterdir():
        if f.is_file() and f.name != "model.pt":
            shutil.copy(f, args.out / f.name)
    state = torch.load(args.run / "model.pt", weights_only=False)
    state["model"] = {k: v for k, v in model.state_dict().items() if k in state["model"]}
    torch.save(state, args.out / "model.pt")
    metrics = run_evaluation(args.out, args.val_root, "Val", args.out / "val.json", dataset_name=args.dataset)
    print(json.dumps({"run": str(args.run), "dataset": args.dataset, "norms": len(norms), "miou": metrics["miou"]}))


if __name__ == "__main__":
    main()
