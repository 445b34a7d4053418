"""Clicks: imported from a GIS point layer onto rasters, simulated from dense masks, or added where a run's map is
wrong (a simulated analyst correcting it)."""

from __future__ import annotations

from pathlib import Path

from pointseg import build, runs
from pointseg.data.classes import ClassTable
from pointseg.data.points import PointSet, corrective, load_points, save_points
from pointseg.data.sources import Source
from pointseg.io import check_writable
from pointseg.point_import import ImportReport, class_table_from_values, import_points, read_point_layer


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


def simulation_source(cfg: dict, classes: ClassTable | None, data_root: str | Path | None = None,
                      split: str = "Train", raster: str | Path | None = None, mask: str | Path | None = None,
                      table: str | Path | None = None) -> Source:
    """The images and masks clicks are simulated on: the tiles of ``split`` under ``data_root``, or ``raster`` with
    its reference ``mask`` (classes from the class table ``table``, else ``classes``: a run's)."""
    if raster or mask:
        if not (raster and mask) or data_root:
            raise ValueError("simulate on a raster with --raster R --mask M (its reference mask), without --data-root")
        classes = ClassTable.from_csv(table, color_coded=False) if table else classes
        if classes is None:
            raise ValueError("--raster with --mask needs the mask's class table: --classes TABLE.csv (value,name,"
                             "r,g,b; 0 or the ignore value for unlabelled pixels)")
        return build.build_raster_source(cfg, (raster,), classes, (mask,))
    if not data_root:
        raise ValueError("points simulate needs --data-root R (with --split) or --raster R --mask M")
    return build.build_source(cfg, data_root, split)


def simulate_corrective(run: str | Path | None, points: str | Path | None, per_image: int, seed: int = 0,
                        **where: str | Path | None) -> PointSet:
    """The clicks so far (``points``) plus ``per_image`` clicks per image where the map of ``run`` disagrees with
    the masks (``where``: ``simulation_source``'s images)."""
    if not run or not points:
        raise ValueError("--strategy corrective needs --run RUN (the model whose map is corrected) and --points "
                         "SO_FAR (the clicks it was trained on)")
    trained = runs.load_run(run)
    source = simulation_source(trained.head_cfg, trained.classes, **where)  # type: ignore[arg-type]
    made = load_points(points)
    if made.classes != list(trained.classes.names):
        raise ValueError(f"{points}: classes {made.classes} differ from the run's {list(trained.classes.names)}")
    dataset = build.build_eval_dataset(trained.head_cfg, source, trained.scaling)
    predictions = {sample["id"]: predicted for sample, predicted in trained.predictor().iter_predictions(dataset)}
    return corrective(source, predictions, made, per_image, seed)
