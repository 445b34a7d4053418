"""Maps of large rasters, seams, Ray over many rasters and ONNX (BENCHMARKS.md section 5).

    python benchmarks/raster_scale.py --run runs/demo/run --data-root ../shared/data/loveda-mini --work /tmp/rs
    python benchmarks/raster_scale.py --only backends --sides 10000 --run RUN --data-root DATA --work /tmp/rs

The large rasters are mosaics of the real LoveDA tiles (1024 x 1024, 0.3 m) written into GeoTIFFs with a real CRS
(EPSG:32650, UTM 50N, where LoveDA was imaged; the tiles' placement is made up): 3 bands uint8, tiled 512,
deflate. Each map is made by ``pointseg predict`` in its own process, whose wall time and peak RSS
(``getrusage``) are recorded, with the map's own time and the time the model's forward passes took in it (logged by
``predict -v``). Results: ``benchmarks/results/raster_scale.json`` and ``seams.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.windows import Window

from pointseg.io import write_json

RESULTS = Path(__file__).parent / "results"
TILE_SIDE = 1024
CRS, GSD, ORIGIN = "EPSG:32650", 0.3, (650000.0, 3550000.0)


def pointseg(*args: str) -> list[str]:
    return [sys.executable, "-m", "pointseg.cli", *args]


def measured(cmd: list[str]) -> dict:
    """Run ``cmd``; its wall time and peak RSS (MB)."""
    print("+", shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - t0
    stderr = process.stderr.read().decode() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) not in (0,):
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{stderr[-2000:]}")
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024), "command": shlex.join(cmd),
            "stderr": stderr}


def loveda_tiles(root: Path) -> list[Path]:
    return sorted(root.glob("*/*/images_png/*.png"))


def build_mosaic(path: Path, side: int, tiles: list[Path], seed: int = 0, offset: int = 0) -> Path:
    """A ``side`` x ``side`` GeoTIFF of LoveDA tiles in a shuffled order, written tile by tile; the tiles' grid
    starts ``offset`` pixels before the raster's corner."""
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8", "crs": CRS,
               "transform": rasterio.Affine(GSD, 0, ORIGIN[0], 0, -GSD, ORIGIN[1]), "tiled": True,
               "blockxsize": 512, "blockysize": 512, "compress": "deflate", "bigtiff": "IF_SAFER",
               "photometric": "RGB"}
    tmp = path.with_suffix(".part.tif")
    print(f"building {path} ({side} x {side})", flush=True)
    with rasterio.open(tmp, "w", **profile) as dst:
        for row in range(-offset, side, TILE_SIDE):
            for col in range(-offset, side, TILE_SIDE):
                image = np.asarray(Image.open(tiles[rng.integers(len(tiles))]).convert("RGB"))
                top, left = max(row, 0), max(col, 0)
                h, w = min(row + TILE_SIDE, side) - top, min(col + TILE_SIDE, side) - left
                part = image[top - row:top - row + h, left - col:left - col + w]
                dst.write(part.transpose(2, 0, 1), window=Window(left, top, w, h))
    tmp.rename(path)
    return path


def large_maps(args: argparse.Namespace, tiles: list[Path], results: dict) -> None:
    for side in args.sides:
        key = f"{side // 1000}k"
        if key in results.get("large", {}):
            continue
        raster = build_mosaic(args.work / f"mosaic_{key}.tif", side, tiles)
        out = args.work / f"maps_{key}"
        run = measured(pointseg("-v", "predict", "--run", args.run, "--input", str(raster), "--out", str(out)))
        logged = re.search(r"(\d+) windows in ([\d.]+) s \(([\d.]+) MPix/s\), of which the model ([\d.]+) s",
                           run.pop("stderr"))
        if logged is None:
            raise RuntimeError("predict did not log its times")
        windows, map_s, mpix_s, forward_s = int(logged[1]), float(logged[2]), float(logged[3]), float(logged[4])
        results.setdefault("large", {})[key] = {
            "side": side, "megapixels": side * side / 1e6, "windows": windows, **run, "map_s": map_s,
            "mpix_s": mpix_s, "forward_s": forward_s, "overhead": round(map_s / forward_s, 3),
            "overhead_with_startup": round(run["wall_s"] / forward_s, 3)}
        print(key, results["large"][key], flush=True)
        save(results)


def seams(args: argparse.Namespace, tiles: list[Path], results: dict) -> None:
    """Label changes between neighbouring pixels across window borders vs elsewhere, without blending (windows
    side by side, overlap 0) and with it (the default overlap 0.5, Hann-weighted); ``--key`` other than
    ``backends`` names a re-measure (``seams_<key>``)."""
    key = "seams" if args.key == "backends" else f"seams_{args.key}"
    if key in results:
        return
    side = 4096
    border = round(512 / args.scale)  # window side at full resolution: the borders of the overlap-0 windows
    # the LoveDA tiles' own edges (other scenes side by side) lie half a tile away from those borders, at
    # multiples of 512 + 1024, so a scene change is never counted as a seam
    raster = build_mosaic(args.work / "mosaic_seams.tif", side, tiles, seed=1, offset=TILE_SIDE // 2)
    maps = {}
    for name, overlap in (("no blending (overlap 0)", "0"), ("blended (overlap 0.5)", "0.5")):
        out = args.maps / f"seams_{overlap}"
        measured(pointseg("predict", "--run", args.run, "--input", str(raster), "--out", str(out),
                          "--overlap", overlap))
        with rasterio.open(out / raster.name) as ds:
            maps[name] = ds.read(1)
    at = np.arange(border, side, border)
    report = {}
    for name, labels in maps.items():
        across_cols = labels[:, 1:] != labels[:, :-1]  # change between column j-1 and j at index j-1
        across_rows = labels[1:, :] != labels[:-1, :]
        on_border = np.concatenate([across_cols[:, at - 1].ravel(), across_rows[at - 1, :].ravel()])
        off = np.ones(side - 1, bool)
        off[at - 1] = False
        elsewhere = np.concatenate([across_cols[:, off].ravel(), across_rows[off, :].ravel()])
        report[name] = {"change_rate_on_borders": round(float(on_border.mean()), 4),
                        "change_rate_elsewhere": round(float(elsewhere.mean()), 4),
                        "ratio": round(float(on_border.mean() / max(elsewhere.mean(), 1e-12)), 2)}
    results[key] = {"side": side, "border_every": border, **report}
    if key == "seams":  # section 5's picture; a re-measure leaves it as it is
        picture(raster, maps, border, RESULTS / "seams.png", args.run)
    save(results)


def picture(raster: Path, maps: dict[str, np.ndarray], border: int, path: Path, run: str) -> None:
    """A 512-pixel crop centred on a corner of four overlap-0 windows: image, unblended and blended map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pointseg import runs

    classes = runs.load_run(run).classes
    r0 = c0 = border - 256
    with rasterio.open(raster) as ds:
        image = ds.read(window=Window(c0, r0, 512, 512)).transpose(1, 2, 0)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    panels = [(image, "image")] + [(classes.colorize(m[r0:r0 + 512, c0:c0 + 512]), n) for n, m in maps.items()]
    for ax, (shown, title) in zip(axes, panels, strict=True):
        ax.imshow(shown, interpolation="nearest")
        ax.axhline(256 - 0.5, color="white", lw=0.6, ls="--")
        ax.axvline(256 - 0.5, color="white", lw=0.6, ls="--")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.suptitle("a corner of four windows (dashed: their borders)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ray_many(args: argparse.Namespace, tiles: list[Path], results: dict) -> None:
    if "ray" in results:
        return
    folder = args.work / "many"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(8):
        build_mosaic(folder / f"scene{i}.tif", 2048, tiles, seed=10 + i)
    plain = measured(pointseg("predict", "--run", args.run, "--input", str(folder), "--out",
                              str(args.work / "many_plain")))
    ray = measured(pointseg("predict", "--run", args.run, "--input", str(folder), "--out",
                            str(args.work / "many_ray"), "--ray", "2"))
    same, total = 0, 0
    for i in range(8):
        with rasterio.open(args.work / "many_plain" / f"scene{i}.tif") as a, \
                rasterio.open(args.work / "many_ray" / f"scene{i}.tif") as b:
            x, y = a.read(1), b.read(1)
            same, total = same + int((x == y).sum()), total + x.size
    plain.pop("stderr"), ray.pop("stderr")
    results["ray"] = {"rasters": 8, "side": 2048, "plain": plain, "ray_2_actors": ray,
                      "throughput_ratio": round(plain["wall_s"] / ray["wall_s"], 3),
                      "identical_pixels": same / total}
    save(results)


def onnx_speed(args: argparse.Namespace, tiles: list[Path], results: dict) -> None:
    if "onnx" in results:
        return
    path = args.work / "demo.onnx"
    measured(pointseg("export", "--run", args.run, "--out", str(path), "--output", "logits", "--tile", "512"))
    code = f"""
import json, time, numpy as np, torch, onnxruntime as ort
from PIL import Image
from pointseg import runs
model = runs.load_run({args.run!r}).model
tiles = {[str(t) for t in tiles[:4]]!r}
x = np.stack([np.asarray(Image.open(t).convert("RGB").resize((512, 512), Image.BOX)) for t in tiles])
x = torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32) / 255)
options = ort.SessionOptions()
options.intra_op_num_threads = torch.get_num_threads()
session = ort.InferenceSession({str(path)!r}, options, providers=["CPUExecutionProvider"])
timing = {{}}
with torch.no_grad():
    want = model(x.contiguous(memory_format=torch.channels_last)).numpy()
    for name, f in (("torch", lambda: model(x.contiguous(memory_format=torch.channels_last))),
                    ("onnxruntime", lambda: session.run(None, {{"image": x.numpy()}}))):
        f()
        t0 = time.perf_counter()
        for _ in range({args.sample_batches}):
            f()
        timing[name] = (time.perf_counter() - t0) / {args.sample_batches}
got = session.run(None, {{"image": x.numpy()}})[0]
print(json.dumps({{"per_batch_s": timing, "max_abs_logit_difference": float(np.abs(got - want).max()),
                  "logit_range": [float(want.min()), float(want.max())],
                  "argmax_agreement": float((got.argmax(1) == want.argmax(1)).mean()),
                  "threads": torch.get_num_threads()}}))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    report = json.loads(out.splitlines()[-1])
    report["speed_ratio_ort_over_torch"] = round(report["per_batch_s"]["torch"] / report["per_batch_s"]["onnxruntime"],
                                                 3)
    results["onnx"] = {"batch": "4 x 3 x 512 x 512 (real LoveDA tiles, area-resized)", **report}
    save(results)


def backend_maps(args: argparse.Namespace, tiles: list[Path], results: dict) -> None:
    """Issue 23's protocol (BENCHMARKS 11): the same run maps the same mosaics with each backend, one process at a
    time (torch re-measured in the same session); the share of pixels identical to torch's map; each backend's mIoU
    on the Val split of ``--data-root``."""
    import torch

    key_of = args.key  # the results' section: one per code version measured in a session
    for backend in args.backends:  # first: onnxruntime builds its graph of 512 x 512 model pixels here
        cell = f"val_{backend}"
        if cell in results.get(key_of, {}):
            continue
        out = args.work / f"val_{backend}.json"
        run = measured(pointseg("evaluate", "--run", args.run, "--data-root", args.data_root, "--split", "Val",
                                "--out", str(out), *backend_args(backend)))
        run.pop("stderr")
        results.setdefault(key_of, {})[cell] = {"miou": json.loads(out.read_text())["miou"], **run}
        save(results)
    for side in args.sides:
        key = f"{side // 1000}k"
        raster = build_mosaic(args.work / f"mosaic_{key}.tif", side, tiles)
        for backend in args.backends:
            cell = f"{key}_{backend}"
            if cell in results.get(key_of, {}):
                continue
            out = args.maps / f"maps_{cell}"
            run = measured(pointseg("-v", "predict", "--run", args.run, "--input", str(raster), "--out", str(out),
                                    *backend_args(backend)))
            stderr = run.pop("stderr")
            logged = re.search(r"(\d+) windows in ([\d.]+) s \(([\d.]+) MPix/s\), of which the model ([\d.]+) s",
                               stderr)
            if logged is None:
                raise RuntimeError(f"predict did not log its times:\n{stderr[-2000:]}")
            map_s, forward_s = float(logged[2]), float(logged[4])
            record = {"side": side, "backend": backend, "windows": int(logged[1]), **run, "map_s": map_s,
                      "mpix_s": float(logged[3]), "forward_s": forward_s, "overhead": round(map_s / forward_s, 3),
                      "threads": torch.get_num_threads()}
            if backend != "torch" and (args.maps / f"maps_{key}_torch" / raster.name).exists():
                record["identical_to_torch"] = identical(out / raster.name, args.maps / f"maps_{key}_torch" /
                                                         raster.name)
            if args.reference:  # the map of today's torch path, measured in the same session
                record["identical_to_reference"] = identical(out / raster.name, args.reference /
                                                             f"maps_{key}_torch" / raster.name)
            results.setdefault(key_of, {})[cell] = record
            print(cell, record, flush=True)
            save(results)


def product_costs(args: argparse.Namespace, tiles: list[Path], results: dict) -> None:
    """What ``--sieve 25``, ``--vector`` and ``--aoi`` (a box of the raster's central quarter) cost on the 10k mosaic
    with the default backend, against the plain map of the same session (the ``10k_onnxruntime`` cell)."""
    raster = build_mosaic(args.work / "mosaic_10k.tif", 10000, tiles)
    with rasterio.open(raster) as ds:
        b = ds.bounds
    dx, dy = (b.right - b.left) / 4, (b.top - b.bottom) / 4
    quarter = f"{b.left + dx},{b.bottom + dy},{b.right - dx},{b.top - dy}"
    for name, extra in (("plain", []), ("sieve25", ["--sieve", "25"]), ("vector", ["--vector"]),
                        ("aoi_quarter", ["--aoi", quarter])):
        if name in results.get("products", {}):
            continue
        out = args.work / f"products_{name}"
        run = measured(pointseg("-v", "predict", "--run", args.run, "--input", str(raster), "--out", str(out),
                                *extra))
        run.pop("stderr")
        record = {**run}
        if name == "vector":
            import pyogrio

            record["polygons"] = int(pyogrio.read_info(out / f"{raster.stem}.gpkg")["features"])
        results.setdefault("products", {})[name] = record
        print(name, record, flush=True)
        save(results)


def resume_cost(args: argparse.Namespace, tiles: list[Path], results: dict) -> None:
    """``predict --resume`` on the 10k mosaic with the default backend: uninterrupted (what keeping the rows
    costs), and killed (SIGKILL) once half of its window rows are done, then run again; both maps against the
    plain map of the same session (the ``10k_onnxruntime`` cell of ``--key``)."""
    import signal

    key = "resume" if args.key == "backends" else f"resume_{args.key}"  # a re-measure: its own section
    raster = build_mosaic(args.work / "mosaic_10k.tif", 10000, tiles)
    plain = args.maps / "maps_10k_onnxruntime" / raster.name
    cmd = pointseg("-v", "predict", "--run", args.run, "--input", str(raster), "--resume")
    if "whole" not in results.get(key, {}):
        out = args.maps / "resume_whole"
        run = measured([*cmd, "--out", str(out)])
        run.pop("stderr")
        results.setdefault(key, {})["whole"] = {**run, "identical_to_plain": identical(out / raster.name,
                                                                                             plain)}
        save(results)
    if "killed" not in results.get(key, {}):
        out = args.maps / "resume_killed"
        progress = out / f".{raster.name}.partial" / "progress.json"
        print("+", shlex.join([*cmd, "--out", str(out)]), "(killed half way)", flush=True)
        t0 = time.perf_counter()
        process = subprocess.Popen([*cmd, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            time.sleep(0.5)
            done = json.loads(progress.read_text())["windows_done"] if progress.exists() else 0
            if done >= args.kill_at:
                process.send_signal(signal.SIGKILL)
                process.wait()
                break
        killed_s = time.perf_counter() - t0
        run = measured([*cmd, "--out", str(out)])
        run.pop("stderr")
        results.setdefault(key, {})["killed"] = {
            "killed_after_s": round(killed_s, 1), "window_rows_done_at_kill": done, **run,
            "identical_to_plain": identical(out / raster.name, plain), "partial_left": progress.parent.exists()}
        save(results)


def backend_args(backend: str) -> list[str]:
    """The command-line arguments of a backend cell: ``int8`` is onnxruntime's int8 graph."""
    return ["--backend", "onnxruntime", "--int8"] if backend == "int8" else ["--backend", backend]


def identical(a: Path, b: Path, rows: int = 1000) -> float:
    """The share of pixels two maps give the same class (read in bands of ``rows`` rows)."""
    same = total = 0
    with rasterio.open(a) as x, rasterio.open(b) as y:
        for top in range(0, x.height, rows):
            window = Window(0, top, x.width, min(rows, x.height - top))
            same += int((x.read(1, window=window) == y.read(1, window=window)).sum())
            total += window.width * window.height
    return same / total


def save(results: dict) -> None:
    write_json(RESULTS / "raster_scale.json", results)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a trained LoveDA run (e.g. the demo's runs/demo/run)")
    p.add_argument("--data-root", required=True, help="LoveDA root whose tiles are mosaicked")
    p.add_argument("--work", type=Path, required=True, help="scratch folder for mosaics and maps")
    p.add_argument("--sides", type=int, nargs="+", default=[10000, 20000])
    p.add_argument("--scale", type=float, default=0.5, help="the run's data.scale")
    p.add_argument("--sample-batches", type=int, default=12)
    p.add_argument("--only", nargs="+",
                   choices=["large", "seams", "ray", "onnx", "backends", "products", "resume"],
                   default=["large", "seams", "ray", "onnx"])
    p.add_argument("--backends", nargs="+", default=["torch", "onnxruntime", "int8"],
                   help="backends phase: which (int8: onnxruntime's int8 graph)")
    p.add_argument("--key", default="backends", help="backends phase: the results' section (one per code version)")
    p.add_argument("--maps", type=Path, help="folder for the maps of the backends and resume phases (default --work)")
    p.add_argument("--reference", type=Path, help="backends phase: a --maps folder of another code version's maps, "
                                                  "whose torch maps each map is compared to")
    p.add_argument("--kill-at", type=int, default=10, help="resume phase: window rows done when the run is killed")
    args = p.parse_args()
    args.maps = args.maps or args.work
    args.work.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    existing = RESULTS / "raster_scale.json"
    results = json.loads(existing.read_text()) if existing.exists() else {}
    results["machine"] = {"cpus": os.cpu_count(), "rss_limit": resource.getrlimit(resource.RLIMIT_AS)[0]}
    tiles = loveda_tiles(Path(args.data_root))
    steps = {"large": large_maps, "seams": seams, "ray": ray_many, "onnx": onnx_speed, "backends": backend_maps,
             "products": product_costs, "resume": resume_cost}
    for name in args.only:
        steps[name](args, tiles, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
