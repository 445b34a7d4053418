"""Workflows: train, evaluate, predict and import clicks, as plain functions the CLI, the demo and the benchmarks
share."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pointseg import build, curate, runs
from pointseg.data.classes import ClassTable
from pointseg.data.raster import RASTER_SUFFIXES
from pointseg.data.sources import ImageFolder
from pointseg.engine import Task, load_checkpoint, train
from pointseg.engine.distributed import Distribution, barrier, start_distributed, stop_distributed
from pointseg.evaluate import evaluate, evaluate_map, write_predictions
from pointseg.io import atomic_path, check_writable, write_json, write_text
from pointseg.maps import MapResult, map_class_names, predict_raster
from pointseg.point_import import ImportReport, class_table_from_values, import_points, read_point_layer
from pointseg.points import PointSet, save_points
from pointseg.report import plot_curation, plot_loss

log = logging.getLogger(__name__)


def run_training(settings: dict, out: str | Path, inputs: build.TrainInputs, resume: bool = False,
                 argv: list[str] | None = None, on_step: Callable[[int], None] | None = None) -> Path:
    """Train into run directory ``out``; returns the path of the saved model.

    ``settings``: the config keys asked for (a whole config, or only the keys to change), put over the defaults
    for a new run and over the run's saved config with ``resume`` (where only ``runs.RESUMABLE`` keys may
    differ). ``inputs``: what the run trains on. ``inputs.labeled``: a file of the sample ids whose masks (or
    points) are used; the other images of the split become unlabeled data. ``inputs.unlabeled``: folders of
    further unlabeled images. A method that uses unlabeled data and gets none of these learns from the unlabeled
    pixels of the labeled images. ``inputs.tags``: image-level labels of the unlabeled images (CSV
    ``id,classes``), used by PseudoSeg's Grad-CAMs. Everything is set up before the run directory is written;
    a new run that fails before its first checkpoint is removed again.

    Started by torchrun, every process trains its share of each batch (``engine.distributed``); rank 0 alone
    writes the run directory.
    """
    run_dir = Path(out)
    prepare = runs.prepare_resume if resume else runs.prepare_new
    cfg, inputs = prepare(run_dir, settings, inputs)  # every process, before any writes
    runtime = build.build_runtime(cfg)
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    distribution, device = start_distributed(runtime.device)
    try:
        return _train_run(cfg, run_dir, inputs, resume, argv, on_step, distribution, device, runtime.amp)
    finally:
        stop_distributed()


def _train_run(cfg: dict, run_dir: Path, inputs: build.TrainInputs, resume: bool, argv: list[str] | None,
               on_step: Callable[[int], None] | None, distribution: Distribution, device: torch.device,
               amp: bool) -> Path:
    initial = None
    if inputs.init is not None:
        saved = runs.read_model(inputs.init)
        initial = build.Initial(saved.state, saved.heads, saved.data)
    run = build.build_training(cfg, inputs, initial)
    options = build.build_train_options(cfg)
    checkpoint_path = run_dir / runs.CHECKPOINT
    checkpoint = load_checkpoint(checkpoint_path, device) if resume and checkpoint_path.exists() else None
    created = False
    facts = {"device": str(device), "amp": amp, "parameters": run.model.parameter_counts(),
             "processes": distribution.world_size}
    if distribution.is_main:
        if resume:
            start = checkpoint["step"] if checkpoint else 0
            log.info("resuming %s from step %d of %d", run_dir, start, options["steps"])
            runs.record_resume(run_dir, cfg, argv, start, **facts)
        else:
            created = runs.start_run(run_dir, cfg, inputs, argv, **facts)
    barrier(distribution)
    try:
        with runs.locked(run_dir) if distribution.is_main else contextlib.nullcontext():
            tasks = [Task(part.dataset, part.unlabeled, part.name) for part in run.parts]
            train(run.model, tasks, run.method, run_dir, device=device, amp=amp, checkpoint=checkpoint,
                  on_step=on_step, distribution=distribution, **options)
    except BaseException:
        if distribution.is_main and not resume and not checkpoint_path.exists():
            runs.discard_run(run_dir, created)  # nothing to resume: a retry starts afresh
        raise
    if distribution.is_main:
        runs.save_model(run_dir / runs.MODEL, run.model, cfg, run.tables, run.scaling, run.data)
        plot_loss(run_dir / runs.METRICS, run_dir / "loss.png")
    barrier(distribution)  # the model is written before any process reports it
    return run_dir / runs.MODEL


def run_evaluation(run: str | Path, data_root: str | Path, split: str, out: str | Path, flips: bool = False,
                   dataset_name: str | None = None) -> dict:
    """Metrics of a finished run (directory or ``model.pt``) on ``split`` at full label resolution (``flips``:
    with test-time augmentation). ``dataset_name``: which of the run's datasets (model heads) ``data_root`` is;
    required for a model of several."""
    check_writable(Path(out).parent)
    trained = runs.load_run(run, head=dataset_name)
    cfg = trained.head_cfg
    source = build.build_source(cfg, data_root, split)
    dataset = build.build_eval_dataset(cfg, source, trained.scaling)
    amp = build.build_inference_amp(trained.head_cfg, model_device(trained.model))
    return evaluate(trained.model, dataset, trained.classes, out, amp=amp, flips=flips)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@dataclass(frozen=True)
class Tiling:
    """How rasters are cut for prediction: ``tile`` model pixels a side, neighbours overlapping by ``overlap``,
    ``batch_size`` windows per forward pass."""

    tile: int = 512
    overlap: float = 0.5
    batch_size: int = 4
    cog: bool = False  # write Cloud-Optimised GeoTIFFs (with overviews)
    flips: bool = False  # test-time augmentation: also predict each window flipped (4 forward passes)


def map_raster(trained: runs.TrainedModel, raster: str | Path, target: str | Path, tiling: Tiling = Tiling(),
               confidence: str | Path | None = None) -> MapResult:
    """The GeoTIFF map (and ``confidence``) of one raster by a trained model; see ``pointseg.maps``."""
    source = build.build_raster_source(trained.head_cfg, (raster,), trained.classes)
    return predict_raster(trained.model, source, source.refs[0], target, classes=trained.classes,
                          scaling=trained.scaling, tile=tiling.tile, overlap=tiling.overlap,
                          batch_size=tiling.batch_size, confidence=confidence, cog=tiling.cog, flips=tiling.flips,
                          amp=build.build_inference_amp(trained.head_cfg, model_device(trained.model)),
                          **build.build_map_options(trained.head_cfg))


def run_map_evaluation(mask: str | Path, out: str | Path, run: str | Path | None = None,
                       raster: str | Path | None = None, map_path: str | Path | None = None,
                       classes: str | Path | None = None, tiling: Tiling | None = None) -> dict:
    """Metrics against a reference mask raster: of the map a run makes of ``raster`` (written with its confidence
    to a temporary folder beside ``out``), or of an existing ``map_path``. ``classes``: a class table
    (``value,name,r,g,b`` with the mask's values) for a map without a run, or to read the mask's values for a run
    trained with names only; it holds the run's classes (or the map's, from its ``.aux.xml``), in any order, and
    may hold more (classes of the mask the map cannot predict: scored as errors)."""
    out = Path(out)
    check_writable(out.parent)
    trained = runs.load_run(run) if run is not None else None
    table = ClassTable.from_csv(classes, color_coded=False) if classes else None
    if table is not None:  # index the table's classes as the map does: the run's order, or the map's own names
        order = trained.classes.names if trained is not None else map_class_names(map_path) if map_path else None
        if order:  # classes of the mask the map never predicts come last: scored, never right
            order = tuple(order) + tuple(n for n in table.names if n not in order)
            table = table.in_order(order, f"{classes}: the map's classes")
    table = table or (trained.classes if trained is not None else None)
    if table is None:
        raise ValueError("scoring a --map needs its class table: --classes TABLE.csv (or --run)")
    if map_path is not None:
        return evaluate_map(map_path, mask, table, out)
    if trained is None or raster is None:
        raise ValueError("evaluating a run against a --mask needs --run and --raster (or --map)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".map-") as tmp:
        result = map_raster(trained, raster, Path(tmp) / "map.tif", tiling or Tiling(), Path(tmp) / "confidence.tif")
        return evaluate_map(result.map, mask, table, out, confidence=result.confidence, image=raster,
                            image_bands=result.bands[:3])


def raster_inputs(path: str | Path) -> list[Path] | None:
    """The rasters to map: a raster file, a text file listing rasters (one per line, relative to the list), or a
    folder holding rasters; ``None`` for a folder of image files (PNG/JPEG tiles, predicted as PNG masks)."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".txt":
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        rasters = [path.parent / line for line in lines if line and not line.startswith("#")]
        if not rasters:
            raise ValueError(f"{path}: the list of rasters is empty")
        return rasters
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such raster, list or folder")
    rasters = sorted(p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
    return rasters or None


def run_prediction(run: str | Path, inputs: str | Path, out: str | Path, tiling: Tiling = Tiling(),
                   confidence: bool = False, ray_workers: int | None = None, ray_address: str | None = None,
                   dataset_name: str | None = None) -> tuple[list[Path], list[str]]:
    """Predict every readable input: GeoTIFF maps ``<out>/<name>.tif`` for rasters (see ``pointseg.maps``; with
    ``confidence`` also ``<name>_confidence.tif``), index and colour PNG masks for a folder of image files.
    ``ray_workers``: map the rasters on that many Ray actors (0: one per CPU; see ``pointseg.ray_maps``), on the
    cluster at ``ray_address`` or a local one. ``dataset_name``: the model head (dataset) to predict with.

    Unreadable inputs are skipped, not fatal: returns the written paths and one message per skipped input
    (``<file>: <reason>``), which are also listed in ``<out>/unreadable.txt``.
    """
    check_writable(out)
    rasters = raster_inputs(inputs)
    unreadable: list[str] = []
    if rasters is None:
        if ray_workers is not None:
            raise ValueError("--ray maps rasters; a folder of image files is predicted without it")
        trained = runs.load_run(run, head=dataset_name)
        amp = build.build_inference_amp(trained.head_cfg, model_device(trained.model))
        dataset = build.build_eval_dataset(trained.head_cfg, ImageFolder(inputs, trained.classes), trained.scaling)
        written = write_predictions(trained.model, dataset, trained.classes, out, amp=amp, unreadable=unreadable,
                                    flips=tiling.flips)
    else:
        jobs = [(Path(r), Path(out) / f"{Path(r).stem}.tif",
                 Path(out) / f"{Path(r).stem}_confidence.tif" if confidence else None) for r in rasters]
        if ray_workers is not None:
            from pointseg.ray_maps import map_rasters_ray

            runs.load_run(run, head=dataset_name)  # a missing or broken model fails here, not in every actor
            written, unreadable = map_rasters_ray(run, jobs, tiling, ray_workers or None, ray_address, dataset_name)
        else:
            trained = runs.load_run(run, head=dataset_name)
            written = []
            for raster, target, conf in jobs:
                try:
                    result = map_raster(trained, raster, target, tiling, conf)
                except ValueError as e:
                    unreadable.append(str(e))
                    continue
                written += [result.map] + ([result.confidence] if result.confidence else [])
    listing = Path(out) / "unreadable.txt"
    if unreadable:
        write_text(listing, "".join(f"{m}\n" for m in unreadable))
    else:
        listing.unlink(missing_ok=True)  # from an earlier prediction into the same folder
    return written, unreadable


def import_point_layer(vector: str | Path, rasters: list[str | Path], class_field: str, out: str | Path,
                       layer: str | None = None, crs: str | None = None, classes: str | Path | None = None,
                       x_field: str = "x", y_field: str = "y") -> tuple[PointSet, ImportReport]:
    """Clicks of a vector layer onto ``rasters`` as the point file ``out``; see ``pointseg.point_import``.

    The classes come from the class table ``classes`` (``value,name,r,g,b``: names or raster values in the field)
    or else from the field's distinct values; the table used is written beside ``out`` as ``<stem>.classes.csv``.
    """
    out = Path(out)
    check_writable(out.parent)
    points_layer = read_point_layer(vector, class_field, layer, crs, x_field, y_field)
    table = (ClassTable.from_csv(classes, color_coded=False) if classes
             else class_table_from_values(points_layer.values))
    points, report = import_points(points_layer, rasters, table)
    if report.imported == 0:
        raise ValueError(f"{vector}: no point could be placed on the rasters\n{report.summary()}")
    save_points(out, points)
    table.to_csv(out.with_suffix(".classes.csv"))
    return points, report


@dataclass(frozen=True)
class SuggestRequest:
    """``per_image`` clicks to propose per image, scored by ``score`` (``suggest.SCORES``), ``min_distance``
    full-resolution pixels apart and from the clicks so far (``None``: ``suggest.auto_distance``), classes with few
    clicks favoured by ``class_weight`` (0: not at all), probabilities averaged over ``flips``."""

    per_image: int
    score: str = "margin"
    min_distance: float | None = None
    class_weight: float = 1.0
    flips: bool = False


def run_suggestion(run: str | Path, out: str | Path, request: SuggestRequest, data_root: str | Path | None = None,
                   split: str = "Train", rasters: tuple[str | Path, ...] = (),
                   points: str | Path | None = None, dataset_name: str | None = None) -> PointSet:
    """Propose the next clicks on the images of ``split`` under ``data_root`` (or on ``rasters``) for the model of
    ``run``, given the clicks made so far (``points``). Writes the point file ``out`` (the clicks so far plus the
    suggestions, whose class is ``null``), an overlay picture per image in ``<out stem>_overlays/`` and, for
    rasters, a GeoPackage ``<out stem>.gpkg`` with a layer per raster that an analyst opens in QGIS to classify.
    ``dataset_name``: the dataset (head) of a model trained on several."""
    from pointseg.points import UNCLASSIFIED, check_against, load_points
    from pointseg.report import plot_suggestions
    from pointseg.suggest import auto_distance, class_rarity, suggest_clicks

    if request.per_image < 1:
        raise ValueError(f"--per-image must be at least 1, got {request.per_image}")
    out = Path(out)
    check_writable(out.parent)
    trained = runs.load_run(run, head=dataset_name)
    names = list(trained.classes.names)
    made = load_points(points, unclassified=True) if points else None
    if made is not None and made.classes != names:
        raise ValueError(f"{points}: classes {made.classes} differ from the run's classes {names} (names and order "
                         "must match: suggest for the run these clicks trained)")
    counts = made.class_counts() if made is not None else np.zeros(len(names), dtype=np.int64)
    rarity = class_rarity(counts, request.class_weight)
    images: dict[str, np.ndarray] = {}
    sizes: dict[str, tuple[int, int]] = {}
    scores: dict[str, list] = {}
    pictures = out.parent / f"{out.stem}_overlays"
    layers: list[tuple[str, list, Any]] = []

    def add(image_id: str, size: tuple[int, int], uncertainty: np.ndarray, predicted: np.ndarray,
            valid: np.ndarray | None, picture: np.ndarray, step: int) -> list:
        none = np.zeros((0, 3), np.int64)
        existing = made.images.get(image_id, none) if made is not None else none
        distance = request.min_distance
        if distance is None:
            distance = auto_distance(size, len(existing) + request.per_image)
        try:
            found = suggest_clicks(uncertainty, predicted, valid, existing, rarity, request.per_image, distance,
                                   size, step)
        except ValueError as e:
            raise ValueError(f"{image_id}: {e}") from e
        new = np.array([[s.row, s.col, UNCLASSIFIED] for s in found], dtype=np.int64).reshape(-1, 3)
        images[image_id], sizes[image_id] = np.concatenate([existing, new]), size
        scores[image_id] = [None] * len(existing) + [round(s.score, 4) for s in found]
        shown = max(1, int(np.ceil(max(picture.shape[:2]) / 512)))
        plot_suggestions(picture[::shown, ::shown], uncertainty[::shown, ::shown], existing // [step * shown,
                         step * shown, 1], new // [step * shown, step * shown, 1], trained.classes,
                         pictures / f"{image_id.replace('/', '_')}.png", f"{image_id}: {len(found)} suggested clicks")
        return found

    if rasters:
        if data_root is not None:
            raise ValueError("give --data-root or --raster, not both")
        for raster in rasters:
            layers.append(_suggest_on_raster(trained, Path(raster), request, out, add))
    elif data_root is not None:
        source = build.build_source(trained.head_cfg, data_root, split, require_masks=False)
        if source.band_count(source.refs[0]) != trained.scaling.bands:
            raise ValueError(f"{source.refs[0].image}: {source.band_count(source.refs[0])} bands, but the model of "
                             f"{run} takes {trained.scaling.bands}")
        if made is not None:
            check_against(made, [r.id for r in source.refs], {r.id: source.size(r) for r in source.refs
                                                            if r.id in made.images}, names)
        dataset = build.build_eval_dataset(trained.head_cfg, source, trained.scaling)
        amp = build.build_inference_amp(trained.head_cfg, model_device(trained.model))
        from pointseg.evaluate import display_rgb
        from pointseg.inference import iter_logits
        from pointseg.suggest import certainty

        for sample, logits in iter_logits(trained.model, dataset, amp, flips=request.flips):
            probs = logits.softmax(0)
            size = (int(probs.shape[-2]), int(probs.shape[-1]))
            valid = sample["valid"].numpy() if "valid" in sample else None
            picture = display_rgb(torch.nn.functional.interpolate(sample["image"][None], size=size)[0].numpy())
            add(sample["id"], size, (1 - certainty(probs, request.score)).numpy(), probs.argmax(0).numpy(), valid,
                picture, 1)
    else:
        raise ValueError("suggest needs --data-root (with --split) or --raster")
    meta = {"suggested": {"run": str(run), "per_image": request.per_image, "score": request.score,
                          "min_distance": request.min_distance, "class_weight": request.class_weight,
                          "flips": request.flips, "clicks_so_far": str(points) if points else None}}
    extra = {k: {**(made.extra.get(k, {}) if made is not None else {}), "suggestion_score": v}
             for k, v in scores.items()}
    if made is not None:  # images with clicks but not scored here keep them
        for k in made.images.keys() - images.keys():
            images[k], sizes[k] = made.images[k], made.sizes[k]
    suggested = PointSet(names, images, sizes, {**(made.meta if made else {}), **meta}, None, extra)
    save_points(out, suggested)
    if layers:
        _write_suggestion_layers(out.with_suffix(".gpkg"), layers, names)
    return suggested


def _suggest_on_raster(trained: runs.TrainedModel, raster: Path, request: SuggestRequest, out: Path,
                       add: Callable) -> tuple[str, list, Any]:
    """Map ``raster`` with the uncertainty as its confidence, read both back at most 2048 pixels a side (bounded
    memory whatever the raster) and suggest there; returns (layer name, suggestions, georeferencing)."""
    import rasterio
    from PIL import Image
    from rasterio.enums import Resampling

    from pointseg.data.raster import display_thumbnail, picture_bands
    from pointseg.maps import NODATA

    source = build.build_raster_source(trained.head_cfg, (raster,), trained.classes)
    ref = source.refs[0]
    height, width = source.size(ref)
    step = max(1, int(np.ceil(max(height, width) / 2048)))
    shape = (-(-height // step), -(-width // step))
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".suggest-") as tmp:
        predict_raster(trained.model, source, ref, Path(tmp) / "map.tif", classes=trained.classes,
                       scaling=trained.scaling, confidence=Path(tmp) / "certainty.tif", flips=request.flips,
                       certainty_kind=request.score, amp=build.build_inference_amp(trained.head_cfg,
                                                                                   model_device(trained.model)),
                       **build.build_map_options(trained.head_cfg))
        with rasterio.open(Path(tmp) / "map.tif") as m, rasterio.open(Path(tmp) / "certainty.tif") as c:
            predicted = m.read(1, out_shape=shape, resampling=Resampling.nearest)
            certain = c.read(1, out_shape=shape, resampling=Resampling.nearest).astype(np.float64) / 100
    valid = predicted != NODATA
    picture = display_thumbnail(raster, picture_bands(raster, source.bands[ref.image]), max(shape))
    picture = np.asarray(Image.fromarray(picture).resize(shape[::-1], Image.Resampling.BILINEAR))
    found = add(ref.id, (height, width), np.where(valid, 1 - certain, 0), np.where(valid, predicted, 0), valid,
                picture, step)
    return ref.id, found, source.georef(ref)


def _write_suggestion_layers(path: Path, layers: list[tuple[str, list, Any]], names: list[str]) -> None:
    """A GeoPackage with one point layer per raster (its CRS): rank, score, the model's class and an empty
    ``class`` field for the analyst."""
    import pyogrio
    import shapely
    from rasterio.transform import Affine, xy

    with atomic_path(path) as tmp:
        tmp.unlink()
        for i, (name, found, geo) in enumerate(layers):
            transform = Affine(*geo.transform)
            xs, ys = xy(transform, [s.row for s in found], [s.col for s in found], offset="center")
            geometry = shapely.to_wkb(shapely.points(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)))
            fields = [np.arange(1, len(found) + 1), np.array([s.score for s in found]),
                      np.array([names[s.predicted] for s in found], dtype=object),
                      np.array([""] * len(found), dtype=object)]
            pyogrio.raw.write(str(tmp), geometry, fields, ["rank", "score", "model_class", "class"], layer=name,
                              driver="GPKG", geometry_type="Point", crs=geo.crs, append=i > 0)


@dataclass(frozen=True)
class CurationRequest:
    """How ``run_curation`` selects: ``budget`` images over ``clusters`` K-Means clusters of the labeled images,
    entropy over the pixels not predicted as ``background`` (a class name; ``auto``: a class named background,
    if any; None: every pixel), lowest or highest first (``direction``), images resized to ``size`` and scored
    ``batch_size`` at a time."""

    budget: int
    clusters: int
    background: str | None = "auto"
    direction: str = "lowest"
    size: int = 256
    batch_size: int = 16


def run_curation(run: str | Path, data_root: str | Path, split: str, pools: tuple[str | Path, ...],
                 out: str | Path, request: CurationRequest, dataset_name: str | None = None) -> dict:
    """Select ``request.budget`` images of the unlabeled ``pools`` (folders or ``.txt`` lists) with the model of
    ``run`` and the images of ``split`` under ``data_root`` (see ``pointseg.curate``): writes ``out`` (one image
    path per line, an ``--unlabeled`` input), ``<out stem>_report.json`` and the two plots beside it."""
    out = Path(out)
    check_writable(out.parent)
    if request.budget < 1:
        raise ValueError(f"--budget must be at least 1, got {request.budget}")
    trained = runs.load_run(run, head=dataset_name)
    cfg = trained.head_cfg
    labeled = build.build_source(cfg, data_root, split, require_masks=False)
    pool = [ImageFolder(p, trained.classes, recursive=True, images=cfg["data"]["images"]) for p in pools]
    background = curate.background_index(trained.classes.names, request.background)
    amp = build.build_inference_amp(cfg, model_device(trained.model))
    views = [curate.SquareImages(s, request.size, trained.scaling, cfg["labels"]["mode"]) for s in ([labeled], pool)]
    ours, theirs = (curate.score_images(trained.model, v, background, request.batch_size, amp, name)
                    for v, name in zip(views, ("labeled", "pool"), strict=True))
    centres, labeled_cluster = curate.cluster_labeled(ours.features, request.clusters, cfg["seed"])
    cluster = curate.nearest_cluster(theirs.features, centres)
    counts = [np.bincount(c, minlength=request.clusters) for c in (labeled_cluster, cluster)]
    quota = curate.quotas(counts[0], counts[1], request.budget)
    chosen = curate.select(cluster, theirs.entropy, quota, request.direction)
    write_text(out, "".join(f"{views[1].path(i).resolve()}\n" for i in chosen))
    report = curate.report(request.budget, request.clusters, request.direction, counts, quota, chosen, cluster,
                           theirs, [str(p) for p in pools], background)
    write_json(out.with_name(out.stem + "_report.json"), report)
    plot_curation(out.with_name(out.stem), theirs.entropy, chosen, report["clusters"],
                  *curate.contact_sheet(views[1], chosen, theirs.entropy))
    return report
