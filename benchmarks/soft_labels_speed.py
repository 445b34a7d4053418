"""Speed of soft-label down-sampling (block counting) vs the one-hot + interpolate baseline.

Baseline: one-hot stack with an extra ignore channel, ``F.interpolate`` (``area``, or ``bilinear`` with
antialias), on real 1024x1024 LoveDA masks. Median of repeated runs, 2 threads:

    python benchmarks/soft_labels_speed.py --data-root ../shared/data/loveda-mini \
        --out benchmarks/results/soft_speed.json
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from pointseg.data.labels import soft_downsample
from pointseg.data.sources import LoveDA
from pointseg.io import write_json


def baseline(mask: np.ndarray, num_classes: int, size: tuple[int, int], mode: str) -> torch.Tensor:
    cls = torch.from_numpy(np.where(mask == 255, num_classes, mask)).long()
    one_hot = F.one_hot(cls, num_classes + 1).permute(2, 0, 1)[None].float()  # (1, C+1, H, W)
    if mode == "area":
        return F.interpolate(one_hot, size=size, mode="area")
    return F.interpolate(one_hot, size=size, mode="bilinear", antialias=True, align_corners=False)


def median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-root", required=True)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(2)
    source = LoveDA(args.data_root, "Train", ("Rural",))
    mask = source.read_mask(source.refs[0])
    rows = []
    for scale in (0.5, 0.25, 0.125, 0.3):
        size = (round(mask.shape[0] * scale), round(mask.shape[1] * scale))
        for mode in ("area", "bilinear"):
            ours = median_seconds(lambda: soft_downsample(mask, 7, size, mode), args.repeats)  # noqa: B023
            base = median_seconds(lambda: baseline(mask, 7, size, mode), args.repeats)  # noqa: B023
            rows.append({"scale": scale, "mode": mode, "ours_ms": round(1000 * ours, 1),
                         "one_hot_interpolate_ms": round(1000 * base, 1), "speedup": round(base / ours, 2)})
            print(rows[-1])
    write_json(args.out, {"mask": str(source.refs[0].mask), "size": list(mask.shape), "threads": 2, "rows": rows})


if __name__ == "__main__":
    main()
