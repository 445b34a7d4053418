"""The analyst's first hour (BENCHMARKS.md section 12): help at once, how long training takes, where suggestions land.

    python benchmarks/first_hour.py help --key after
    python benchmarks/first_hour.py help --key before --src /path/to/checkout-of-b529da4/src
    python benchmarks/first_hour.py steps --work /tmp/first-hour
    python benchmarks/first_hour.py suggest --key after --work /tmp/first-hour
    PYTHONPATH=/path/to/old/src python benchmarks/first_hour.py suggest --key before --work /tmp/first-hour-before

``help``: wall time of ``pointseg --help`` and ``pointseg map --help`` (10 runs after a warm-up; the code at
``--src``, else the installed one). ``steps``: the default recipe's steps per second as ``progress.json`` gives it
(the last 60 s) in 80-step runs: loveda-mini Train at 20 clicks/tile, the Sentinel-2 scene of 2022-07-19 at 10
clicks/class, the packaged Landsat sample, and the Sentinel-2 run with a copy of itself beside it. ``suggest``: the
rows and scores of 10 suggested clicks, in the app (Landsat sample) and from ``pointseg suggest`` (Sentinel-2), with
whatever ``pointseg`` is importable. Results: ``benchmarks/results/first_hour.json`` (with the CPU's model).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common import pointseg
from sentinel2_map import S2, clicks

RESULTS = Path(__file__).parent / "results" / "first_hour.json"
SHARED = Path(__file__).resolve().parents[2] / "shared"
WEIGHTS = SHARED / "weights" / "mobilenet_v2-b0353104.pth"
S2_DATE = "strzegom_20220719_33u"
STEPS = 80


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def save(key: str, value: dict) -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[key] = {**value, "cpu": cpu()}
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(value, indent=1))


def help_times(args: argparse.Namespace) -> None:
    env = {**os.environ, **({"PYTHONPATH": str(args.src)} if args.src else {})}
    record = {}
    for command in (["--help"], ["map", "--help"]):
        cmd = [sys.executable, "-m", "pointseg", *command]
        subprocess.run(cmd, env=env, check=True, capture_output=True)  # warm-up
        seconds = []
        for _ in range(10):
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            seconds.append(time.perf_counter() - t0)
        record["pointseg " + " ".join(command)] = {"median_s": round(statistics.median(seconds), 3),
                                                   "max_s": round(max(seconds), 3)}
    save(f"help_{args.key}", {**record, "src": str(args.src or "installed")})


def loveda_clicks(work: Path) -> Path:
    points = work / "loveda-clicks.json"
    if not points.exists():
        subprocess.run(pointseg("points", "simulate", "--data-root", str(SHARED / "data" / "loveda-mini"), "--split",
                                "Train", "--per-image", "20", "--seed", "0", "--out", str(points)), check=True)
    return points


def step_commands(work: Path) -> dict[str, tuple[list[str], Path]]:
    """Each cell's command and the run directory whose progress.json it writes."""
    sets = ["--set", f"train.steps={STEPS}", "--set", f"model.encoder_weights={WEIGHTS}"]
    s2_points = work / "s2-clicks.gpkg"
    if not s2_points.exists():
        clicks(S2_DATE, 10, 0, s2_points)
    landsat = Path(__file__).resolve().parents[1] / "src" / "pointseg" / "sample" / "landsat"
    return {
        "loveda": (pointseg("train", "--data-root", str(SHARED / "data" / "loveda-mini"), "--points",
                            str(loveda_clicks(work)), "--out", str(work / "loveda"), *sets), work / "loveda"),
        "sentinel2": (pointseg("map", "--raster", str(S2 / "images" / f"{S2_DATE}.tif"), "--points", str(s2_points),
                               "--class-field", "landcover", "--out", str(work / "s2"), *sets), work / "s2" / "run"),
        "landsat": (pointseg("map", "--raster", str(landsat / "RGB.byte.tif"), "--points",
                             str(landsat / "clicks.gpkg"), "--class-field", "class", "--classes",
                             str(landsat / "classes.csv"), "--out", str(work / "landsat"), *sets),
                    work / "landsat" / "run"),
    }


def measured(run_dir: Path, wall: float) -> dict:
    """The estimate at the run's end (``progress.json``: the last 60 s) against the rate the run kept after its
    first minute (its logged intervals: ``log_every`` steps of ``batch_size`` images at ``images_per_s``)."""
    import yaml

    progress = json.loads((run_dir / "progress.json").read_text())
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    info = json.loads((run_dir / "run.json").read_text())["invocations"][-1]
    every, batch = cfg["train"]["log_every"], cfg["train"]["batch_size"]
    elapsed, after = 0.0, []  # (steps, seconds) of the intervals that start after the first minute
    for previous, line in zip([{"step": 0}, *lines], lines, strict=False):
        seconds = (line["step"] - previous["step"]) * batch / line["images_per_s"]
        if elapsed >= 60:
            after.append((line["step"] - previous["step"], seconds))
        elapsed += seconds
    kept = sum(s for s, _ in after) / sum(t for _, t in after) if after else None
    rate = progress["steps_per_s"]
    return {"steps_per_s": round(rate, 4), "500_steps_min": round(500 / rate / 60, 1),
            "steps_per_s_after_first_minute": round(kept, 4) if kept else None,
            "estimate_error": round(rate / kept - 1, 3) if kept else None, "log_every": every,
            "precision": info.get("precision"), "wall_s": round(wall, 1)}


def steps(args: argparse.Namespace) -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    commands = step_commands(args.work)
    for name, (cmd, run_dir) in commands.items():
        if f"steps_{name}" in results:
            continue
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        save(f"steps_{name}", {**measured(run_dir, time.perf_counter() - t0), "command": " ".join(cmd)})
    if "steps_sentinel2_loaded" not in results:
        cmd, _ = commands["sentinel2"]
        pair = [[str(args.work / f"s2-loaded-{i}") if a == str(args.work / "s2") else a for a in cmd] for i in (0, 1)]
        t0 = time.perf_counter()
        running = [subprocess.Popen(c, stdout=subprocess.DEVNULL) for c in pair]
        codes = [p.wait() for p in running]
        assert codes == [0, 0], codes
        save("steps_sentinel2_loaded", {**measured(args.work / "s2-loaded-0" / "run", time.perf_counter() - t0),
                                        "command": " ".join(pair[0]) + "  (and a copy of it at the same time)"})


def spread(rows: list[int], cols: list[int]) -> float:
    xy = np.stack([rows, cols], 1).astype(float)
    gaps = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1)) + np.eye(len(xy)) * 1e9
    return round(float(gaps.min(1).mean()), 1)


def suggestions(args: argparse.Namespace) -> None:
    from pointseg.app.project import Project
    from pointseg.app.session import Session

    landsat = Path(__file__).resolve().parents[1] / "src" / "pointseg" / "sample" / "landsat"
    work = args.work / args.key
    work.mkdir(parents=True, exist_ok=True)
    record = {}
    # (a) the app on the Landsat sample
    import importlib

    start = importlib.import_module("pointseg.app.start" if args.key == "after" else "pointseg.commands.app")
    settings = [f"model.encoder_weights={WEIGHTS}", f"data.cache_dir={work / 'cache'}"]
    from pointseg.cli import parser

    parsed = parser().parse_args(["app", "--raster", str(landsat / "RGB.byte.tif"), "--points",
                                  str(landsat / "clicks.gpkg"), "--class-field", "class", "--classes",
                                  str(landsat / "classes.csv"), "--project", str(work / "project"),
                                  *[a for s in settings for a in ("--set", s)]])
    project = start.start_project(parsed) if not (work / "project" / "project.json").exists() else \
        Project.open(work / "project")
    session = Session(project, project.info["settings"])
    session.update()
    found = session.suggest(None, 10)
    height = project.info["images"]["RGB.byte"]["height"]
    record["app_landsat"] = describe([s["row"] for s in found], [s["col"] for s in found],
                                     [s["score"] for s in found], height)
    # (b) pointseg suggest on Sentinel-2
    s2_points = work / "s2-clicks.gpkg"
    if not s2_points.exists():
        clicks(S2_DATE, 10, 0, s2_points)
    raster = S2 / "images" / f"{S2_DATE}.tif"
    if not (work / "s2" / "run" / "model.pt").exists():
        subprocess.run(pointseg("map", "--fast", "--raster", str(raster), "--points", str(s2_points), "--class-field",
                                "landcover", "--out", str(work / "s2"), *[a for s in settings for a in ("--set", s)]),
                       check=True, stdout=subprocess.DEVNULL)
    out = work / "s2-next.json"
    subprocess.run(pointseg("suggest", "--run", str(work / "s2" / "run"), "--raster", str(raster), "--points",
                            str(work / "s2" / "points.json"), "--per-image", "10", "--out", str(out)),
                   check=True, stdout=subprocess.DEVNULL)
    doc = json.loads(out.read_text())
    image = next(iter(doc["images"].values()))
    new = [p for p in image["points"] if p[2] is None]
    scores = [s for s in image.get("suggestion_score", []) if s is not None]
    record["suggest_sentinel2"] = describe([p[0] for p in new], [p[1] for p in new], scores, image["height"])
    save(f"suggest_{args.key}", record)


def describe(rows: list[int], cols: list[int], scores: list[float], height: int) -> dict:
    return {"rows": rows, "cols": cols, "scores": scores, "height": height,
            "lowest_row_share": round(max(rows) / height, 3), "distinct_scores": len(set(scores)),
            "mean_nearest_gap_px": spread(rows, cols)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("phase", choices=["help", "steps", "suggest"])
    p.add_argument("--key", default="after")
    p.add_argument("--src", type=Path, help="help: the src folder of the code to time (default: the installed one)")
    p.add_argument("--work", type=Path, default=Path("/tmp/first-hour"))
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    {"help": help_times, "steps": steps, "suggest": suggestions}[args.phase](args)


if __name__ == "__main__":
    main()
