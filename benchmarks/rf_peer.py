"""The peer QGIS users reach for: a per-pixel random forest trained on the clicked pixels (as dzetsaka or the
Semi-Automatic Classification Plugin do), scored with pointseg's metric.

Features per pixel, at full resolution: the bands scaled to [0, 1] and the same bands Gaussian-smoothed at
``--sigmas`` (scikit-image), i.e. ``B * (1 + len(sigmas))`` values. The forest (scikit-learn) learns from exactly
the pixels of a pointseg point file and predicts every pixel of the images scored; mIoU as ``pointseg evaluate``
computes it (a confusion matrix over the whole split at full label resolution).

    python benchmarks/rf_peer.py --data-root ../shared/data/loveda-mini --points points.json --split Val \
        --out rf_val.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from skimage.filters import gaussian
from sklearn.ensemble import RandomForestClassifier

from pointseg.build import build_source
from pointseg.config import load_config
from pointseg.data.points import load_points
from pointseg.data.sources import Source
from pointseg.io import write_json
from pointseg.metrics import confusion_matrix, summarize

SIGMAS = (1.0, 2.0, 4.0, 8.0)


def pixel_features(image: np.ndarray, sigmas: tuple[float, ...] = SIGMAS) -> np.ndarray:
    """``(H, W, B)`` uint8 image -> ``(H, W, B * (1 + len(sigmas)))`` float32 features."""
    bands = image.astype(np.float32) / 255
    layers = [bands] + [gaussian(bands, sigma=s, channel_axis=-1, preserve_range=True) for s in sigmas]
    return np.concatenate(layers, axis=-1).astype(np.float32)


def train_forest(source: Source, points_path: str | Path, seed: int, trees: int = 200,
                 sigmas: tuple[float, ...] = SIGMAS) -> RandomForestClassifier:
    points = load_points(points_path)
    x, y = [], []
    for ref in source.refs:
        if ref.id not in points.images:
            continue
        pts = points.images[ref.id]
        features = pixel_features(source.read(ref)["image"], sigmas)
        x.append(features[pts[:, 0], pts[:, 1]])
        y.append(pts[:, 2])
    forest = RandomForestClassifier(n_estimators=trees, random_state=seed, n_jobs=2)
    return forest.fit(np.concatenate(x), np.concatenate(y))


def score_forest(forest: RandomForestClassifier, source: Source, sigmas: tuple[float, ...] = SIGMAS) -> dict:
    n = source.classes.num_classes
    cm = torch.zeros(n, n, dtype=torch.int64)
    for ref in source.refs:
        sample = source.read(ref)
        features = pixel_features(sample["image"], sigmas)
        pred = forest.classes_[forest.predict(features.reshape(-1, features.shape[-1]))]
        pred = pred.reshape(features.shape[:2]).astype(np.uint8)
        cm += confusion_matrix(torch.from_numpy(pred), torch.from_numpy(sample["mask"].astype(np.int64)), n,
                               source.classes.ignore_index)
    return summarize(cm.numpy(), list(source.classes.names))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--points", required=True, help="point file of the clicks (on the Train split)")
    p.add_argument("--train-split", default="Train")
    p.add_argument("--split", nargs="+", default=["Val"], help="splits to score")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trees", type=int, default=200)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    cfg = load_config(None, ["data.domains=[Rural]"])
    t0 = time.perf_counter()
    forest = train_forest(build_source(cfg, args.data_root, args.train_split), args.points, args.seed, args.trees)
    result: dict = {"train_seconds": round(time.perf_counter() - t0, 1), "trees": args.trees,
                    "sigmas": list(SIGMAS), "seed": args.seed}
    for split in args.split:
        metrics = score_forest(forest, build_source(cfg, args.data_root, split))
        result[split] = {k: metrics[k] for k in ("miou", "per_class_iou", "pixel_accuracy", "confusion_matrix")}
        print(f"random forest on {split}: mIoU {metrics['miou']:.4f}", flush=True)
    result["total_seconds"] = round(time.perf_counter() - t0, 1)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
