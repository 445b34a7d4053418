"""The app's loop, timed through its HTTP API (BENCHMARKS.md section 10): imagery tile latency on a 10k x 10k
GeoTIFF, the first view of a 20k x 20k GeoTIFF (page cache cold and warm), "Update map" to a repainted view with
features cached (idle, and while "Train fully" runs), and a simulated analyst's rounds of corrective clicks on the
Sentinel-2 date with its mask and on the loveda-mini Train tiles.

    python benchmarks/app_loop.py tiles sentinel2 --work /tmp/app-bench   # the first part's phases
    python benchmarks/app_loop.py big loveda --work /tmp/app-bench        # 20k first view; loveda-mini tiles
    python benchmarks/app_loop.py features --work /tmp/app-bench          # a first update without cached features

The API is called in-process (Starlette's test client: the whole ASGI app, guard included, without a socket).
Results: ``benchmarks/results/app_loop.json`` (one key per phase; a phase run again replaces its key).

Protocol of the ``big`` and ``loveda`` phases (written before their runs):

- big: a generated 20k x 20k uint8 3-band tiled (256) GeoTIFF without overviews, uncompressed (1.2 GB). Cold: the
  file's pages are dropped from the page cache (fsync + posix_fadvise DONTNEED) before the app starts; warm: run
  again right after; three times, after `sync` (added after a run where the cold read overlapped the write-back
  of the 10k raster the tiles phase had just written). "First view" = creating the app (the stretch; the overview
  build waits for it) + GET raster + the 9 image tiles of zoom 2, the zoom Leaflet fits a 20k raster into a
  1200 x 760 window (one after another; the page asks for them in parallel). Also the zoom-0 tile alone, and when
  the overviews are ready.
- loveda: the section 9 "rounds" protocol through the app: `pointseg app --data-root loveda-mini --split Train
  --mask --points` (the CLI's start) with the 10 uniform clicks/tile of section 9's seed, the selected stages and
  grid, ImageNet MobileNetV2; then 4 rounds of +10 corrective clicks/tile drawn by `corrective` from the app's maps
  (the same function, seed and order as section 9); each round "Update map" then the 16 map tiles of one tile's
  1024 x 1024 view at native zoom, timed twice (the second with every feature cached). The app's mIoU (its
  `--mask` score over the 16 tiles) is compared with section 9's corrective column, which it should equal if the
  app adds nothing of its own. Seeds 0-2; seed 0 also repaints 20 s and 120 s after "Train fully" starts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
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
        write_random(raster, 10000)
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


def repaint(client: TestClient, levels: int, size: tuple[int, int], image: str | None = None) -> tuple[float, dict]:
    """Update map, then the map tiles of ``image`` (default: the first) at its native zoom (the 'current view');
    the seconds that took, and the round's answer with its score against the mask and click accuracy, which
    follow in the background (``metrics_after_s``: seconds from Update map until they are there)."""
    t0 = time.perf_counter()
    result = client.post("/api/update").json()
    n = [-(-s // 256) for s in size]
    params = {"image": image} if image else {}
    for y in range(n[0]):
        for x in range(n[1]):
            assert client.get(f"/api/tiles/map/{levels}/{x}/{y}.png", params=params).status_code == 200
    seconds = time.perf_counter() - t0
    while True:
        answer = client.get("/api/accuracy").json()
        if answer["metrics"] is not None and "metrics_after_s" not in result:
            result["metrics_after_s"] = time.perf_counter() - t0
        if not answer["pending"]:
            break
        time.sleep(0.05)
    result["done_after_s"] = time.perf_counter() - t0
    return seconds, {**result, **answer}


def first_views(work: Path, repeats: int = 3) -> list[dict]:
    """``first_view`` ``repeats`` times, after the disk has written back what earlier phases wrote."""
    os.sync()
    return [first_view(work) for _ in range(repeats)]


def first_view(work: Path, size: int = 20000, zoom: int = 2) -> dict:
    """The first view of a large GeoTIFF without overviews, with its pages dropped from the page cache (cold) and
    again (warm)."""
    raster = work / f"big{size // 1000}k.tif"
    if not raster.exists():
        write_random(raster, size)
        os.sync()
    out = {}
    for state in ("cold", "warm"):
        if state == "cold":
            fd = os.open(raster, os.O_RDONLY)
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
        folder = work / f"big{size // 1000}k-project-{state}"
        shutil.rmtree(folder, ignore_errors=True)
        project = Project.create(folder, {raster.stem: {"height": size, "width": size}}, [{"name": "a"}],
                                 {"rasters": [str(raster)]}, {})
        t0 = time.perf_counter()
        client = client_for(project, Session(project, {}))
        info = client.get("/api/raster").json()
        n = -(-size // (256 * 2 ** (info["levels"] - zoom)))
        for y in range(n):
            for x in range(n):
                assert client.get(f"/api/tiles/image/{zoom}/{x}/{y}.png").status_code == 200
        view = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert client.get("/api/tiles/image/0/0/0.png").status_code == 200
        zoom0 = time.perf_counter() - t0
        vrt = folder / "overviews" / f"{raster.stem}.vrt"
        while not vrt.exists() and time.perf_counter() - t0 < 900:
            time.sleep(0.2)
        out[state] = {"first_view_s": view, "tiles": n * n, "zoom": zoom, "zoom0_tile_s": zoom0,
                      "overviews_ready_after_s": time.perf_counter() - t0 + view}
        print(f"first view {size}^2 {state}: {out[state]}", flush=True)
    return out


def write_random(raster: Path, size: int) -> None:
    """A ``size`` x ``size`` uint8 3-band tiled GeoTIFF of random texture, without overviews."""
    rng = np.random.default_rng(0)
    with rasterio.open(raster, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", tiled=True,
                       blockxsize=256, blockysize=256, crs="EPSG:32633",
                       transform=from_origin(500000, 5600000, 0.3, 0.3)) as ds:
        for top in range(0, size, 1000):
            block = rng.integers(0, 255, (3, min(1000, size - top), size), dtype=np.uint8)
            ds.write(block, window=rasterio.windows.Window(0, top, size, min(1000, size - top)))


def analyst(work: Path, seed: int, start: int = 100, step: int = 50, rounds: int = 3, cache: str = "cache",
            extra: dict | None = None, busy_repaint: bool = True) -> dict:
    """Class-balanced first clicks on the Sentinel-2 date, then rounds of corrective clicks where the app's map
    disagrees with the mask; the app's own mIoU per round and the repaint time (``extra``: more settings)."""
    table = work / "s2_classes.csv"
    table.write_text("value,name,r,g,b\n" + "".join(f"{v},{n},0,0,0\n" for v, n in enumerate(NAMES, 1)))
    raster, mask_path = S2 / "images" / f"{DATE}.tif", S2 / "masks" / f"{DATE}.tif"
    with rasterio.open(mask_path) as ds:
        values = ds.read(1).astype(np.int64)
    labelled = np.where(values > 0, values - 1, 255).astype(np.uint8)
    folder = work / f"s2-project-seed{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    settings = {"model": {"encoder_weights": str(WEIGHTS), "hypercolumn_stages": [0, 1, 2, 3, 4, 5],
                          "hypercolumn_scale": 0.25}, "data": {"scale": 1.0, "cache_dir": str(work / cache)},
                "seed": seed, **(extra or {})}
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
        again, second = repaint(client, levels, labelled.shape)  # features cached: the loop's steady state
        out.append({"clicks": len(project.clicks()), "miou": result["metrics"]["miou"],
                    "metrics_after_s": second["metrics_after_s"], "done_after_s": second["done_after_s"],
                    "first_repaint_s": seconds, "repaint_s": again, "fit_s": result["seconds"]["fit"]})
        print(f"seed {seed} round {r}: {out[-1]}", flush=True)
        predicted = session.classes_of(DATE, (0, 0, *labelled.shape))
        clicks = corrective_points(labelled, predicted, clicks, step, np.random.default_rng([seed, r]))
    busy = None
    if seed == 0 and rounds and busy_repaint:  # one repaint while the full recipe trains in the background
        client.post("/api/train")
        time.sleep(20)
        busy, _ = repaint(client, levels, labelled.shape)
        client.post("/api/train/cancel")
    return {"seed": seed, "rounds": out, "repaint_while_training_s": busy}


def loveda_analyst(work: Path, seed: int, rounds: int = 4, cache: str = "cache-loveda") -> dict:
    """Section 9's corrective rounds through the app on the loveda-mini Train tiles (see the module doc)."""
    sys.path.insert(0, str(HERE))
    import fast_loop
    from pointseg.app.start import start_tiles
    from pointseg.cli import parser
    from pointseg.data.points import corrective

    first = fast_loop.simulated(work, fast_loop.LOVEDA, "Train", fast_loop.START, seed)
    sets = [*fast_loop.BASE, f"data.cache_dir={work / cache}", f"seed={seed}", *fast_loop.chosen_sets()]
    folder = work / f"loveda-project-seed{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    args = parser().parse_args(["app", "--data-root", str(fast_loop.LOVEDA), "--split", "Train", "--mask",
                                "--points", str(first), "--project", str(folder),
                                *[a for s in sets for a in ("--set", s)]])
    project = start_tiles(args)
    session = Session(project, project.info["settings"])
    client = client_for(project, session)
    view = session.source.refs[0].id
    info = client.get("/api/raster", params={"image": view}).json()
    size = (info["height"], info["width"])
    cli = json.loads(fast_loop.result_path("rounds", "corrective", seed).read_text())["rounds"]
    out = []
    for r in range(rounds + 1):
        seconds, result = repaint(client, info["levels"], size, view)
        again, second = repaint(client, info["levels"], size, view)  # features cached: the loop's steady state
        out.append({"clicks_per_tile": fast_loop.START + fast_loop.STEP * r, "clicks": len(project.clicks()),
                    "miou": result["metrics"]["miou"], "cli_miou": cli[r]["Train"]["miou"],
                    "first_repaint_s": seconds, "repaint_s": again, "seconds": second["seconds"],
                    "metrics_after_s": second["metrics_after_s"], "done_after_s": second["done_after_s"]})
        print(f"loveda seed {seed} round {r}: {out[-1]}", flush=True)
        if r == rounds:
            break
        made = session.points()
        maps = {ref.id: session.classes_of(ref.id, (0, 0, *session.source.size(ref))) for ref in session.source.refs}
        more = corrective(session.source, maps, made, fast_loop.STEP, seed)
        for image, points in more.images.items():
            for row, col, cls in points[len(made.images.get(image, [])):].tolist():
                assert client.post("/api/clicks", json={"image": image, "row": row, "col": col, "class": cls}
                                   ).status_code == 201
    busy = {}
    if seed == 0 and rounds:  # repaints while the full recipe trains in the background
        client.post("/api/train")
        started = time.perf_counter()
        for at in (20, 120):
            time.sleep(max(0.0, at - (time.perf_counter() - started)))
            busy[f"{at}s"], _ = repaint(client, info["levels"], size, view)
            print(f"loveda repaint {at} s into Train fully: {busy[f'{at}s']:.2f} s", flush=True)
        busy["training"] = client.get("/api/train").json()
        client.post("/api/train/cancel")
    return {"seed": seed, "rounds": out, "repaint_while_training_s": busy}


PHASES = ("tiles", "big", "sentinel2", "loveda", "features")


def feature_times(work: Path) -> dict:
    """The first update of a project whose encoder features are not cached yet (a fresh cache), seed 0: the
    feature time an analyst waits for once per image."""
    out = {}
    for name, run in (("sentinel2", lambda cache: analyst(work, 0, rounds=0, cache=cache)),
                      ("loveda", lambda cache: loveda_analyst(work, 0, rounds=0, cache=cache))):
        cache = f"cache-fresh-{name}"
        shutil.rmtree(work / cache, ignore_errors=True)
        first = run(cache)["rounds"][0]
        out[name] = {"first_repaint_s": first["first_repaint_s"], "repaint_s": first["repaint_s"]}
        print(f"features {name}: {out[name]}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("phases", nargs="+", choices=PHASES)
    p.add_argument("--work", type=Path, default=Path("/tmp/app-bench"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    result = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for phase in args.phases:
        if phase == "tiles":
            result["tiles"] = tile_latency(args.work)
        elif phase == "big":
            result["first_view_20k"] = first_views(args.work)
        elif phase == "features":
            result["features"] = feature_times(args.work)
        elif phase == "sentinel2":
            result["analyst"] = [analyst(args.work, s) for s in args.seeds]
        else:
            result["loveda"] = [loveda_analyst(args.work, s) for s in args.seeds]
        write_json(RESULTS, result)


if __name__ == "__main__":
    main()
