"""Maps of rasters (a raster, a folder or a ``.txt`` list; on Ray actors on request), or PNG masks of a folder of
image files, with a run's model."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from pointseg import runs
from pointseg.choices import RASTER_SUFFIXES
from pointseg.evaluate import write_predictions
from pointseg.io import check_writable, read_list, write_text
from pointseg.maps import map_raster
from pointseg.workflows.options import MapOptions


def raster_inputs(path: str | Path) -> list[Path] | None:
    """The rasters to map: a raster file, a text file listing rasters (one per line, relative to the list), or a
    folder holding rasters; ``None`` for a folder of image files (PNG/JPEG tiles, predicted as PNG masks)."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".txt":
        return [path.parent / line for line in read_list(path, "rasters")]
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such raster, list or folder")
    rasters = sorted(p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
    return rasters or None


def map_names(rasters: list[Path]) -> list[str]:
    """A distinct output name per raster: its file stem, or, for rasters whose stems are the same (``a/scene.tif``
    and ``b/scene.tif``), their paths below the folder they share joined by ``_`` (``a_scene``, ``b_scene``)."""
    stems = Counter(r.stem for r in rasters)
    shared = {stem: Path(os.path.commonpath([r.resolve().parent for r in rasters if r.stem == stem]))
              for stem, n in stems.items() if n > 1}
    names = ["_".join(r.resolve().with_suffix("").relative_to(shared[r.stem]).parts) if r.stem in shared else r.stem
             for r in rasters]
    repeated = [name for name, n in Counter(names).items() if n > 1]  # the same file listed twice
    if repeated:
        raise ValueError(f"{repeated[0]}: the same raster is listed more than once")
    return names


def run_prediction(run: str | Path, inputs: str | Path, out: str | Path, options: MapOptions = MapOptions(),
                   confidence: bool = False, ray_workers: int | None = None, ray_address: str | None = None,
                   dataset_name: str | None = None) -> tuple[list[Path], list[str]]:
    """Predict every readable input: GeoTIFF maps ``<out>/<name>.tif`` for rasters (see ``pointseg.maps``; with
    ``confidence`` also ``<name>_confidence.tif``; names from ``map_names``), index and colour PNG masks for a
    folder of image files. ``ray_workers``: map the rasters on that many Ray actors (0: one per CPU; see
    ``pointseg.ray_maps``), on the cluster at ``ray_address`` or a local one. ``dataset_name``: the model head
    (dataset) to predict with.

    Unreadable inputs are skipped, not fatal: returns the written paths and one message per skipped input
    (``<file>: <reason>``), which are also listed in ``<out>/unreadable.txt``.
    """
    check_writable(out)
    rasters = raster_inputs(inputs)
    unreadable: list[str] = []
    trained = runs.load_run(run, head=dataset_name)  # a missing or broken model fails here, before any work
    if rasters is None:
        if ray_workers is not None:
            raise ValueError("--ray maps rasters; a folder of image files is predicted without it")
        written = write_predictions(options.predictor(trained), trained.images(inputs), out,
                                    unreadable=unreadable)
    else:
        jobs = [(r, Path(out) / f"{name}.tif", Path(out) / f"{name}_confidence.tif" if confidence else None)
                for r, name in zip(rasters, map_names(rasters), strict=True)]
        if ray_workers is not None:
            from pointseg.ray_maps import map_rasters_ray

            written, unreadable = map_rasters_ray(run, jobs, options, ray_workers or None, ray_address, dataset_name)
        else:
            written, unreadable = map_jobs(trained, jobs, options)
    listing = Path(out) / "unreadable.txt"
    if unreadable:
        write_text(listing, "".join(f"{m}\n" for m in unreadable))
    else:
        listing.unlink(missing_ok=True)  # from an earlier prediction into the same folder
    return written, unreadable


def map_jobs(trained: runs.TrainedModel, jobs: list[tuple[Path, Path, Path | None]], options: MapOptions
             ) -> tuple[list[Path], list[str]]:
    """Map each ``(raster, target, confidence or None)`` in this process; the written paths and one message per
    raster that could not be read."""
    predictor, written, unreadable = options.predictor(trained, [job[0] for job in jobs]), [], []
    resume = options.resume_key(trained)
    for raster, target, conf in jobs:
        try:
            result = map_raster(predictor, raster, options.writer(target, trained.classes, conf), options.tiling,
                                aoi=options.aoi, resume=resume)
        except ValueError as e:
            unreadable.append(str(e))
            continue
        written += [result.map] + ([result.confidence] if result.confidence else [])
        written += options.products(result, trained.classes)
    return written, unreadable
