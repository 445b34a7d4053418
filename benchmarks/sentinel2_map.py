"""A real raster mapped from clicks: Sentinel-2 (10 bands, uint16) over Strzegom (BENCHMARKS.md section 5).

    python benchmarks/sentinel2_map.py --work /tmp/s2 --seeds 0 1 2

Per seed: ``--per-class`` clicks per class are drawn (seeded) from the labelled pixels of one date's mask and
written as a GeoPackage in EPSG:3035 (the raster is EPSG:32633), as an analyst's QGIS layer would be; ``pointseg
map`` with its defaults (plus the offline encoder weights) trains on that date and maps it; ``pointseg evaluate``
scores the run's maps of the same date and of other dates against their masks (0 = unlabelled, not scored; the
masks are drawn polygons covering about 30% of the scene, so this is accuracy on those polygons). Results:
``benchmarks/results/sentinel2_map.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyogrio.raw
import pyproj
import rasterio
import shapely

from common import RECIPE_V1
from pointseg.io import write_json

S2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "geo" / "sentinel2-strzegom"
NAMES = ["conifer forest", "mixed forest", "urban", "crops", "bare soil", "grassland", "roads", "water",
         "crops in vegetation", "quarries"]  # mask values 1..10 (../shared/data/README.md)
RESULTS = Path(__file__).parent / "results" / "sentinel2_map.json"


def run(cmd: list[str]) -> float:
    print("+", shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def clicks(date: str, per_class: int, seed: int, path: Path) -> int:
    """``per_class`` pixels of each class of ``date``'s mask, as points in EPSG:3035 with a ``landcover`` name."""
    with rasterio.open(S2 / "masks" / f"{date}.tif") as ds:
        mask, transform, crs = ds.read(1).astype(int), ds.transform, ds.crs
    rng = np.random.default_rng(seed)
    x, y, names = [], [], []
    for value in range(1, len(NAMES) + 1):
        rows, cols = np.nonzero(mask == value)
        for i in rng.choice(len(rows), min(per_class, len(rows)), replace=False):
            cx, cy = transform @ (cols[i] + 0.5, rows[i] + 0.5)
            x.append(cx)
            y.append(cy)
            names.append(NAMES[value - 1])
    lon, lat = pyproj.Transformer.from_crs(crs.to_wkt(), "EPSG:3035", always_xy=True).transform(x, y)
    pyogrio.raw.write(path, geometry=np.array(shapely.to_wkb(shapely.points(lon, lat)), dtype=object),
                      field_data=[np.array(names, dtype=object)], fields=["landcover"], crs="EPSG:3035",
                      geometry_type="Point", driver="GPKG")
    return len(names)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-date", default="strzegom_20220619_33u")
    p.add_argument("--test-dates", nargs="+", default=["strzegom_20220719_33u", "strzegom_20210619_33u"])
    p.add_argument("--per-class", type=int, default=10)
    p.add_argument("--weights", default=str(Path(__file__).resolve().parents[2] / "shared" / "weights"
                                            / "mobilenet_v2-b0353104.pth"))
    args = p.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for seed in args.seeds:
        key = f"seed{seed}"
        if key in results:
            continue
        work = args.work / key
        work.mkdir(parents=True, exist_ok=True)
        n = clicks(args.train_date, args.per_class, seed, work / "clicks.gpkg")
        cli = [sys.executable, "-m", "pointseg.cli"]
        raster = S2 / "images" / f"{args.train_date}.tif"
        map_s = run([*cli, "map", "--raster", str(raster), "--points", str(work / "clicks.gpkg"), "--class-field",
                     "landcover", "--out", str(work / "map"), *[a for s in RECIPE_V1 for a in ("--set", s)],
                     "--set", f"model.encoder_weights={args.weights}",
                     "--set", f"seed={seed}"])
        names = [line.split(",")[1] for line in (work / "map" / "points.classes.csv").read_text().splitlines()[1:]]
        table = work / "mask_classes.csv"  # every class of the masks: those the run never saw count as errors
        table.write_text("value,name,r,g,b\n" + "".join(f"{v},{n},0,0,0\n" for v, n in enumerate(NAMES, 1)))
        scores = {}
        for date in [args.train_date, *args.test_dates]:
            out = work / f"eval_{date}.json"
            run([*cli, "evaluate", "--run", str(work / "map" / "run"), "--raster", str(S2 / "images" / f"{date}.tif"),
                 "--mask", str(S2 / "masks" / f"{date}.tif"), "--classes", str(table), "--out", str(out)])
            metrics = json.loads(out.read_text())
            scores[date] = {"miou": metrics["miou"], "pixel_accuracy": metrics["pixel_accuracy"],
                            "per_class_iou": metrics["per_class_iou"]}
        results[key] = {"clicks": n, "classes": names, "map_seconds": round(map_s, 1), "scores": scores}
        write_json(RESULTS, results)
        print(key, {d: round(s["miou"], 3) for d, s in scores.items()}, flush=True)


if __name__ == "__main__":
    main()
