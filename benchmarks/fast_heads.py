"""BENCHMARKS 13: the fast model's heads (softmax, mlp, forest, auto) against a random forest, on the Landsat
sample, Sentinel-2 Strzegom across dates, and loveda-mini.

    python benchmarks/fast_heads.py landsat --check CHECK.json   # points checked by eye, kept outside the project
    python benchmarks/fast_heads.py sentinel2
    python benchmarks/fast_heads.py loveda
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
import shapely
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fast_loop import (  # noqa: E402  (the section 9 benchmark's helpers)
    LOVEDA,
    S2,
    WEIGHTS,
    chosen_sets,
    cli,
    fast_cell,
    run,
    s2_chosen_sets,
    s2_features,
    s2_forest_score,
    s2_score,
    s2_table,
    simulated,
)
from pointseg import build  # noqa: E402
from pointseg.config import load_settings  # noqa: E402
from pointseg.data.classes import ClassTable  # noqa: E402
from pointseg.data.points import load_points  # noqa: E402
from pointseg.fastloop import fast_train  # noqa: E402
from pointseg.io import write_json  # noqa: E402
from pointseg.workflows.map import COARSE_FAST_LABELS  # noqa: E402
from pointseg.workflows.sample import sample_dir  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
HEADS = ("auto", "softmax", "mlp", "forest")
S2_CLICKED, S2_OTHERS = "strzegom_20220719_33u", ("strzegom_20220619_33u", "strzegom_20221012_33u")
RF_TREES = 300


def result(phase: str, cell: str) -> Path:
    return RESULTS / f"heads_{phase}_{cell}.json"


def landsat_check(check: Path, out: Path) -> dict:
    """Share of the points in ``check`` ({"check": {class: [[col, row], ...]}}) the map ``out`` gets right."""
    points = json.loads(check.read_text())["check"]
    names = [line.split(",")[1] for line in (sample_dir() / "landsat" / "classes.csv").read_text().splitlines()[1:]]
    with rasterio.open(out) as ds:
        classes = ds.read(1)
    per = {k: [int(classes[r, c]) == names.index(k) for c, r in v] for k, v in points.items()}
    right = sum(sum(v) for v in per.values())
    return {"right": right / sum(len(v) for v in per.values()), "per_class": {k: f"{sum(v)}/{len(v)}"
                                                                               for k, v in per.items()}}


def old_clicks(work: Path) -> Path:
    """The sample's clicks before issue 30 (placed by a pixel rule), from the repository's history."""
    path = work / "rule_clicks.gpkg"
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = subprocess.run(["git", "show", "d7820d2:src/pointseg/sample/landsat/clicks.gpkg"], check=True,
                          capture_output=True).stdout
    path.write_bytes(blob)
    return path


def phase_landsat(work: Path, check: Path) -> None:
    landsat = sample_dir() / "landsat"
    cells = {**{f"eye_{h}": ("eye", [f"fast.head={h}"]) for h in HEADS},
             "eye_auto_propagation": ("eye", ["fast.head=auto", "labels.propagate=superpixel"]),
             "rule_auto": ("rule", ["fast.head=auto"]), "rule_softmax": ("rule", ["fast.head=softmax"])}
    clicks = {"eye": landsat / "clicks.gpkg", "rule": old_clicks(work)}
    cache = work / "cache"
    for cell, (placed, sets) in cells.items():
        out = work / "landsat" / cell
        subprocess.run(["rm", "-rf", str(out)], check=True)
        cmd = cli("map", "--fast", "--raster", str(landsat / "RGB.byte.tif"), "--points", str(clicks[placed]),
                  "--class-field", "class", "--classes", str(landsat / "classes.csv"), "--out", str(out),
                  "--set", f"data.cache_dir={cache}", *[a for s in sets for a in ("--set", s)])
        if cell == "eye_auto":  # features once, then the measured run with them cached
            run(cmd)
            subprocess.run(["rm", "-rf", str(out)], check=True)
        wall = run(cmd)
        info = json.loads((out / "run" / "fast.json").read_text())
        record = {"phase": "landsat", "cell": cell, "clicks": placed, "sets": sets, "wall_s": wall,
                  "head": info["head"], "choice": info["choice"], "click_accuracy": {
                      k: v for k, v in (info["click_accuracy"] or {}).items() if k != "confusion_matrix"},
                  "seconds": info["seconds"], "check": landsat_check(check, out / "map.tif")}
        write_json(result("landsat", cell), record)
        print(f"landsat {cell}: head {info['head']}, check {record['check']['right']:.3f}, wall {wall:.1f} s",
              flush=True)
    forest_peer(work, check, clicks)


def forest_peer(work: Path, check: Path, clicks: dict[str, Path]) -> None:
    """The random forest (bands and their 3x3 / 7x7 means, RF_TREES trees) on the same clicks, read at the
    check points."""
    from scipy.ndimage import uniform_filter
    from sklearn.ensemble import RandomForestClassifier

    landsat = sample_dir() / "landsat"
    names = [line.split(",")[1] for line in (landsat / "classes.csv").read_text().splitlines()[1:]]
    with rasterio.open(landsat / "RGB.byte.tif") as ds:
        bands, transform, profile = ds.read().astype(np.float32) / 255, ds.transform, ds.profile
    feats = np.concatenate([bands, *[uniform_filter(bands, (1, s, s), mode="nearest") for s in (3, 7)]])
    feats = feats.reshape(len(feats), -1).T
    for placed, path in clicks.items():
        _, _, wkb, fields = pyogrio.raw.read(path)
        xy = shapely.get_coordinates(shapely.from_wkb(wkb))
        cols, rows = (~transform * (xy[:, 0], xy[:, 1]))
        index = rows.astype(int) * bands.shape[2] + cols.astype(int)
        y = np.array([names.index(n) for n in fields[0]])
        t0 = time.perf_counter()
        forest = RandomForestClassifier(RF_TREES, random_state=0, n_jobs=2).fit(feats[index], y)
        predicted = forest.predict(feats).reshape(bands.shape[1:]).astype(np.uint8)
        seconds = time.perf_counter() - t0
        out = work / "landsat" / f"forest_{placed}.tif"
        with rasterio.open(out, "w", **{**profile, "count": 1, "nodata": None}) as ds:
            ds.write(predicted, 1)
        record = {"phase": "landsat", "cell": f"forest_{placed}", "clicks": placed, "seconds": seconds,
                  "check": landsat_check(check, out)}
        write_json(result("landsat", f"forest_{placed}"), record)
        print(f"landsat forest peer on {placed} clicks: check {record['check']['right']:.3f}", flush=True)


def s2_forest_scores(points: Path, classes: ClassTable, seed: int) -> tuple[dict, float]:
    from sklearn.ensemble import RandomForestClassifier

    from pointseg.data.raster import RasterSource

    made = load_points(points)
    clicked = RasterSource([S2 / "images" / f"{S2_CLICKED}.tif"], classes, None, [S2 / "masks" / f"{S2_CLICKED}.tif"])
    feats = s2_features(np.asarray(clicked.read(clicked.refs[0])["image"]))
    pts = made.images[clicked.refs[0].id]
    t0 = time.perf_counter()
    forest = RandomForestClassifier(n_estimators=RF_TREES, random_state=seed, n_jobs=2)
    forest.fit(feats[pts[:, 0], pts[:, 1]], pts[:, 2])
    scores = {date: s2_forest_score(forest, date, classes) for date in (S2_CLICKED, *S2_OTHERS)}
    return scores, time.perf_counter() - t0


def phase_sentinel2(work: Path, seeds: list[int], heads: list[str]) -> None:
    table = s2_table(work)
    classes = ClassTable.from_csv(table, color_coded=False)
    raster, mask = S2 / "images" / f"{S2_CLICKED}.tif", S2 / "masks" / f"{S2_CLICKED}.tif"
    for seed in seeds:
        points = work / "s2" / f"clicks_seed{seed}.json"
        points.parent.mkdir(parents=True, exist_ok=True)
        if not points.exists():
            run(cli("points", "simulate", "--raster", str(raster), "--mask", str(mask), "--classes", str(table),
                    "--strategy", "class-balanced", "--per-image", "300", "--seed", str(seed), "--out", str(points)))
        if not result("sentinel2", f"forest_peer_seed{seed}").exists():
            scores, seconds = s2_forest_scores(points, classes, seed)
            write_json(result("sentinel2", f"forest_peer_seed{seed}"), {"phase": "sentinel2", "seed": seed,
                                                                       "scores": scores, "seconds": seconds})
        for head in heads:
            path = result("sentinel2", f"{head}_seed{seed}")
            if path.exists():
                continue
            out = work / "s2" / f"{head}_seed{seed}"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            sets = [f"model.encoder_weights={WEIGHTS}", f"data.cache_dir={work / 'cache'}", f"seed={seed}",
                    f"data.classes={table}", "data.scale=1.0", *s2_chosen_sets(), f"fast.head={head}",
                    *[f"labels.{k}={v}" for k, v in COARSE_FAST_LABELS.items()]]  # as map --fast on 10 m pixels
            t0 = time.perf_counter()
            fast = fast_train(load_settings(None, sets), out, build.TrainInputs(points=points, rasters=(raster,)))
            fit_s = time.perf_counter() - t0
            scores = {date: s2_score(fast, date) for date in (S2_CLICKED, *S2_OTHERS)}
            write_json(path, {"phase": "sentinel2", "seed": seed, "head": fast.head, "sets": sets,
                              "choice": fast.choice.report() if fast.choice else None, "fast_train_s": fit_s,
                              "seconds": fast.seconds, "scores": scores})
            print(f"sentinel2 {head} seed {seed}: head {fast.head}, "
                  + ", ".join(f"{d[9:17]} {s['miou']:.3f}" for d, s in scores.items()), flush=True)


def phase_loveda(work: Path, seeds: list[int], heads: list[str]) -> None:
    for seed in seeds:
        points = simulated(work, LOVEDA, "Train", 20, seed)
        for head in heads:
            path = result("loveda", f"{head}_p20_seed{seed}")
            if path.exists():
                continue
            record, _ = fast_cell(work, f"heads_{head}_p20", seed, LOVEDA, points, [*chosen_sets(),
                                                                                     f"fast.head={head}"])
            info = json.loads((work / f"heads_{head}_p20" / f"seed{seed}" / "fast.json").read_text())
            write_json(path, {"phase": "loveda", "head": head, "kept": info["head"], "choice": info["choice"],
                              "per_image": 20, **record})
            print(f"loveda {head} p20 seed {seed}: same scene {record['Train']['miou']:.4f}, Val "
                  f"{record['Val']['miou']:.4f}", flush=True)


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def phase_report(seeds: list[int]) -> None:
    """The tables of BENCHMARKS 13 from the result files."""
    print("| cell | clicks | head kept | click accuracy per head (softmax / mlp / forest) | checked by eye | wall s |")
    print("|---|---|---|---|---:|---:|")
    for path in sorted(RESULTS.glob("heads_landsat_*.json")):
        r = json.loads(path.read_text())
        scores = r.get("choice", {}).get("click_accuracy") or {}
        per = " / ".join(f"{scores[h]['accuracy']:.3f}" if scores.get(h) else "-" for h in HEADS[1:])
        wall = f"{r['wall_s']:.1f}" if "wall_s" in r else "-"
        print(f"| {r['cell']} | {r['clicks']} | {r.get('head', 'forest peer')} | {per} | {r['check']['right']:.3f} "
              f"({', '.join(f'{k} {v}' for k, v in r['check']['per_class'].items())}) | {wall} |")
    print()
    dates = (S2_CLICKED, *S2_OTHERS)
    print("| model | " + " | ".join(d[9:17] for d in dates) + " | other dates, mean | head kept (seeds) | fit s |")
    print("|---|" + "---|" * len(dates) + "---|---|---:|")
    rows = {h: [json.loads(result("sentinel2", f"{h}_seed{s}").read_text()) for s in seeds] for h in HEADS}
    rows["forest peer"] = [json.loads(result("sentinel2", f"forest_peer_seed{s}").read_text()) for s in seeds]
    for name, records in rows.items():
        cells = [mean_std([r["scores"][d]["miou"] for r in records]) for d in dates]
        others = mean_std([np.mean([r["scores"][d]["miou"] for d in S2_OTHERS]) for r in records])
        kept = ", ".join(r.get("head", "-") for r in records)
        fit = np.mean([r.get("fast_train_s", r.get("seconds")) for r in records])
        print(f"| {name} | " + " | ".join(cells) + f" | {others} | {kept} | {fit:.1f} |")
    print()
    print("| head | same scene | Val | head kept (seeds) | click accuracy | fast_train s |")
    print("|---|---|---|---|---|---:|")
    for head in HEADS:
        records = [json.loads(p.read_text()) for s in seeds if (p := result("loveda", f"{head}_p20_seed{s}")).exists()]
        if not records:
            continue
        acc = mean_std([r["click_accuracy"]["accuracy"] for r in records if r.get("click_accuracy")])
        kept = ", ".join(r.get("kept", head) for r in records)
        print(f"| {head} | {mean_std([r['Train']['miou'] for r in records])} | "
              f"{mean_std([r['Val']['miou'] for r in records])} | {kept} | {acc} | "
              f"{np.mean([r['seconds']['fast_train'] for r in records]):.1f} |")


def phase_app(work: Path, seeds: list[int]) -> None:
    """Section 10's Sentinel-2 analyst through the app's API with the app's raster defaults of this issue (clicks
    alone on 10 m pixels; head auto in round 1, kept after): the repaint time and the app's mIoU per round."""
    import app_loop

    labels = {"labels": {k: v for k, v in COARSE_FAST_LABELS.items()}}
    runs = [app_loop.analyst(work / "app", s, extra=labels, busy_repaint=False) for s in seeds]
    write_json(result("app", "sentinel2"), {"phase": "app", "seeds": seeds, "runs": runs})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("phase", choices=["landsat", "sentinel2", "loveda", "app", "report"])
    p.add_argument("--work", type=Path, default=Path("/tmp/fast-heads"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--heads", nargs="+", default=list(HEADS))
    p.add_argument("--check", type=Path, help="landsat: the points checked by eye (JSON, kept outside the project)")
    args = p.parse_args()
    torch.set_num_threads(2)
    if args.phase == "landsat":
        if args.check is None:
            p.error("landsat needs --check")
        phase_landsat(args.work, args.check)
    elif args.phase == "app":
        (args.work / "app").mkdir(parents=True, exist_ok=True)
        phase_app(args.work, args.seeds)
    elif args.phase == "report":
        phase_report(args.seeds)
    elif args.phase == "sentinel2":
        phase_sentinel2(args.work, args.seeds, args.heads)
    else:
        phase_loveda(args.work, args.seeds, args.heads)


if __name__ == "__main__":
    main()
