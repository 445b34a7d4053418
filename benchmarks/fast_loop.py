"""The fast model in the click loop (BENCHMARKS.md section 9): stages and resolution chosen on Train folds, the fast
model against the default recipe and the random-forest peer at 5-50 clicks/tile, rounds of corrective / suggested /
uniform clicks, the warm-started full recipe, and the Sentinel-2 scene.

    python benchmarks/fast_loop.py select --work /tmp/fast      # folds of Train: stages and grid of the head
    python benchmarks/fast_loop.py budget --work /tmp/fast      # 5, 10, 20, 50 uniform clicks/tile, seeds 0-2
    python benchmarks/fast_loop.py rounds --work /tmp/fast      # 10 + 4 x 10 clicks/tile, three annotators
    python benchmarks/fast_loop.py warm --work /tmp/fast        # the full recipe warm-started from a fast fit
    python benchmarks/fast_loop.py sentinel2 --work /tmp/fast   # 300 clicks on 2022-07-19, scored on two dates
    python benchmarks/fast_loop.py plot

Every cell writes ``benchmarks/results/fast_<phase>_<cell>_seed<s>.json`` and is skipped when that file exists, so
an interrupted phase resumes where it stopped. Fast fits run in this process (seconds); the full recipe runs as
``pointseg train`` / ``pointseg evaluate`` processes. One phase at a time on the 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from click_levers import selection_root
from pointseg import build
from pointseg.config import default_config, load_settings, merge
from pointseg.data.classes import ClassTable
from pointseg.data.points import (
    answer,
    corrective,
    corrective_points,
    image_rng,
    load_points,
    save_points,
    simulate,
)
from pointseg.data.sources import Source
from pointseg.fast import unit_probabilities
from pointseg.fastloop import FastRun, fast_train, suggest_from
from pointseg.io import write_json
from pointseg.metrics import confusion_matrix, summarize

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SHARED = HERE.parents[1] / "shared"
LOVEDA = SHARED / "data" / "loveda-mini"
WEIGHTS = SHARED / "weights" / "mobilenet_v2-b0353104.pth"
S2 = SHARED / "data" / "geo" / "sentinel2-strzegom"
BASE = ["data.domains=[Rural]", f"model.encoder_weights={WEIGHTS}"]
# Candidates of the select phase: encoder stages of the hypercolumn (0: the bands and their local means) and the
# head's grid relative to the model input (data.scale 0.5, so 0.5 = a cell per 4 x 4 pixels of the tile).
STAGES = {"all": "[0,1,2,3,4,5]", "no_bands": "[1,2,3,4,5]", "no_deep": "[0,1,2,3,4]"}
GRIDS = {"g05": "0.5", "g025": "0.25"}
TIE = 0.005  # select: pooled mIoU differences under this are ties (broken by cost)
BUDGETS = (5, 10, 20, 50)
ROUNDS, START, STEP = 4, 10, 10
STRATEGIES = ("corrective", "suggest", "uniform")
S2_NAMES = ["conifer forest", "mixed forest", "urban", "crops", "bare soil", "grassland", "roads", "water",
            "crops in vegetation", "quarries"]  # mask values 1..10 (../shared/data/README.md)


def result_path(phase: str, cell: str, seed: int) -> Path:
    return RESULTS / f"fast_{phase}_{cell}_seed{seed}.json"


def settings(work: Path, seed: int, sets: list[str]) -> dict:
    return load_settings(None, [*BASE, f"data.cache_dir={work / 'cache'}", f"seed={seed}", *sets])


def score(fast: FastRun, source: Source) -> tuple[dict, float]:
    """The fast model's maps of every image of ``source`` from cached features, scored against its masks, and
    the seconds the maps took (features already cached)."""
    cfg, trained = fast.trained.cfg, fast.trained
    cache = build.build_feature_cache(cfg, trained.model, build.build_cached(cfg, source), trained.scaling)
    units = cache.units()
    for unit in units:  # features first: the map time below is the loop's, with features cached
        cache.get(unit)
    n = source.classes.num_classes
    cm = torch.zeros(n, n, dtype=torch.int64)
    t0 = time.perf_counter()
    maps = {}
    for unit in units:
        maps[unit.ref.id] = unit_probabilities(trained.model, cache, unit).argmax(0)
    seconds = time.perf_counter() - t0
    for unit in units:
        mask = torch.from_numpy(source.read_mask(unit.ref).astype(np.int64))
        cm += confusion_matrix(torch.from_numpy(maps[unit.ref.id]), mask, n, source.classes.ignore_index)
    return {**summarize(cm.numpy(), list(source.classes.names)), "maps": maps}, seconds


def compact(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("miou", "per_class_iou", "pixel_accuracy", "confusion_matrix")}


def fast_cell(work: Path, name: str, seed: int, root: Path, points: Path, sets: list[str],
              splits: tuple[str, ...] = ("Train", "Val")) -> tuple[dict, dict]:
    """Fit the fast model on ``points`` and score it on ``splits`` of ``root``; the cell's record and the maps."""
    out = work / name / f"seed{seed}"
    if out.exists():
        subprocess.run(["rm", "-rf", str(out)], check=True)
    t0 = time.perf_counter()
    fast = fast_train(settings(work, seed, sets), out, build.TrainInputs(data_root=root, points=points))
    total = time.perf_counter() - t0
    record = {"seed": seed, "samples": fast.samples, "seconds": {**fast.seconds, "fast_train": total},
              "click_accuracy": fast.accuracy and {k: v for k, v in fast.accuracy.items() if k != "confusion_matrix"},
              "encoded": fast.cache.encoded, "sets": sets, "points": str(points)}
    maps = {}
    for split in splits:
        source = build.build_source(fast.trained.cfg, root, split)
        metrics, map_s = score(fast, source)
        maps[split] = metrics.pop("maps")
        record[split] = compact(metrics)
        record["seconds"][f"maps_{split}"] = map_s
    record["seconds"]["round"] = (record["seconds"]["fast_train"] - record["seconds"].get("click_accuracy", 0)
                                  + record["seconds"]["maps_Train"] if "maps_Train" in record["seconds"] else None)
    return record, maps


def simulated(work: Path, root: Path, split: str, per_image: int, seed: int) -> Path:
    path = work / "points" / f"{root.name}_{split}_p{per_image}_seed{seed}.json"
    if not path.exists():
        source = build.build_source(loveda_config(), root, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_points(path, simulate(source, per_image, seed, progress=False))
    return path


def loveda_config() -> dict:
    return merge(default_config(), load_settings(None, BASE))


def phase_select(work: Path, seeds: list[int]) -> None:
    """Each candidate on the 4 folds of Train (tile i held out in fold i % 4), 20 uniform clicks/tile on the other
    12, scored on the held-out 4: the confusion matrices of the 4 folds pooled."""
    for seed in seeds:
        for stages_name, stages in STAGES.items():
            for grid_name, grid in GRIDS.items():
                cell = f"{stages_name}_{grid_name}"
                path = result_path("select", cell, seed)
                if path.exists():
                    continue
                sets = [f"model.hypercolumn_stages={stages}", f"model.hypercolumn_scale={grid}", "fast.folds=0"]
                folds, pooled = [], None
                for fold in range(4):
                    root = selection_root(LOVEDA, work, fold)
                    points = simulated(work, root, "Train", 20, seed)
                    record, _ = fast_cell(work, f"select_{cell}_f{fold}", seed, root, points, sets, ("Val",))
                    cm = np.array(record["Val"]["confusion_matrix"])
                    pooled = cm if pooled is None else pooled + cm
                    folds.append({"fold": fold, "miou": record["Val"]["miou"], "seconds": record["seconds"]})
                metrics = summarize(pooled, load_points(points).classes)
                write_json(path, {"phase": "select", "cell": cell, "seed": seed, "sets": sets, "folds": folds,
                                  "pooled": compact(metrics)})
                print(f"select {cell} seed {seed}: pooled mIoU {metrics['miou']:.4f}", flush=True)
    choose(seeds)


def choose(seeds: list[int]) -> None:
    """The rule fixed before the runs: the highest pooled mIoU averaged over the seeds; a candidate within
    ``TIE`` of the best that is cheaper (coarser grid first, then fewer stages) is taken instead."""
    mean = {}
    for stages_name in STAGES:
        for grid_name in GRIDS:
            cell = f"{stages_name}_{grid_name}"
            paths = [result_path("select", cell, s) for s in seeds]
            if not all(p.exists() for p in paths):
                return
            mean[cell] = float(np.mean([json.loads(p.read_text())["pooled"]["miou"] for p in paths]))
    best = max(mean.values())
    cost = {f"{s}_{g}": (i_g, len(STAGES[s])) for s in STAGES for i_g, g in enumerate(GRIDS)}  # g05 costs more
    near = [c for c, v in mean.items() if v >= best - TIE]
    chosen = min(near, key=lambda c: (-cost[c][0], cost[c][1]))
    stages_name, grid_name = chosen.rsplit("_", 1)
    write_json(RESULTS / "fast_select_choice.json", {"mean_pooled_miou": mean, "chosen": chosen, "sets": [
        f"model.hypercolumn_stages={STAGES[stages_name]}", f"model.hypercolumn_scale={GRIDS[grid_name]}"]})
    print(f"chosen: {chosen} ({mean[chosen]:.4f}; best {best:.4f})", flush=True)


def chosen_sets() -> list[str]:
    """The stages and grid the select phase chose (its rule in BENCHMARKS.md); the package defaults until then."""
    path = RESULTS / "fast_select_choice.json"
    return json.loads(path.read_text())["sets"] if path.exists() else []


def phase_budget(work: Path, seeds: list[int]) -> None:
    for seed in seeds:
        for per_image in BUDGETS:
            path = result_path("budget", f"p{per_image}", seed)
            if path.exists():
                continue
            points = simulated(work, LOVEDA, "Train", per_image, seed)
            record, _ = fast_cell(work, f"budget_p{per_image}", seed, LOVEDA, points, chosen_sets())
            write_json(path, {"phase": "budget", "cell": f"p{per_image}", "per_image": per_image, **record})
            print(f"budget p{per_image} seed {seed}: same scene {record['Train']['miou']:.4f}, Val "
                  f"{record['Val']['miou']:.4f}, fit {record['seconds']['fit']:.1f} s, maps of 16 tiles "
                  f"{record['seconds']['maps_Train']:.1f} s", flush=True)


def next_clicks(strategy: str, source: Source, made_path: Path, maps: dict, probabilities_of: FastRun | None,
                seed: int, out: Path) -> Path:
    """The clicks so far plus ``STEP`` per tile placed by ``strategy`` (answered from the masks)."""
    made = load_points(made_path)
    if strategy == "corrective":
        points = corrective(source, maps, made, STEP, seed)
    elif strategy == "uniform":  # uniform among the labelled pixels not clicked yet
        images = {}
        for ref in source.refs:
            mask = source.read_mask(ref)
            existing = made.images.get(ref.id, np.zeros((0, 3), np.int64))
            rng = np.random.default_rng([seed, len(existing), *image_rng(seed, ref.id).integers(0, 2**31, 2)])
            images[ref.id] = corrective_points(mask, mask, existing, STEP, rng, source.classes.ignore_index)
        points = type(made)(made.classes, images, dict(made.sizes), {**made.meta, "strategy": "uniform"})
    else:
        assert probabilities_of is not None
        probabilities = probabilities_of.probabilities()
        suggested = suggest_from(probabilities, probabilities_of.units, made, STEP)
        points, _ = answer(source, suggested)
    save_points(out, points)
    return out


def phase_rounds(work: Path, seeds: list[int]) -> None:
    sets = chosen_sets()
    for seed in seeds:
        first = simulated(work, LOVEDA, "Train", START, seed)
        for strategy in STRATEGIES:
            path = result_path("rounds", strategy, seed)
            if path.exists():
                continue
            rounds, made = [], first
            for r in range(ROUNDS + 1):
                record, maps = fast_cell(work, f"rounds_{strategy}_r{r}", seed, LOVEDA, made, sets)
                record["per_image"] = START + STEP * r
                rounds.append(record)
                print(f"rounds {strategy} seed {seed} round {r}: same scene {record['Train']['miou']:.4f}, Val "
                      f"{record['Val']['miou']:.4f}, click accuracy "
                      f"{record['click_accuracy']['accuracy'] if record['click_accuracy'] else None}", flush=True)
                if r == ROUNDS:
                    break
                source = build.build_source(loveda_config(), LOVEDA, "Train")
                fast = refit_for_suggestions(work, f"rounds_{strategy}_r{r}", seed, made, sets) \
                    if strategy == "suggest" else None
                made = next_clicks(strategy, source, made, maps["Train"], fast, seed,
                                   work / "points" / f"rounds_{strategy}_r{r + 1}_seed{seed}.json")
            write_json(path, {"phase": "rounds", "cell": strategy, "seed": seed, "rounds": rounds,
                              "final_points": str(made), "final_run": str(work / f"rounds_{strategy}_r{ROUNDS}"
                                                                           / f"seed{seed}")})


def refit_for_suggestions(work: Path, name: str, seed: int, made: Path, sets: list[str]) -> FastRun:
    """The round's fast model again (seconds, features cached), as a ``FastRun`` whose probabilities suggest."""
    out = work / f"{name}_suggest" / f"seed{seed}"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    return fast_train(settings(work, seed, [*sets, "fast.folds=0"]), out,
                      build.TrainInputs(data_root=LOVEDA, points=made))


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pointseg.cli", *args]


def run(cmd: list[str]) -> float:
    print("+", shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def warm_cell(work: Path, cell: str, seed: int, fast_run: Path, points: Path) -> None:
    """The default recipe warm-started from ``fast_run`` (train --init), float32 as section 6's runs, scored on
    Val and on the clicked tiles."""
    path = result_path("warm", cell, seed)
    if path.exists():
        return
    out = work / f"warm_{cell}" / f"seed{seed}"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    sets = [*BASE, f"seed={seed}", "train.amp=false", f"data.cache_dir={work / 'cache'}"]
    train = cli("train", "--init", str(fast_run), "--data-root", str(LOVEDA), "--points", str(points), "--out",
                str(out / "run"), *[a for s in sets for a in ("--set", s)])
    record: dict = {"phase": "warm", "cell": cell, "seed": seed, "init": str(fast_run), "points": str(points),
                    "commands": [shlex.join(train)], "train_seconds": round(run(train), 1)}
    for split, name in (("Val", "val"), ("Train", "same_scene")):
        evaluate = cli("evaluate", "--run", str(out / "run"), "--data-root", str(LOVEDA), "--split", split, "--out",
                       str(out / f"{name}.json"))
        record[f"evaluate_{name}_seconds"] = round(run(evaluate), 1)  # the 16 Train tiles: their maps and scores
        record["commands"].append(shlex.join(evaluate))
        record[name] = compact(json.loads((out / f"{name}.json").read_text()))
    write_json(path, record)
    print(f"warm {cell} seed {seed}: Val {record['val']['miou']:.4f}, same scene {record['same_scene']['miou']:.4f}",
          flush=True)


def phase_warm(work: Path, seeds: list[int]) -> None:
    for seed in seeds:  # 20 uniform clicks/tile, against section 6's default recipe on the same clicks
        warm_cell(work, "p20", seed, work / "budget_p20" / f"seed{seed}",
                  work / "points" / f"loveda-mini_Train_p20_seed{seed}.json")
    for seed in seeds[:1]:  # once at the end of the corrective rounds (50 clicks/tile)
        record = json.loads(result_path("rounds", "corrective", seed).read_text())
        warm_cell(work, "corrective_r4", seed, Path(record["final_run"]), Path(record["final_points"]))


def s2_table(work: Path) -> Path:
    table = work / "s2_classes.csv"
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text("value,name,r,g,b\n" + "".join(f"{v},{n},0,0,0\n" for v, n in enumerate(S2_NAMES, 1)))
    return table


def s2_features(image: np.ndarray) -> np.ndarray:
    """The random-forest peer's per-pixel features: the bands (reflectance / 10000) and their 3 x 3 and 7 x 7
    means."""
    from scipy.ndimage import uniform_filter

    bands = image.astype(np.float32) / 10000
    means = [uniform_filter(bands, size=(s, s, 1), mode="nearest") for s in (3, 7)]
    return np.concatenate([bands, *means], axis=-1)


S2_PAIRS = (("strzegom_20210619_33u", "strzegom_20221012_33u"), ("strzegom_20230209_33u", "strzegom_20230301_33u"))
S2_STAGES = {"all": "[0,1,2,3,4,5]", "no_bands": "[1,2,3,4,5]", "bands": "[0]"}
S2_GRIDS = {"g1": "1.0", "g05": "0.5", "g025": "0.25"}


def s2_fit(work: Path, name: str, seed: int, clicked: str, sets: list[str]) -> tuple[FastRun, Path]:
    """300 class-balanced clicks on ``clicked`` and the fast model on them."""
    table = s2_table(work)
    raster, mask = S2 / "images" / f"{clicked}.tif", S2 / "masks" / f"{clicked}.tif"
    points = work / "s2" / f"clicks_{clicked}_seed{seed}.json"
    points.parent.mkdir(parents=True, exist_ok=True)
    if not points.exists():
        run(cli("points", "simulate", "--raster", str(raster), "--mask", str(mask), "--classes", str(table),
                "--strategy", "class-balanced", "--per-image", "300", "--seed", str(seed), "--out", str(points)))
    out = work / "s2" / f"{name}_seed{seed}"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    base = [f"model.encoder_weights={WEIGHTS}", f"data.cache_dir={work / 'cache'}", f"seed={seed}",
            f"data.classes={table}", "data.scale=1.0"]
    fast = fast_train(load_settings(None, [*base, *sets]), out, build.TrainInputs(points=points, rasters=(raster,)))
    return fast, points


def s2_score(fast: FastRun, date: str) -> dict:
    """The fast model's map of ``date`` from cached features, scored on its labelled pixels."""
    from pointseg.data.raster import RasterSource

    classes = fast.trained.classes
    source = RasterSource([S2 / "images" / f"{date}.tif"], classes, None, [S2 / "masks" / f"{date}.tif"])
    cache = fast.cache_for(source)
    n = classes.num_classes
    cm = torch.zeros(n, n, dtype=torch.int64)
    for unit in cache.units():
        predicted = unit_probabilities(fast.trained.model, cache, unit).argmax(0)
        mask = np.asarray(source.read(unit.ref, unit.window)["mask"]).astype(np.int64)
        cm += confusion_matrix(torch.from_numpy(predicted), torch.from_numpy(mask), n, classes.ignore_index)
    return compact(summarize(cm.numpy(), list(classes.names)))


def s2_forest_score(forest: Any, date: str, classes: ClassTable) -> dict:
    """The random-forest peer's map of ``date`` (``s2_features``), scored on its labelled pixels."""
    from pointseg.data.raster import RasterSource

    source = RasterSource([S2 / "images" / f"{date}.tif"], classes, None, [S2 / "masks" / f"{date}.tif"])
    sample = source.read(source.refs[0])
    f = s2_features(np.asarray(sample["image"]))
    predicted = forest.predict(f.reshape(-1, f.shape[-1])).reshape(f.shape[:2]).astype(np.int64)
    cm = confusion_matrix(torch.from_numpy(predicted), torch.from_numpy(np.asarray(sample["mask"]).astype(np.int64)),
                          classes.num_classes, classes.ignore_index)
    return compact(summarize(cm.numpy(), list(classes.names)))


def phase_select_s2(work: Path, seeds: list[int]) -> None:
    for seed in seeds:
        for stages_name, stages in S2_STAGES.items():
            for grid_name, grid in S2_GRIDS.items():
                cell = f"{stages_name}_{grid_name}"
                path = result_path("select_s2", cell, seed)
                if path.exists():
                    continue
                sets = [f"model.hypercolumn_stages={stages}", f"model.hypercolumn_scale={grid}", "fast.folds=0"]
                pairs = []
                for clicked, scored in S2_PAIRS:
                    fast, _ = s2_fit(work, f"select_{cell}_{clicked}", seed, clicked, sets)
                    pairs.append({"clicked": clicked, "scored": scored, **s2_score(fast, scored)})
                score = float(np.mean([p["miou"] for p in pairs]))
                write_json(path, {"phase": "select_s2", "cell": cell, "seed": seed, "sets": sets, "pairs": pairs,
                                  "score": score})
                print(f"select_s2 {cell} seed {seed}: {score:.4f}", flush=True)
    mean = {}
    for stages_name in S2_STAGES:
        for grid_name in S2_GRIDS:
            cell = f"{stages_name}_{grid_name}"
            mean[cell] = float(np.mean([json.loads(result_path("select_s2", cell, s).read_text())["score"]
                                        for s in seeds]))
    best = max(mean.values())
    channels = {"bands": 0, "no_bands": 1, "all": 2}
    near = [c for c, v in mean.items() if v >= best - TIE]
    chosen = min(near, key=lambda c: (-list(S2_GRIDS).index(c.rsplit("_", 1)[1]), channels[c.rsplit("_", 1)[0]]))
    stages_name, grid_name = chosen.rsplit("_", 1)
    write_json(RESULTS / "fast_select_s2_choice.json", {"mean_miou": mean, "chosen": chosen, "sets": [
        f"model.hypercolumn_stages={S2_STAGES[stages_name]}", f"model.hypercolumn_scale={S2_GRIDS[grid_name]}"]})
    print(f"chosen for coarse rasters: {chosen} ({mean[chosen]:.4f}; best {best:.4f})", flush=True)


def s2_chosen_sets() -> list[str]:
    """The stages and grid select_s2 chose for rasters of coarse pixels (the LoveDA choice until then)."""
    path = RESULTS / "fast_select_s2_choice.json"
    return json.loads(path.read_text())["sets"] if path.exists() else chosen_sets()


def phase_sentinel2(work: Path, seeds: list[int], clicked: str, other: str) -> None:
    from sklearn.ensemble import RandomForestClassifier

    from pointseg.data.raster import RasterSource

    table = s2_table(work)
    classes = ClassTable.from_csv(table, color_coded=False)
    for seed in seeds:
        path = result_path("sentinel2", "fast_vs_rf", seed)
        if path.exists():
            continue
        raster, mask = S2 / "images" / f"{clicked}.tif", S2 / "masks" / f"{clicked}.tif"
        points = work / "s2" / f"clicks_seed{seed}.json"
        points.parent.mkdir(parents=True, exist_ok=True)
        run(cli("points", "simulate", "--raster", str(raster), "--mask", str(mask), "--classes", str(table),
                "--strategy", "class-balanced", "--per-image", "300", "--seed", str(seed), "--out", str(points)))
        out = work / "s2" / f"fast_seed{seed}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        sets = [f"model.encoder_weights={WEIGHTS}", f"data.cache_dir={work / 'cache'}", f"seed={seed}",
                f"data.classes={table}", "data.scale=1.0", *s2_chosen_sets()]
        t0 = time.perf_counter()
        fast = fast_train(load_settings(None, sets), out, build.TrainInputs(points=points, rasters=(raster,)))
        fit_s = time.perf_counter() - t0
        record: dict = {"phase": "sentinel2", "seed": seed, "clicks": str(points), "sets": sets,
                        "fast_seconds": {**fast.seconds, "fast_train": fit_s},
                        "click_accuracy": fast.accuracy and {k: v for k, v in fast.accuracy.items()
                                                             if k != "confusion_matrix"}}
        made = load_points(points)
        with_mask = RasterSource([raster], classes, None, [mask])
        ref = with_mask.refs[0]
        image = np.asarray(with_mask.read(ref)["image"])
        feats = s2_features(image)
        pts = made.images[ref.id]
        forest = RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=2)
        forest.fit(feats[pts[:, 0], pts[:, 1]], pts[:, 2])
        for name, date in (("clicked", clicked), ("other_date", other)):
            r, m = S2 / "images" / f"{date}.tif", S2 / "masks" / f"{date}.tif"
            evaluation = work / "s2" / f"fast_seed{seed}_{name}.json"
            run(cli("evaluate", "--run", str(out), "--raster", str(r), "--mask", str(m), "--classes", str(table),
                    "--out", str(evaluation)))
            record[f"fast_{name}"] = compact(json.loads(evaluation.read_text()))
            record[f"forest_{name}"] = s2_forest_score(forest, date, classes)
        write_json(path, record)
        fast_scores = f"{record['fast_clicked']['miou']:.4f} / {record['fast_other_date']['miou']:.4f}"
        forest_scores = f"{record['forest_clicked']['miou']:.4f} / {record['forest_other_date']['miou']:.4f}"
        print(f"sentinel2 seed {seed}: fast {fast_scores}, forest {forest_scores}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("phase", choices=["select", "budget", "rounds", "warm", "select_s2", "sentinel2", "plot"])
    p.add_argument("--work", type=Path, default=Path("/tmp/fast-loop"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--clicked", default="strzegom_20220719_33u")
    p.add_argument("--other", default="strzegom_20220619_33u")
    args = p.parse_args()
    torch.set_num_threads(2)
    if args.phase == "sentinel2":
        phase_sentinel2(args.work, args.seeds, args.clicked, args.other)
    elif args.phase == "plot":
        from fast_loop_report import plot

        plot()
    else:
        {"select": phase_select, "budget": phase_budget, "rounds": phase_rounds, "warm": phase_warm,
         "select_s2": phase_select_s2}[args.phase](args.work, args.seeds)


if __name__ == "__main__":
    main()
