"""The model in the app's loop: "Update map" fits the fast model (``fastloop.fast_train``, the CLI's function) on
the project's clicks into ``rounds/<n>/``, and the map layer of each image (a raster, or a tile of a folder) is
drawn from it window by window from cached encoder features, so only the windows in view are computed. What a
round is scored by, the click accuracy and the score against a reference mask, follows in a background thread of
lower priority, given up when a newer round replaces it. Reopening a project loads its latest round (and the full
recipe's model, if it finished).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from pointseg import build, runs
from pointseg.app.project import Project, ProjectError, lower_priority, rgb
from pointseg.choices import Tiling
from pointseg.config import flatten, resolve_settings
from pointseg.data.classes import ClassTable
from pointseg.data.points import PointSet, save_points
from pointseg.data.sources import GeoRef, SampleRef, Source
from pointseg.engine import METRICS
from pointseg.export import export_onnx
from pointseg.fast import unit_probabilities
from pointseg.fastloop import FAST_INFO, FastRun, fast_train, feature_cache, full_recipe
from pointseg.features import FeatureCache, Unit
from pointseg.inference import certainty, top_class
from pointseg.io import atomic_path
from pointseg.mapwriter import MapWriter
from pointseg.suggest import class_rarity, suggest_clicks

ROUNDS, FULL = "rounds", "full"


def palette_table(project: Project) -> ClassTable:
    """The palette as a class table whose values are the class indices."""
    classes = project.info["classes"]
    return ClassTable(tuple(c["name"] for c in classes), tuple(rgb(c["color"]) for c in classes))


def project_source(project: Project, cfg: dict) -> Source:
    """Every image of ``project`` as its models read them: its raster, or the split of its tile folder (with the
    split's masks where there are some)."""
    source = project.info["source"]
    if "rasters" in source:
        return build.build_raster_source(cfg, tuple(source["rasters"]), palette_table(project))
    return build.build_source(cfg, source["data_root"], source["split"], require_masks=False)


@dataclass
class Drawn:
    """What draws the maps: round ``round``'s fast model, its feature cache of every image of the project (and its
    units by image), the full recipe's model once it finished, the maps drawn so far by unit, and the round's score
    against the reference mask once computed. Replaced whole, never changed in place, so that a request reads one
    model's maps."""

    round: int
    fast: FastRun
    cache: FeatureCache
    units: dict[str, list[Unit]]
    full: runs.TrainedModel | None = None
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None


class Session:
    """The fast model of ``project`` (``settings``: config keys over the defaults, e.g. the encoder weights)."""

    def __init__(self, project: Project, settings: dict[str, Any]) -> None:
        self.project, self.settings = project, settings
        self.cfg = resolve_settings(settings)
        self.source = project_source(project, self.cfg)
        self.refs = {ref.id: ref for ref in self.source.refs}
        self.drawn: Drawn | None = None
        self.training: subprocess.Popen | None = None
        self.training_dir: Path | None = None
        self.cancelled = False
        self.lock = threading.Lock()
        self.later: threading.Thread | None = None  # the latest round's score and click accuracy
        self.restore()

    @property
    def fast(self) -> FastRun | None:
        return self.drawn.fast if self.drawn else None

    @property
    def full(self) -> runs.TrainedModel | None:
        return self.drawn.full if self.drawn else None

    def ref(self, image: str | None = None) -> SampleRef:
        """The project's image ``image`` (``None``: its first)."""
        if image is None:
            return self.source.refs[0]
        if image not in self.refs:
            raise ProjectError(f"image {image[:80]!r} is not in the project")
        return self.refs[image]

    def round_dir(self, n: int) -> Path:
        return self.project.folder / ROUNDS / f"{n:03d}"

    def inputs(self, points: Path) -> build.TrainInputs:
        """What a run of the project trains on: ``points`` on its raster or its tile folder."""
        source = self.project.info["source"]
        if "rasters" in source:
            return build.TrainInputs(points=points, rasters=tuple(source["rasters"]))
        return build.TrainInputs(points=points, data_root=source["data_root"])

    def points(self) -> PointSet:
        table = palette_table(self.project)
        clicks = self.project.clicks()
        images = {image: np.array([[c.row, c.col, c.cls] for c in clicks if c.image == image], dtype=np.int64)
                  .reshape(-1, 3) for image in self.project.info["images"]}
        sizes = {k: (v["height"], v["width"]) for k, v in self.project.info["images"].items()}
        return PointSet(list(table.names), {k: v for k, v in images.items() if len(v)}, sizes, {"source": "app"})

    def attach(self, n: int, fast: FastRun, cache: FeatureCache | None = None) -> Drawn:
        """Draw the maps with round ``n``'s ``fast`` model from now on (``cache``: its feature cache of the
        project's images, if built)."""
        cache = cache or feature_cache(fast.trained, self.source)
        self.drawn = Drawn(n, fast, cache, {ref.id: cache.units([ref]) for ref in self.source.refs})
        return self.drawn

    def update(self) -> dict[str, Any]:
        """Fit the fast model on the clicks so far: the round and its times. Its score against the mask and its
        click accuracy follow in the background (``accuracy``)."""
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
            fast = fast_train(self.settings, folder / "run", self.inputs(folder / "points.json"),
                              accuracy_now=False)  # the map first; the click accuracy in the background
            drawn = self.attach(n, fast)
            self.project.set_rounds(n)
        self.later = threading.Thread(target=self.follow_up, args=(drawn,), daemon=True)
        self.later.start()
        return {"round": n, "seconds": fast.seconds}

    def follow_up(self, drawn: Drawn) -> None:
        """Round ``drawn``'s score against the reference mask (if the project has one), then its click accuracy,
        at lower priority; given up as soon as another round draws the maps."""
        lower_priority()

        def stale() -> bool:
            return self.drawn is None or self.drawn.round != drawn.round

        if self.project.info["source"].get("mask") and not stale():
            drawn.metrics = self.score(drawn)
        if not stale():
            drawn.fast.compute_accuracy(stop=stale)

    def accuracy(self) -> dict[str, Any]:
        """The latest round's click accuracy and its score against the mask (``None`` while they are computed)."""
        drawn, later = self.drawn, self.later
        if drawn is None:
            return {"round": 0, "click_accuracy": None, "metrics": None, "pending": False}
        fast = drawn.fast
        return {"round": drawn.round, "click_accuracy": None if fast.later is not None else fast.accuracy,
                "metrics": drawn.metrics, "pending": later is not None and later.is_alive()}

    def score(self, drawn: Drawn | None = None) -> dict[str, Any]:
        """The maps of ``drawn`` (default: the current ones) against the project's reference masks (``--mask``: a
        mask raster, or the tile folder's masks): mIoU, per-class IoU and the confusion matrix (rows: the masks'
        classes), over their labelled pixels."""
        from pointseg.metrics import confusion_matrix, summarize

        drawn = drawn or self.drawn
        if drawn is None:
            raise ProjectError("no map yet: press Update map first")
        source_info = self.project.info["source"]
        source = self.source
        if "rasters" in source_info:  # the mask's values for the palette's classes (added classes: none)
            table = palette_table(self.project)
            values = list(source_info["class_values"])
            values += range(max(values) + 1, max(values) + 1 + table.num_classes - len(values))
            table = ClassTable(table.names, table.colors, tuple(values))
            source = build.build_raster_source(self.cfg, tuple(source_info["rasters"]), table,
                                               (source_info["mask"],))
        n = source.classes.num_classes
        cm = torch.zeros((n, n), dtype=torch.int64)
        for ref in source.refs:
            if ref.mask is None:
                continue
            mask = source.read_mask(ref)
            predicted = self.layer_of(ref.id, (0, 0, *mask.shape), 0, drawn)
            assert predicted is not None
            cm += confusion_matrix(torch.from_numpy(predicted.astype(np.int64)),
                                   torch.from_numpy(mask.astype(np.int64)), n, source.classes.ignore_index)
        return summarize(cm.numpy(), list(source.classes.names))

    def restore(self) -> None:
        """Load the latest round's fast model, if the project has one, and its full recipe's model if it
        finished."""
        n = int(self.project.info.get("rounds", 0))
        run = self.round_dir(n) / "run"
        if n == 0 or not (run / runs.MODEL).exists():
            return
        trained = runs.load_run(run, device="cpu")
        cache = feature_cache(trained, self.source)
        info = json.loads((run / FAST_INFO).read_text(encoding="utf-8"))
        drawn = self.attach(n, FastRun(run, trained, cache, cache.units(), info["samples"], info["seconds"],
                                       info["click_accuracy"]), cache)
        if (self.round_dir(n) / FULL / runs.MODEL).exists():
            self.drawn = dataclasses.replace(drawn, full=runs.load_run(self.round_dir(n) / FULL, device="cpu"),
                                             maps={})

    def classes_of(self, image: str, window: tuple[int, int, int, int]) -> np.ndarray | None:
        """The map's classes in ``window`` (top, left, height, width) of ``image`` (255: none), or ``None``
        without a map."""
        return self.layer_of(image, window, 0)

    def certainty_of(self, image: str, window: tuple[int, int, int, int]) -> np.ndarray | None:
        """How sure the map is in ``window`` of ``image``: the margin between its two most probable classes, in
        percent (255: no map there)."""
        return self.layer_of(image, window, 1)

    def layer_of(self, image: str, window: tuple[int, int, int, int], layer: int, drawn: Drawn | None = None
                 ) -> np.ndarray | None:
        """Layer ``layer`` (0: classes, 1: certainty) of ``window`` of ``image`` as ``drawn`` (default: the current
        model) draws it."""
        drawn = drawn or self.drawn
        if drawn is None:
            return None
        top, left, height, width = window
        out = np.full((height, width), 255, dtype=np.uint8)
        for unit in drawn.units.get(image, []):
            ut, ul, uh, uw = unit.window or (0, 0, *drawn.cache.source.size(unit.ref))
            r0, c0, r1, c1 = max(top, ut), max(left, ul), min(top + height, ut + uh), min(left + width, ul + uw)
            if r0 >= r1 or c0 >= c1:
                continue
            values = self.unit_map(drawn, unit)[layer]
            out[r0 - top:r1 - top, c0 - left:c1 - left] = values[r0 - ut:r1 - ut, c0 - ul:c1 - ul]
        return out

    def suggest(self, image: str | None, k: int, max_side: int = 2048) -> list[dict[str, Any]]:
        """``k`` suggested clicks on ``image`` (``pointseg.suggest``'s rule on the map's margin), scored on at most
        ``max_side`` pixels a side."""
        if self.drawn is None:
            raise ProjectError("no map yet: press Update map first")
        if not 1 <= k <= 100:
            raise ProjectError("ask for 1 to 100 suggestions")
        ref = self.ref(image)
        height, width = self.source.size(ref)
        step = max(1, -(-max(height, width) // max_side))
        rows = self.drawn.cache.window
        bands = [self.unit_layers(ref.id, (top, 0, min(rows, height - top), width), step)
                 for top in range(0, height, rows)]
        classes = np.concatenate([b[0] for b in bands])
        certainty = np.concatenate([b[1] for b in bands])
        clicks = self.project.clicks()
        existing = np.array([[c.row, c.col, c.cls] for c in clicks if c.image == ref.id],
                            dtype=np.int64).reshape(-1, 3)
        counts = np.bincount([c.cls for c in clicks], minlength=len(self.project.info["classes"]))
        found = suggest_clicks(1 - certainty / 100.0, np.where(classes == 255, 0, classes), classes != 255, existing,
                               class_rarity(counts), k, None, (height, width), step)
        return [{"rank": i + 1, "image": ref.id, "row": f.row, "col": f.col, "score": round(f.score, 4),
                 "predicted": f.predicted} for i, f in enumerate(found)]

    def unit_layers(self, image: str, window: tuple[int, int, int, int], step: int) -> tuple[np.ndarray, np.ndarray]:
        classes, certainty = self.classes_of(image, window), self.certainty_of(image, window)
        assert classes is not None and certainty is not None
        offset = step // 2
        return classes[offset::step, offset::step], certainty[offset::step, offset::step]

    def export_map(self, path: Path, image: str | None = None) -> Path:
        """The whole map of ``image`` as the page shows it (from cached features), through the CLI's writer
        (colours, names, QGIS style), a band of rows at a time."""
        drawn = self.drawn
        if drawn is None:
            raise ProjectError("no map yet: press Update map first")
        ref = self.ref(image)
        height, width = self.source.size(ref)
        georef = self.source.georef(ref)
        with MapWriter(path, drawn.fast.trained.classes).open(height, width, georef or GeoRef(None, None)) as out:
            for top in range(0, height, drawn.cache.window):
                h = min(drawn.cache.window, height - top)
                classes = self.layer_of(ref.id, (top, 0, h, width), 0, drawn)
                assert classes is not None
                out.write(top, classes, np.zeros_like(classes), classes != 255)
        return path

    def export_clicks(self, path: Path) -> Path:
        """The clicks as a GeoPackage, a point layer per georeferenced image in its CRS (pixel centres), fields
        ``class`` (names) and ``click_id``."""
        import pyogrio.raw
        import rasterio
        import shapely

        clicks = self.project.clicks()
        if not clicks:
            raise ProjectError("no clicks to export")
        names = [c["name"] for c in self.project.info["classes"]]
        layers = []
        for image in dict.fromkeys(c.image for c in clicks):
            georef = self.source.georef(self.ref(image))
            if georef is not None and georef.transform is not None:
                mine = [c for c in clicks if c.image == image]
                xy = [rasterio.Affine(*georef.transform) @ (c.col + 0.5, c.row + 0.5) for c in mine]
                layers.append((image, mine, xy, georef.crs))
        if not layers:
            raise ProjectError("the clicked images carry no georeferencing: export the point file instead")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.unlink()
            for image, mine, xy, crs in layers:
                pyogrio.raw.write(tmp, geometry=np.array(shapely.to_wkb(shapely.points(xy)), dtype=object),
                                  field_data=[np.array([names[c.cls] for c in mine], dtype=object),
                                              np.array([c.id for c in mine])],
                                  fields=["class", "click_id"], crs=crs, geometry_type="Point", driver="GPKG",
                                  layer=image, append=tmp.exists())
        return path

    def latest_run(self) -> Path:
        """The run directory whose model draws the map: the full recipe's once it finished, else the fast
        round's."""
        drawn = self.drawn
        if drawn is None:
            raise ProjectError("no model yet: press Update map first")
        full = drawn.fast.run_dir.parent / FULL
        return full if drawn.full is not None and (full / runs.MODEL).exists() else drawn.fast.run_dir

    def export_run(self, path: Path) -> Path:
        """The run directory of the map's model as a zip (``predict --run`` takes it unpacked)."""
        run = self.latest_run()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, tempfile.TemporaryDirectory(dir=path.parent) as folder:
            made = shutil.make_archive(str(Path(folder) / "run"), "zip", run.parent, run.name)
            Path(made).replace(tmp)
        return path

    def export_onnx(self, path: Path) -> Path:
        """The map's model as ONNX (``pointseg export``'s graph and Deepness metadata)."""
        run = self.latest_run()
        predictor = runs.load_run(run, device="cpu").predictor()
        path.parent.mkdir(parents=True, exist_ok=True)
        return export_onnx(predictor, path, Tiling.tile, Tiling.overlap,
                           resolution_cm=runs.training_resolution_cm(run, predictor.scale)).path

    # --- the full recipe in the background ---------------------------------------------------------------------

    def train_full(self, threads: int = 1) -> dict[str, Any]:
        """Start the default recipe warm-started from the latest fast round, in a process of its own (one thread,
        lower priority: the fast loop stays responsive); its map replaces the fast one when it is done."""
        if self.fast is None:
            raise ProjectError("press Update map first: the full recipe starts from the fast model")
        if self.training is not None and self.training.poll() is None:
            raise ProjectError("the full recipe is already training")
        run = self.fast.run_dir
        out = run.parent / FULL
        shutil.rmtree(out, ignore_errors=True)
        sets = [f"{k}={json.dumps(v)}" for k, v in flatten(self.settings).items()]
        self.training = full_recipe(run, out, self.inputs(run.parent / "points.json"), sets, threads=threads)
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
        drawn = self.drawn
        if drawn is not None and drawn.full is None and out.parent == drawn.fast.run_dir.parent:
            with self.lock:  # the full recipe's map replaces the fast one (scored again in the background)
                self.drawn = dataclasses.replace(drawn, full=runs.load_run(out, device="cpu"), maps={}, metrics=None)
            if self.project.info["source"].get("mask"):
                self.later = threading.Thread(target=self.follow_up, args=(self.drawn,), daemon=True)
                self.later.start()
        return {"state": "done", "step": steps, "steps": steps}

    def cancel_training(self) -> dict[str, Any]:
        if self.training is not None and self.training.poll() is None:
            self.cancelled = True
            self.training.terminate()
            self.training.wait(timeout=30)
        return self.training_status()

    def unit_map(self, drawn: Drawn, unit: Unit) -> np.ndarray:
        """The unit's classes and certainty (margin, percent) as ``drawn`` draws them, ``(2, h, w)`` uint8 (255
        where the image has no data), computed once: from the fast model's cached features, or by the full recipe's
        model when it has finished."""
        if unit.name not in drawn.maps:
            window = drawn.cache.source.read(unit.ref, unit.window)
            image = np.asarray(window["image"])
            valid = np.asarray(window.get("valid", np.ones(image.shape[:2], bool)))
            if drawn.full is not None:
                probs = torch.from_numpy(drawn.full.predictor().window_probabilities([{"image": image,
                                                                                         "valid": valid}])[0][0])
            else:
                probs = torch.from_numpy(unit_probabilities(drawn.fast.trained.model, drawn.cache, unit))
            sure = (certainty(probs, "margin") * 100).round().to(torch.uint8)
            layers = torch.stack([top_class(probs).to(torch.uint8), sure]).numpy()
            drawn.maps[unit.name] = np.where(valid, layers, np.uint8(255))
        return drawn.maps[unit.name]
