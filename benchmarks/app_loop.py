"""The app's loop, timed through its HTTP API (BENCHMARKS.md section 10): imagery tile latency on a 10k x 10k
GeoTIFF, "Update map" to a repainted view with features cached (idle, and while "Train fully" runs), and a
simulated analyst's rounds of corrective clicks on the Sentinel-2 date with its mask.

    python benchmarks/app_loop.py --work /tmp/app-bench

The API is called in-process (Starlette's test client: the whole ASGI app, guard included, without a socket).
Results: ``benchmarks/results/app_loop.json``.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from fastapi.testclient import TestClient
from rasterio.transform import from_origin

from pointseg.app.project import Project
from pointseg.app.server import create_app
from pointseg.app.session import Session
from pointseg.data.points import corrective_points, image_rng, sample_points
from pointseg.io import write_json

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared"
WEIGHTS = SHARED / "weights" / "mobilenet_v2-b0353104.pth"
S2 = SHARED / "data" / "geo" / "sentinel2-strzegom"
DATE = "strzegom_20220719_33u"
NAMES = ["conifer forest", "mixed forest", "urban", "crops", "bare soil", "grassland", "roads", "water",
         "crops in vegetation", "quarries"]
TOKEN = "benchmark"
RESULTS = HERE / "results" / "app_loop.json"


def client_for(project: Project, session: Session) -> TestClient:
    return TestClient(create_app(project, TOKEN, session=session), base_url="http://127.0.0.1:8765",
                      headers={"authorization": f"Bearer {TOKEN}"})


def tile_latency(work: Path, tiles: int = 300) -> dict:
    """A 10k x 10k uint8 tiled GeoTIFF without overviews: the first view, then random tiles at every zoom once the
    overviews are built."""
    raster = work / "big.tif"
    if not raster.exists():
        rng = np.random.default_rng(0)
        with rasterio.open(raster, "w", driver="GTiff", width=10000, height=10000, count=3, dtype="uint8", tiled=True,
                           blockxsize=256, blockysize=256, crs="EPSG:32633",
                           transform=from_origin(500000, 5600000, 0.3, 0.3)) as ds:
            for top in range(0, 10000, 1000):
                block = rng.integers(0, 255, (3, 1000, 10000), dtype=np.uint8)
                ds.write(block, window=rasterio.windows.Window(0, top, 10000, 1000))
    shutil.rmtree(work / "big-project", ignore_errors=True)
    project = Project.create(work / "big-project", {"big": {"height": 10000, "width": 10000}}, [{"name": "a"}],
                             {"rasters": [str(raster)]}, {})
    t0 = time.perf_counter()
    client = client_for(project, Session(project, {}))
    info = client.get("/api/raster").json()
    first = client.get("/api/tiles/image/0/0/0.png")
    first_view = time.perf_counter() - t0
    assert first.status_code == 200
    vrt = work / "big-project" / "overviews" / "big.vrt"
    t0 = time.perf_counter()
    while not vrt.exists() and time.perf_counter() - t0 < 600:
        time.sleep(0.2)
    overviews = time.perf_counter() - t0
    rng, levels, seconds = np.random.default_rng(1), info["levels"], []
    for _ in range(tiles):
        z = int(rng.integers(0, levels + 1))
        n = -(-10000 // (256 * 2 ** (levels - z)))
        x, y = int(rng.integers(0, n)), int(rng.integers(0, n))
        t = time.perf_counter()
        assert client.get(f"/api/tiles/image/{z}/{x}/{y}.png").status_code == 200
        seconds.append(time.perf_counter() - t)
    ms = np.array(seconds) * 1000
    return {"first_view_s": first_view, "overviews_ready_after_s": overviews, "tiles": tiles, "levels": levels,
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "max_ms": float(ms.max())}


def repaint(client: TestClient, levels: int, size: tuple[int, int]) -> tuple[float, dict]:
    """Update map, then the map tiles of the whole raster at its native zoom (the 'current view')."""
    t0 = time.perf_counter()
    result = client.post("/api/update").json()
    n = [-(-s // 256) for s in size]
    for y in range(n[0]):
        for x in range(n[1]):
            assert client.get(f"/api/tiles/map/{levels}/{x}/{y}.png").status_code == 200
    return time.perf_counter() - t0, result


def analyst(work: Path, seed: int, start: int = 100, step: int = 50, rounds: int = 3) -> dict:
    """Class-balanced first clicks on the Sentinel-2 date, then rounds of corrective clicks where the app's map
    disagrees with the mask; the app's own mIoU per round and the repaint time."""
    table = work / "s2_classes.csv"
    table.write_text("value,name,r,g,b\n" + "".join(f"{v},{n},0,0,0\n" for v, n in enumerate(NAMES, 1)))
    raster, mask_path = S2 / "images" / f"{DATE}.tif", S2 / "masks" / f"{DATE}.tif"
    with rasterio.open(mask_path) as ds:
        values = ds.read(1).astype(np.int64)
    labelled = np.where(values > 0, values - 1, 255).astype(np.uint8)
    folder = work / f"s2-project-seed{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    settings = {"model": {"encoder_weights": str(WEIGHTS), "hypercolumn_stages": [0, 1, 2, 3, 4, 5],
                          "hypercolumn_scale": 0.25}, "data": {"scale": 1.0, "cache_dir": str(work / "cache")},
                "seed": seed}
    project = Project.create(folder, {DATE: {"height": labelled.shape[0], "width": labelled.shape[1]}},
                             [{"name": n} for n in NAMES],
                             {"rasters": [str(raster)], "mask": str(mask_path), "class_values": list(range(1, 11))},
                             settings)
    session = Session(project, settings)
    client = client_for(project, session)
    levels = client.get("/api/raster").json()["levels"]
    clicks = sample_points(labelled, start, image_rng(seed, DATE), "class-balanced")
    out = []
    for r in range(rounds + 1):
        for row, col, cls in clicks[len(project.clicks()):].tolist():
            assert client.post("/api/clicks", json={"image": DATE, "row": row, "col": col, "class": cls}
                               ).status_code == 201
        seconds, result = repaint(client, levels, labelled.shape)
        again, _ = repaint(client, levels, labelled.shape)  # features cached: the loop's steady state
        out.append({"clicks": len(project.clicks()), "miou": result["metrics"]["miou"],
                    "first_repaint_s": seconds, "repaint_s": again, "fit_s": result["seconds"]["fit"]})
        print(f"seed {seed} round {r}: {out[-1]}", flush=True)
        predicted = session.classes_of(DATE, (0, 0, *labelled.shape))
        clicks = corrective_points(labelled, predicted, clicks, step, np.random.default_rng([seed, r]))
    busy = None
    if seed == 0:  # one repaint while the full recipe trains in the background
        client.post("/api/train")
        time.sleep(20)
        busy, _ = repaint(client, levels, labelled.shape)
        client.post("/api/train/cancel")
    return {"seed": seed, "rounds": out, "repaint_while_training_s": busy}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/app-bench"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    result = {"tiles": tile_latency(args.work), "analyst": [analyst(args.work, s) for s in args.seeds]}
    write_json(RESULTS, result)
    print(result["tiles"])


if __name__ == "__main__":
    main()
