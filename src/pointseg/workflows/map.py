"""``pointseg map``'s work: a raster and a GIS point layer in, a trained model, a GeoTIFF map and a short report
out: import the clicks -> train on the raster -> map it -> ``REPORT.md``."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window as RioWindow

from pointseg import build, fastloop, runs
from pointseg.config import deep_update, default_config, load_config, load_settings, merge
from pointseg.data.classes import ClassTable
from pointseg.data.points import PointSet
from pointseg.data.raster import display_thumbnail, ground_sample_distance, open_raster, picture_bands, read_thumbnail
from pointseg.io import check_writable, write_text
from pointseg.maps import map_raster
from pointseg.mapwriter import NODATA
from pointseg.point_import import ImportReport
from pointseg.report import md_code_block, md_text, plot_overlays
from pointseg.workflows.options import MapOptions
from pointseg.workflows.points import import_point_layer
from pointseg.workflows.train import click_accuracy_text, run_training

COARSE_GSD_M = 1.0  # pixels at least this large (metres) are trained and mapped at their own resolution
# The fast model's hypercolumn on such rasters: the bands and their local means with every encoder stage, chosen on
# other dates of a Sentinel-2 scene than those benchmarked (BENCHMARKS 9, select_s2).
COARSE_HYPERCOLUMN = {"hypercolumn_stages": [0, 1, 2, 3, 4, 5], "hypercolumn_scale": 0.25}
# The fast model on such rasters learns from the clicks alone: a propagated region of 10-300 m pixels crosses
# fields and shores, and its samples outweigh the clicks (BENCHMARKS 13: every head lost 0.1-0.2 mIoU with them).
COARSE_FAST_LABELS = {"propagate": "none"}


@dataclass
class MapRequest:
    """What ``pointseg map`` is asked: the raster, the point layer and its class field, and the output folder;
    ``layer``/``crs``/``x_field``/``y_field`` as for ``points import``; ``classes`` a class table with colours;
    ``config``/``overrides`` the recipe (over ``raster_defaults``)."""

    raster: Path
    vector: Path
    class_field: str
    out: Path
    layer: str | None = None
    crs: str | None = None
    x_field: str = "x"
    y_field: str = "y"
    classes: Path | None = None
    config: Path | None = None
    overrides: list[str] = field(default_factory=list)
    options: MapOptions = MapOptions()
    confidence: bool = False
    argv: list[str] | None = None  # the command line, recorded in the run
    fast: bool = False  # the fast model (``train --fast``) instead of the full recipe


def raster_defaults(raster: str | Path, fast: bool = False) -> tuple[dict, str]:
    """Settings that suit ``raster``, with the reason: imagery with pixels of ``COARSE_GSD_M`` or more (Sentinel-2,
    Landsat, most satellite data) is used at full resolution (``data.scale: 1``), since halving 10 m pixels
    erases fields and roads, and the ``fast`` model's head also sees the bands (``COARSE_HYPERCOLUMN``) and learns
    from the clicks alone (``COARSE_FAST_LABELS``); finer aerial or drone imagery keeps the defaults."""
    gsd = ground_sample_distance(raster)
    if gsd is not None and gsd >= COARSE_GSD_M:
        settings = {"data": {"scale": 1.0}, **({"model": dict(COARSE_HYPERCOLUMN),
                                                  "labels": dict(COARSE_FAST_LABELS)} if fast else {})}
        return settings, (f"pixels of {gsd:.3g} m: trained and mapped at full resolution"
                          + (", the fast model on the clicks alone (no propagation)" if fast else ""))
    default = load_config()["data"]["scale"]
    where = f"pixels of {gsd:.3g} m" if gsd is not None else "no CRS"
    return {}, f"{where}: trained and mapped at {default:g} of the raster's resolution"


def run_map(request: MapRequest) -> Path:
    """Import the clicks, train, map the raster; returns ``<out>/REPORT.md``. Re-running into the same folder
    resumes the run if it was interrupted (the same inputs are required: other clicks are refused before anything
    is replaced). Nothing is left in ``out`` by a run that fails before its first checkpoint."""
    out, run_dir = request.out, request.out / "run"
    check_writable(out)
    defaults, why = raster_defaults(request.raster, request.fast)
    settings = deep_update(defaults, load_settings(request.config, request.overrides))  # checked before any write
    cfg, times = merge(default_config(), settings), {}
    t0 = time.perf_counter()
    print(f"[1/3] importing clicks of {request.vector} (field {request.class_field!r}) onto {request.raster}")
    created = not out.exists()
    points, report, placed = import_clicks(request, resume=(run_dir / runs.CONFIG).exists())
    print(report.summary())
    times["import"] = time.perf_counter() - t0
    recipe = "the fast model (a head over the frozen encoder's features, fast.head)" if request.fast else \
        build.describe(cfg)
    print(f"[2/3] training on {len(points)} clicks: {recipe} ({why})")
    t0 = time.perf_counter()
    inputs = build.TrainInputs(points=out / "points.json", rasters=(request.raster,))
    try:
        if not request.fast:
            run_training(settings, run_dir, inputs, resume=(run_dir / runs.CONFIG).exists(), argv=request.argv)
        elif not (run_dir / fastloop.FAST_INFO).exists():  # a fast run already there was fitted on these clicks
            shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished fit: it takes seconds to redo
            fastloop.fast_train(settings, run_dir, inputs, request.argv)
    except BaseException:
        if not (run_dir / runs.CHECKPOINT).exists():  # nothing to resume: leave nothing behind
            for path in placed:
                path.unlink(missing_ok=True)
            if created and out.is_dir() and not any(out.iterdir()):
                out.rmdir()
        raise
    times["train"] = time.perf_counter() - t0
    print(f"[3/3] mapping {request.raster}")
    return map_and_report(request, report.summary(), why, times)


def import_clicks(request: MapRequest, resume: bool) -> tuple[PointSet, ImportReport, list[Path]]:
    """The clicks as ``<out>/points.json`` and its class table. They are imported beside it first; a run already
    in ``out`` made from other clicks (another layer, class field or table) is refused before anything is
    replaced. Returns the points, the import report and the files this call placed."""
    out = request.out
    out.mkdir(parents=True, exist_ok=True)
    final = [out / "points.json", out / "points.classes.csv"]
    with tempfile.TemporaryDirectory(dir=out, prefix=".import-") as tmp:
        points, report = import_point_layer(request.vector, [request.raster], request.class_field,
                                            Path(tmp) / "points.json", request.layer, request.crs, request.classes,
                                            request.x_field, request.y_field)
        fresh = [Path(tmp) / p.name for p in final]
        if resume and any(not p.exists() or p.read_bytes() != f.read_bytes() for p, f in zip(final, fresh,
                                                                                              strict=True)):
            raise ValueError(f"{out}: holds a map run trained on other clicks (a different point layer, class field "
                             "or class table than this command's); map into another --out, or remove that folder")
        placed = [p for p in final if not p.exists()]
        for f, p in zip(fresh, final, strict=True):
            os.replace(f, p)
    return points, report, placed


def map_and_report(request: MapRequest, import_summary: str, why: str, times: dict[str, float]) -> Path:
    """Map the raster with the trained run and write ``REPORT.md`` (with the picture and the class areas)."""
    out = request.out
    trained = runs.load_run(out / "run")
    writer = request.options.writer(out / "map.tif", trained.classes,
                                    out / "confidence.tif" if request.confidence else None)
    predictor = request.options.predictor(trained, [request.raster])
    result = map_raster(predictor, request.raster, writer, request.options.tiling, aoi=request.options.aoi)
    request.options.products(result, trained.classes)
    times["map"] = result.seconds
    picture = display_thumbnail(request.raster, picture_bands(request.raster, result.bands))
    plot_overlays([(request.raster.stem, picture, None, read_thumbnail(result.map)[..., 0])], trained.classes,
                  out / "map.png")
    text = report_text(request, trained, import_summary, why, class_areas(result.map, trained.classes), times,
                       f"{predictor.backend}, {predictor.precision}")
    path = write_text(out / "REPORT.md", text)
    print(f"done: {path}")
    return path


def class_areas(map_path: str | Path, classes: ClassTable, rows: int = 512) -> list[dict]:
    """Pixels and area of each class of a map (read in bands of ``rows`` rows); area in the CRS's square units."""
    counts = np.zeros(classes.num_classes, dtype=np.int64)
    with open_raster(map_path) as ds:
        pixel_area = abs(ds.transform.a * ds.transform.e - ds.transform.b * ds.transform.d)
        for top in range(0, ds.height, rows):
            values = ds.read(1, window=RioWindow(0, top, ds.width, min(rows, ds.height - top)))
            counts += np.bincount(values[values != NODATA].ravel(), minlength=classes.num_classes)[:classes.num_classes]
    total = max(int(counts.sum()), 1)
    return [{"class": name, "pixels": int(c), "share": int(c) / total, "area": int(c) * pixel_area}
            for name, c in zip(classes.names, counts, strict=True)]


def report_text(request: MapRequest, trained: runs.TrainedModel, import_summary: str, why: str, areas: list[dict],
                times: dict[str, float], mapped_by: str = "") -> str:
    """``REPORT.md`` of a ``pointseg map`` run (``mapped_by``: the backend and precision of the map)."""
    with rasterio.open(request.out / "map.tif") as ds:
        crs = ds.crs.to_string() if ds.crs else "no CRS"
        units = ds.crs.linear_units if ds.crs and ds.crs.is_projected else "CRS unit"
        size = f"{ds.width} x {ds.height} pixels, {crs}"
    area_unit = "ha" if units in ("metre", "meter") else f"{units}²"
    fast_info = request.out / "run" / fastloop.FAST_INFO
    info = json.loads(fast_info.read_text(encoding="utf-8")) if fast_info.exists() else {}
    accuracy = info.get("click_accuracy")
    spread = "" if trained.cfg["labels"]["propagate"] == "none" else " and their propagation"
    recipe = (f"the fast model, fitted on the clicks{spread}: {info.get('head_text', 'head softmax')}"
              if fast_info.exists() else build.describe(trained.cfg))
    divide = 1e4 if area_unit == "ha" else 1.0
    rows = [f"| {md_text(a['class'])} | {a['pixels']} | {a['share']:.1%} | {a['area'] / divide:,.1f} |" for a in areas]
    files = ["`map.tif` (classes; colours and names open in QGIS: `map.qml`, `map.tif.aux.xml`)"]
    if request.confidence:
        files.append("`confidence.tif` (max-softmax probability, percent)")
    files += ["`points.json` (the clicks on the raster's pixels) and `points.classes.csv` (class table)",
              "`run/` (the trained model: `pointseg predict --run run --input OTHER.tif --out maps/`)"]
    return "\n".join([
        "# pointseg map", "",
        f"Raster {md_text(request.raster)} ({md_text(size)}); clicks from {md_text(request.vector)}, field "
        f"{md_text(request.class_field)}.", "",
        md_code_block(import_summary), "",
        f"Recipe: {recipe}; {why}. Time: import {times['import']:.0f} s, training "
        f"{times['train']:.0f} s ({md_text(runs.trained_in(request.out / 'run'))}), mapping {times['map']:.0f} s"
        + (f" ({md_text(mapped_by)})" if mapped_by else "") + ".", "",
        *([md_text(click_accuracy_text(accuracy, list(trained.classes.names))) + " (each fold's clicks predicted by "
           "a head fitted without them: no reference needed; it estimates the map's accuracy when the clicks were "
           "placed without looking at a map, and reads low for clicks placed where a map was wrong)",
           ""] if fast_info.exists() else []),
        "![image and map](map.png)", "",
        f"| class | pixels | share | area ({area_unit}) |", "|---|---:|---:|---:|", *rows, "",
        "The map is not scored here: no reference is known for it. Score it against a reference mask raster on its "
        "grid with `pointseg evaluate --map map.tif --mask MASK.tif --classes TABLE.csv --out metrics.json` (the "
        "table's names as in `points.classes.csv`, its values those of the mask).", "",
        "Files: " + "; ".join(files) + ".", ""])
