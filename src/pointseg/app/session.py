"""The model in the app's loop: "Update map" fits the fast model (``fastloop.fast_train``, the CLI's function) on
the project's clicks into ``rounds/<n>/``, and the map layer is drawn from it window by window from cached encoder
features, so only the windows in view are computed. Reopening a project loads its latest round.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from pointseg import build, runs
from pointseg.app.project import Project, ProjectError, rgb
from pointseg.config import flatten
from pointseg.data.classes import ClassTable
from pointseg.data.points import PointSet, save_points
from pointseg.data.raster import RasterSource, open_raster
from pointseg.engine import METRICS
from pointseg.fast import unit_probabilities
from pointseg.fastloop import FAST_INFO, FastRun, fast_train, full_recipe
from pointseg.features import Unit
from pointseg.inference import certainty
from pointseg.io import atomic_path
from pointseg.mapwriter import MapWriter
from pointseg.suggest import class_rarity, suggest_clicks

ROUNDS = "rounds"


def palette_table(project: Project) -> ClassTable:
    """The palette as a class table whose values are the class indices."""
    classes = project.info["classes"]
    return ClassTable(tuple(c["name"] for c in classes), tuple(rgb(c["color"]) for c in classes))


class Session:
    """The fast model of ``project`` (``settings``: config keys over the defaults, e.g. the encoder weights)."""

    def __init__(self, project: Project, settings: dict[str, Any]) -> None:
        self.project, self.settings = project, settings
        self.raster = Path(project.info["source"]["rasters"][0])
        self.fast: FastRun | None = None
        self.maps: dict[str, np.ndarray] = {}
        self.full: runs.TrainedModel | None = None  # the full recipe's model, once trained: it draws the map
        self.training: subprocess.Popen | None = None
        self.training_dir: Path | None = None
        self.cancelled = False
        self.lock = threading.Lock()
        self.restore()

    def round_dir(self, n: int) -> Path:
        return self.project.folder / ROUNDS / f"{n:03d}"

    def points(self) -> PointSet:
        table = palette_table(self.project)
        clicks = self.project.clicks()
        images = {image: np.array([[c.row, c.col, c.cls] for c in clicks if c.image == image], dtype=np.int64)
                  .reshape(-1, 3) for image in self.project.info["images"]}
        sizes = {k: (v["height"], v["width"]) for k, v in self.project.info["images"].items()}
        return PointSet(list(table.names), {k: v for k, v in images.items() if len(v)}, sizes, {"source": "app"})

    def update(self) -> dict[str, Any]:
        """Fit the fast model on the clicks so far; the next round's facts (times, click accuracy)."""
        points = self.points()
        if len(points) == 0:
            raise ProjectError("click some points first")
        if len({int(c) for p in points.images.values() for c in p[:, 2]}) < 2:
            raise ProjectError("the map needs clicks of at least two classes")
        with self.lock:
            n = int(self.project.info["rounds"]) + 1
            folder = self.round_dir(n)
            folder.mkdir(parents=True, exist_ok=True)
            save_points(folder / "points.json", points)
            palette_table(self.project).to_csv(folder / "points.classes.csv")
            fast = fast_train(self.settings, folder / "run",
                              build.TrainInputs(points=folder / "points.json", rasters=(self.raster,)),
                              accuracy_now=False)  # the map first; the click accuracy in the background
            self.fast, self.maps, self.full = fast, {}, None
            self.project.set_rounds(n)
        threading.Thread(target=fast.compute_accuracy, daemon=True).start()
        result = {"round": n, "seconds": fast.seconds}
        if self.project.info["source"].get("mask"):
            result["metrics"] = self.score()
        return result

    def accuracy(self) -> dict[str, Any]:
        """The latest round's click accuracy (``None`` while it is computed)."""
        fast = self.fast
        return {"round": int(self.project.info["rounds"]),
                "click_accuracy": None if fast is None or fast.later is not None else fast.accuracy}

    def score(self) -> dict[str, Any]:
        """The map against the project's reference mask (``--mask``): mIoU, per-class IoU and the confusion matrix
        (rows: the mask's classes), over the mask's labelled pixels."""
        from pointseg.metrics import confusion_matrix, summarize

        source_info = self.project.info["source"]
        values = source_info.get("class_values")
        table = palette_table(self.project)
        table = ClassTable(table.names, table.colors, tuple(values) if values else None)
        source = RasterSource([self.raster], table, None, [source_info["mask"]])
        ref = source.refs[0]
        mask = source.read_mask(ref)
        predicted = self.classes_of((0, 0, *mask.shape))
        assert predicted is not None
        n = table.num_classes
        cm = confusion_matrix(torch.from_numpy(predicted.astype(np.int64)), torch.from_numpy(mask.astype(np.int64)),
                              n, table.ignore_index)
        return summarize(cm.numpy(), list(table.names))

    def restore(self) -> None:
        """Load the latest round's fast model, if the project has one."""
        n = int(self.project.info.get("rounds", 0))
        run = self.round_dir(n) / "run"
        if n == 0 or not (run / runs.MODEL).exists():
            return
        trained = runs.load_run(run, device="cpu")
        source = RasterSource([self.raster], trained.classes, trained.head_cfg["data"]["bands"])
        cache = build.build_feature_cache(trained.head_cfg, trained.model, source, trained.scaling)
        info = json.loads((run / FAST_INFO).read_text(encoding="utf-8"))
        self.fast = FastRun(run, trained, cache, cache.units(), info["samples"], info["seconds"],
                            info["click_accuracy"])

    def classes_of(self, window: tuple[int, int, int, int]) -> np.ndarray | None:
        """The map's classes in ``window`` (top, left, height, width) of the raster (255: none), or ``None`` without
        a map."""
        return self.layer_of(window, 0)

    def certainty_of(self, window: tuple[int, int, int, int]) -> np.ndarray | None:
        """How sure the map is in ``window``: the margin between its two most probable classes, in percent (255:
        no map there)."""
        return self.layer_of(window, 1)

    def layer_of(self, window: tuple[int, int, int, int], layer: int) -> np.ndarray | None:
        fast = self.fast
        if fast is None:
            return None
        top, left, height, width = window
        out = np.full((height, width), 255, dtype=np.uint8)
        for unit in fast.units:
            ut, ul, uh, uw = unit.window or (0, 0, *fast.cache.source.size(unit.ref))
            r0, c0, r1, c1 = max(top, ut), max(left, ul), min(top + height, ut + uh), min(left + width, ul + uw)
            if r0 >= r1 or c0 >= c1:
                continue
            values = self.unit_map(unit)[layer]
            out[r0 - top:r1 - top, c0 - left:c1 - left] = values[r0 - ut:r1 - ut, c0 - ul:c1 - ul]
        return out

    def suggest(self, k: int, max_side: int = 2048) -> list[dict[str, Any]]:
        """``k`` suggested clicks on the raster (``pointseg.suggest``'s rule on the map's margin), scored on at most
        ``max_side`` pixels a side."""
        fast = self.fast
        if fast is None:
            raise ProjectError("no map yet: press Update map first")
        if not 1 <= k <= 100:
            raise ProjectError("ask for 1 to 100 suggestions")
        height, width = fast.cache.source.size(fast.cache.source.refs[0])
        step = max(1, -(-max(height, width) // max_side))
        bands = [self.unit_layers((top, 0, min(fast.cache.window, height - top), width), step)
                 for top in range(0, height, fast.cache.window)]
        classes = np.concatenate([b[0] for b in bands])
        certainty = np.concatenate([b[1] for b in bands])
        clicks = self.project.clicks()
        existing = np.array([[c.row, c.col, c.cls] for c in clicks], dtype=np.int64).reshape(-1, 3)
        counts = np.bincount(existing[:, 2], minlength=len(self.project.info["classes"]))
        found = suggest_clicks(1 - certainty / 100.0, np.where(classes == 255, 0, classes), classes != 255, existing,
                               class_rarity(counts), k, None, (height, width), step)
        return [{"rank": i + 1, "row": f.row, "col": f.col, "score": round(f.score, 4), "predicted": f.predicted}
                for i, f in enumerate(found)]

    def unit_layers(self, window: tuple[int, int, int, int], step: int) -> tuple[np.ndarray, np.ndarray]:
        classes, certainty = self.classes_of(window), self.certainty_of(window)
        assert classes is not None and certainty is not None
        offset = step // 2
        return classes[offset::step, offset::step], certainty[offset::step, offset::step]

    def export_map(self, path: Path) -> Path:
        """The whole raster's map as the page shows it (from cached features), through the CLI's writer (colours,
        names, QGIS style), a band of rows at a time."""
        fast = self.fast
        if fast is None:
            raise ProjectError("no map yet: press Update map first")
        source = fast.cache.source
        ref = source.refs[0]
        height, width = source.size(ref)
        rows, georef = fast.cache.window, source.georef(ref)
        assert georef is not None  # a raster
        with MapWriter(path, fast.trained.classes).open(height, width, georef) as out:
            for top in range(0, height, rows):
                h = min(rows, height - top)
                classes = self.classes_of((top, 0, h, width))
                assert classes is not None
                valid = np.asarray(source.read(ref, (top, 0, h, width)).get("valid", np.ones((h, width), bool)))
                out.write(top, classes, np.zeros_like(classes), valid & (classes != 255))
        return path

    def export_clicks(self, path: Path) -> Path:
        """The clicks as a GeoPackage point layer in the raster's CRS (pixel centres), field ``class`` (names)."""
        import pyogrio.raw
        import shapely

        clicks = self.project.clicks()
        if not clicks:
            raise ProjectError("no clicks to export")
        names = [c["name"] for c in self.project.info["classes"]]
        with open_raster(self.raster) as ds:
            transform, crs = ds.transform, ds.crs
        xy = [transform @ (c.col + 0.5, c.row + 0.5) for c in clicks]
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.unlink()
            pyogrio.raw.write(tmp, geometry=np.array(shapely.to_wkb(shapely.points(xy)), dtype=object),
                              field_data=[np.array([names[c.cls] for c in clicks], dtype=object),
                                          np.array([c.id for c in clicks])],
                              fields=["class", "click_id"], crs=crs.to_wkt() if crs else None,
                              geometry_type="Point", driver="GPKG", layer=self.raster.stem)
        return path

    # --- the full recipe in the background ---------------------------------------------------------------------

    def train_full(self, threads: int = 1) -> dict[str, Any]:
        """Start the default recipe warm-started from the latest fast round, in a process of its own (one thread,
        lower priority: the fast loop stays responsive); its map replaces the fast one when it is done."""
        if self.fast is None:
            raise ProjectError("press Update map first: the full recipe starts from the fast model")
        if self.training is not None and self.training.poll() is None:
            raise ProjectError("the full recipe is already training")
        run = self.fast.run_dir
        out = run.parent / "full"
        shutil.rmtree(out, ignore_errors=True)
        sets = [f"{k}={json.dumps(v)}" for k, v in flatten(self.settings).items()]
        self.training = full_recipe(run, out, build.TrainInputs(points=run.parent / "points.json",
                                                                 rasters=(self.raster,)), sets, threads=threads)
        self.training_dir, self.cancelled = out, False
        return self.training_status()

    def training_status(self) -> dict[str, Any]:
        """``idle``, ``running`` (with the step reached), ``done``, ``failed`` or ``cancelled``."""
        process, out = self.training, self.training_dir
        if process is None or out is None:
            return {"state": "idle"}
        steps = int(yaml.safe_load((out / runs.CONFIG).read_text())["train"]["steps"]) if (
            out / runs.CONFIG).exists() else None
        step = 0
        if (out / METRICS).exists():
            lines = (out / METRICS).read_text().strip().splitlines()
            step = int(json.loads(lines[-1]).get("step", 0)) if lines else 0
        code = process.poll()
        if code is None:
            return {"state": "running", "step": step, "steps": steps}
        if self.cancelled:
            return {"state": "cancelled", "step": step, "steps": steps}
        if code != 0 or not (out / runs.MODEL).exists():
            return {"state": "failed", "code": code}
        if self.full is None:
            self.full, self.maps = runs.load_run(out, device="cpu"), {}
        return {"state": "done", "step": steps, "steps": steps}

    def cancel_training(self) -> dict[str, Any]:
        if self.training is not None and self.training.poll() is None:
            self.cancelled = True
            self.training.terminate()
            self.training.wait(timeout=30)
        return self.training_status()

    def unit_map(self, unit: Unit) -> np.ndarray:
        """The unit's classes and certainty (margin, percent), ``(2, h, w)`` uint8, computed once per model: from
        the fast model's cached features, or by the full recipe's model when it has finished."""
        fast = self.fast
        assert fast is not None
        if unit.name not in self.maps:
            if self.full is not None:
                window = fast.cache.source.read(unit.ref, unit.window)
                raw = {"image": np.asarray(window["image"]), "valid": np.asarray(
                    window.get("valid", np.ones(np.asarray(window["image"]).shape[:2], bool)))}
                probs = torch.from_numpy(self.full.predictor().window_probabilities([raw])[0][0])
            else:
                probs = torch.from_numpy(unit_probabilities(fast.trained.model, fast.cache, unit))
            sure = (certainty(probs, "margin") * 100).round().to(torch.uint8)
            self.maps[unit.name] = torch.stack([probs.argmax(0).to(torch.uint8), sure]).numpy()
        return self.maps[unit.name]
