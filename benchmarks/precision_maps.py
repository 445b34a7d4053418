"""Do bf16 maps agree with float32 maps of trained runs? (BENCHMARKS.md section 11, precision)

    python benchmarks/precision_maps.py loveda --runs /tmp/prec/clicks_precision_*/run \
        --data-root ../shared/data/loveda-mini --work /tmp/precision-maps
    python benchmarks/precision_maps.py sentinel2 --work /tmp/precision-maps --seeds 0

``loveda``: each run (the default recipe of the ``precision`` phase of ``click_levers.py``, trained in float32 or in
bf16) predicts the 8 Val tiles with torch in float32 and in bf16 autocast (``--precision``): the share of pixels
whose class is the same, and each precision's Val mIoU. ``sentinel2``: ``pointseg map`` with its defaults trains on
10 clicks per class of one Sentinel-2 date (the clicks of ``sentinel2_map.py``) and its run maps that date with torch
in float32 and in bf16: the share of identical pixels (valid pixels of the raster) and each map's mIoU on the
date's mask. Results: ``benchmarks/results/precision_maps.json`` (each with the CPU's model); one process at a time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image

from common import pointseg
from pointseg.inference import cpu_model
from pointseg.io import write_json
from sentinel2_map import NAMES, S2, clicks, run

RESULTS = Path(__file__).parent / "results" / "precision_maps.json"
PRECISIONS = ("float32", "bf16")


def identical_pngs(a: Path, b: Path) -> tuple[int, int]:
    """Pixels with the same class in two folders of index PNGs, and pixels in all."""
    same = total = 0
    for path in sorted(a.glob("*.png")):
        if path.stem.endswith("_color"):
            continue
        x, y = np.asarray(Image.open(path)), np.asarray(Image.open(b / path.name))
        same, total = same + int((x == y).sum()), total + x.size
    return same, total


def loveda(args: argparse.Namespace, results: dict) -> None:
    images = args.data_root / "Val" / "Rural" / "images_png"
    for run_dir in args.runs:
        name = run_dir.parent.name
        if name in results.get("loveda", {}):
            continue
        info = json.loads((run_dir / "run.json").read_text())["invocations"][-1]
        record: dict = {"run": str(run_dir), "trained_in": info.get("precision", "bf16" if info["amp"] else "float32")}
        for precision in PRECISIONS:
            out = args.work / name / precision
            flags = ["--backend", "torch", "--precision", precision]
            seconds = round(run(pointseg("predict", "--run", str(run_dir), "--input", str(images), "--out",
                                         str(out), *flags)), 1)
            run(pointseg("evaluate", "--run", str(run_dir), "--data-root", str(args.data_root), "--split", "Val",
                         "--out", str(out / "val.json"), *flags))
            record[precision] = {"val_miou": json.loads((out / "val.json").read_text())["miou"],
                                 "predict_s": seconds}
        same, total = identical_pngs(args.work / name / "float32", args.work / name / "bf16")
        record["identical"] = same / total
        record["pixels"] = total
        results.setdefault("loveda", {})[name] = record
        print(name, record, flush=True)
        save(results)


def sentinel2(args: argparse.Namespace, results: dict) -> None:
    for seed in args.seeds:
        key = f"seed{seed}"
        if key in results.get("sentinel2", {}):
            continue
        work = args.work / f"s2_seed{seed}"
        work.mkdir(parents=True, exist_ok=True)
        raster, mask = S2 / "images" / f"{args.date}.tif", S2 / "masks" / f"{args.date}.tif"
        n = clicks(args.date, args.per_class, seed, work / "clicks.gpkg")
        train_s = round(run(pointseg("map", "--raster", str(raster), "--points", str(work / "clicks.gpkg"),
                               "--class-field", "landcover", "--out", str(work / "map"),
                               "--set", f"model.encoder_weights={args.weights}", "--set", f"seed={seed}")), 1)
        table = work / "mask_classes.csv"  # every class of the mask: classes the run never saw count as errors
        table.write_text("value,name,r,g,b\n" + "".join(f"{v},{n},0,0,0\n" for v, n in enumerate(NAMES, 1)))
        info = json.loads((work / "map" / "run" / "run.json").read_text())["invocations"][-1]
        record: dict = {"clicks": n, "train_and_map_s": train_s, "trained_in": info.get("precision")}
        maps = {}
        for precision in PRECISIONS:
            out = work / precision
            seconds = round(run(pointseg("predict", "--run", str(work / "map" / "run"), "--input", str(raster),
                                         "--out", str(out), "--backend", "torch", "--precision", precision)), 1)
            maps[precision] = out / raster.name
            run(pointseg("evaluate", "--map", str(maps[precision]), "--mask", str(mask), "--classes", str(table),
                         "--out", str(out / "eval.json")))
            record[precision] = {"miou": json.loads((out / "eval.json").read_text())["miou"], "predict_s": seconds}
        with rasterio.open(maps["float32"]) as a, rasterio.open(maps["bf16"]) as b:
            x, y, valid = a.read(1), b.read(1), a.read_masks(1) > 0
        record["identical"] = float((x == y)[valid].mean())
        record["pixels"] = int(valid.sum())
        results.setdefault("sentinel2", {})[key] = record
        print(key, record, flush=True)
        save(results)


def save(results: dict) -> None:
    write_json(RESULTS, results)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("phase", choices=("loveda", "sentinel2"))
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--runs", type=Path, nargs="+", default=[])
    p.add_argument("--data-root", type=Path)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--date", default="strzegom_20220619_33u")
    p.add_argument("--per-class", type=int, default=10)
    p.add_argument("--weights", default=str(Path(__file__).resolve().parents[2] / "shared" / "weights"
                                            / "mobilenet_v2-b0353104.pth"))
    args = p.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["cpu"] = cpu_model()
    if args.phase == "loveda":
        loveda(args, results)
    else:
        sentinel2(args, results)


if __name__ == "__main__":
    main()
