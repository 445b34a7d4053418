"""Metrics at full label resolution: of a run on a dataset split, or of a map (made by a run, or given) against a
reference mask raster."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pointseg import runs
from pointseg.data.classes import ClassTable
from pointseg.evaluate import evaluate, evaluate_map
from pointseg.io import check_writable
from pointseg.maps import map_raster
from pointseg.mapwriter import map_class_names
from pointseg.workflows.options import MapOptions


def run_evaluation(run: str | Path, data_root: str | Path, split: str, out: str | Path, flips: bool = False,
                   dataset_name: str | None = None, backend: str = "auto", int8: bool = False,
                   precision: str = "float32") -> dict:
    """Metrics of a finished run (directory or ``model.pt``) on ``split`` at full label resolution (``flips``:
    with test-time augmentation; ``backend``: ``pointseg.backends``). ``dataset_name``: which of the run's datasets
    (model heads) ``data_root`` is; required for a model of several."""
    check_writable(Path(out).parent)
    trained = runs.load_run(run, head=dataset_name)
    return evaluate(trained.predictor(flips, backend, int8, precision=precision), trained.dataset(data_root, split),
                    out)


def mask_table(classes: str | Path | None, trained: runs.TrainedModel | None, map_path: str | Path | None
               ) -> ClassTable:
    """The class table a mask is read with: ``classes`` (the mask's values) indexed as the map indexes them (the
    run's order, or the map's own names; classes of the mask the map never predicts come last: scored, never
    right), else the run's own table."""
    table = ClassTable.from_csv(classes, color_coded=False) if classes else None
    if table is not None:
        order = trained.classes.names if trained is not None else map_class_names(map_path) if map_path else None
        if order:
            order = tuple(order) + tuple(n for n in table.names if n not in order)
            table = table.in_order(order, f"{classes}: the map's classes")
    table = table or (trained.classes if trained is not None else None)
    if table is None:
        raise ValueError("scoring a --map needs its class table: --classes TABLE.csv (or --run)")
    return table


def run_map_evaluation(mask: str | Path, out: str | Path, run: str | Path | None = None,
                       raster: str | Path | None = None, map_path: str | Path | None = None,
                       classes: str | Path | None = None, options: MapOptions = MapOptions()) -> dict:
    """Metrics against a reference mask raster: of the map a run makes of ``raster`` (written with its confidence
    to a temporary folder beside ``out``), or of an existing ``map_path``. ``classes``: a class table
    (``value,name,r,g,b`` with the mask's values) for a map without a run, or to read the mask's values for a run
    trained with names only; it holds the run's classes (or the map's, from its ``.aux.xml``), in any order, and
    may hold more (classes of the mask the map cannot predict: scored as errors)."""
    out = Path(out)
    check_writable(out.parent)
    trained = runs.load_run(run) if run is not None else None
    table = mask_table(classes, trained, map_path)
    if map_path is not None:
        return evaluate_map(map_path, mask, table, out)
    if trained is None or raster is None:
        raise ValueError("evaluating a run against a --mask needs --run and --raster (or --map)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".map-") as tmp:
        writer = options.writer(Path(tmp) / "map.tif", trained.classes, Path(tmp) / "confidence.tif")
        result = map_raster(options.predictor(trained, [raster]), raster, writer, options.tiling, aoi=options.aoi)
        return evaluate_map(result.map, mask, table, out, confidence=result.confidence, image=raster,
                            image_bands=result.bands[:3])
