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
import re
import shutil
import subprocess
import tempfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pointseg import build, runs
from pointseg.app.project import Project, ProjectError, lower_priority, rgb
from pointseg.choices import Tiling
from pointseg.config import flatten, resolve_settings
from pointseg.data.classes import ClassTable
from pointseg.data.points import PointSet, save_points
from pointseg.data.sources import GeoRef, SampleRef, Source
from pointseg.engine import METRICS
from pointseg.engine.progress import PROGRESS, Progress
from pointseg.export import export_onnx
from pointseg.fast import unit_probabilities
from pointseg.fastloop import FAST_INFO, FastRun, fast_train, feature_cache, full_recipe
from pointseg.features import FeatureCache, Unit
from pointseg.inference import certainty, top_class
from pointseg.io import atomic_path
from pointseg.mapwriter import MapWriter
from pointseg.predictor import Predictor
from pointseg.suggest import class_rarity, suggest_clicks

ROUNDS, FULL, FULL_LOG = "rounds", "full", "full.log"
# what a run's export holds: the model, the run's records and what shows how it trained (predict --run reads the
# model; the int8 graph's calibration and the map's report read run.json)
RUN_EXPORT = (runs.MODEL, runs.CONFIG, runs.INFO, METRICS, "loss.png", FAST_INFO)


def failure(log: Path) -> str:
    """What a failed full training said: its ``pointseg: error:`` line, else the last line of its log."""
    try:
        lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
                 if line.strip()]
    except OSError:
        return "no log"
    errors = [line for line in lines if line.startswith("pointseg: error:")]
    return (errors or lines or ["no message"])[-1].removeprefix("pointseg: error: ")


def safe_name(image: str) -> str:
    """An image id as a file name (``Rural/3`` -> ``Rural_3``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", image)


def write_zip(path: Path, members: dict[str, Path]) -> Path:
    """A zip at ``path`` (written whole, then renamed into place) of ``members``: name in the zip -> file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, file in members.items():
            archive.write(file, name)
    return path


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
    full_predictor: Predictor | None = None  # made once: each tile of the full model's map goes through it
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None

    def with_full(self, run: Path) -> Drawn:
        """These maps drawn by the full recipe's model in ``run`` instead (scored again)."""
        full = runs.load_run(run, device="cpu")
        return dataclasses.replace(self, full=full, full_predictor=full.predictor(), maps={}, metrics=None)


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
        self.predicting = threading.Lock()  # one window at a time through the full model's predictor
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
            fast = fast_train(self.round_settings(), folder / "run", self.inputs(folder / "points.json"),
                              accuracy_now=False)  # the map first; the click accuracy in the background
            drawn = self.attach(n, fast)
            self.project.set_rounds(n)
        self.later = threading.Thread(target=self.follow_up, args=(drawn,), daemon=True)
        self.later.start()
        return {"round": n, "seconds": fast.seconds}

    def round_settings(self) -> dict[str, Any]:
        """The settings of the next round: with ``fast.head: auto``, the heads are compared by click accuracy in
        the first round and later rounds keep the head it chose (a comparison takes a fit per fold and head, the
        map must come in seconds)."""
        drawn = self.drawn
        chosen = drawn.fast.head if drawn is not None else None
        fast = dict(self.settings.get("fast", {}))
        if chosen is None or fast.get("head", "auto") != "auto":
            return self.settings
        return {**self.settings, "fast": {**fast, "head": chosen}}

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
        """Which model draws the map (``fast`` of round ``round``, or ``full``: the full recipe trained on that
        round's clicks), its click accuracy (the fast model's; the full model's is not computed: it would take
        ``fast.folds`` more trainings) and its score against the mask (``None`` while they are computed)."""
        drawn, later = self.drawn, self.later
        if drawn is None:
            return {"round": 0, "model": None, "click_accuracy": None, "fast_click_accuracy": None, "metrics": None,
                    "pending": False}
        fast = None if drawn.fast.later is not None else drawn.fast.accuracy
        choice = drawn.fast.choice
        head = choice.text() if choice is not None and choice.auto else f"head {drawn.fast.head}"
        return {"round": drawn.round, "model": "fast" if drawn.full is None else "full", "head": head,
                "click_accuracy": fast if drawn.full is None else None, "fast_click_accuracy": fast,
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
                                       info["click_accuracy"], head=info.get("head", "softmax")), cache)
        if (self.round_dir(n) / FULL / runs.MODEL).exists():
            self.drawn = drawn.with_full(self.round_dir(n) / FULL)

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
        ``max_side`` pixels a side; they replace the image's unanswered ones in the project."""
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
        suggestions = [{"rank": i + 1, "image": ref.id, "row": f.row, "col": f.col, "score": round(f.score, 4),
                        "predicted": f.predicted} for i, f in enumerate(found)]
        self.project.set_suggestions(ref.id, suggestions)  # kept until answered or dismissed
        return suggestions

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

    def export_map_zip(self, path: Path, image: str | None = None) -> Path:
        """The map of ``image`` with what QGIS reads beside it (class names in ``.tif.aux.xml``, the style in
        ``.qml``), in one zip named after the image."""
        name = safe_name(self.ref(image).id)
        with tempfile.TemporaryDirectory(dir=self.project.folder) as folder:
            tif = self.export_map(Path(folder) / f"{name}.tif", image)
            files = [tif, tif.with_name(tif.name + ".aux.xml"), tif.with_suffix(".qml")]
            return write_zip(path, {f.name: f for f in files if f.exists()})

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
        """What ``predict --run`` needs of the map's run directory, as a zip of ``run/``: the model and the run's
        records (``RUN_EXPORT``); not its checkpoints, lock, cached ONNX graphs or progress."""
        run = self.latest_run()
        return write_zip(path, {f"run/{name}": run / name for name in RUN_EXPORT if (run / name).is_file()})

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
        self.training = full_recipe(run, out, self.inputs(run.parent / "points.json"), sets, threads=threads,
                                    log=run.parent / FULL_LOG)
        self.training_dir, self.cancelled = out, False
        return self.training_status()

    def training_status(self) -> dict[str, Any]:
        """``idle``, ``running`` (with the step reached, the speed over the last minute and the time left:
        ``engine.progress``), ``done``, ``failed`` (with the run's error) or ``cancelled``."""
        process, out = self.training, self.training_dir
        if process is None or out is None:
            return {"state": "idle"}
        try:
            progress = json.loads((out / PROGRESS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            progress = {"step": 0, "steps": None}  # setting up: the first step is not done yet
        code = process.poll()
        if code is None:
            return {"state": "running", **progress, "text": Progress.text(progress)}
        if self.cancelled:
            return {"state": "cancelled", "step": progress["step"], "steps": progress["steps"]}
        if code != 0 or not (out / runs.MODEL).exists():
            return {"state": "failed", "code": code, "message": failure(out.parent / FULL_LOG)}
        drawn = self.drawn
        if drawn is not None and drawn.full is None and out.parent == drawn.fast.run_dir.parent:
            with self.lock:  # the full recipe's map replaces the fast one (scored again in the background)
                self.drawn = drawn.with_full(out)
            if self.project.info["source"].get("mask"):
                self.later = threading.Thread(target=self.follow_up, args=(self.drawn,), daemon=True)
                self.later.start()
        return {"state": "done", "step": progress["steps"], "steps": progress["steps"]}

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
            if drawn.full_predictor is not None:
                with self.predicting:  # the predictor's backend prepares its graph for a window size once
                    probs = torch.from_numpy(drawn.full_predictor.window_probabilities(
                        [{"image": image, "valid": valid}])[0][0])
            else:
                probs = torch.from_numpy(unit_probabilities(drawn.fast.trained.model, drawn.cache, unit))
            sure = (certainty(probs, "margin") * 100).round().to(torch.uint8)
            layers = torch.stack([top_class(probs).to(torch.uint8), sure]).numpy()
            drawn.maps[unit.name] = np.where(valid, layers, np.uint8(255))
        return drawn.maps[unit.name]
