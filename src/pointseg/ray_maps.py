"""Maps of many rasters with Ray: ``pointseg predict --ray``.

Each Ray actor loads the run's model once, with ``threads`` torch threads, and maps whole rasters one after
another: it reads the raster's windows itself, so no pixels travel between processes, only file names and the
messages of rasters that could not be mapped. Rasters go to whichever actor is free (``ray.util.ActorPool``), so
large and small rasters balance. A local cluster is started unless ``address`` names one (``auto``: the cluster
this machine belongs to, e.g. started with ``ray start``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tqdm import tqdm


class RasterMapper:
    """The model of one run in one process, mapping rasters to GeoTIFFs (``pointseg.maps.map_raster``) as
    ``options`` (a ``workflows.options.MapOptions``) say."""

    def __init__(self, run: str, options: Any, threads: int, dataset: str | None = None) -> None:
        import torch

        from pointseg import runs

        torch.set_num_threads(threads)
        trained = runs.load_run(run, head=dataset)
        self.predictor, self.options = options.predictor(trained), options
        self.resume = options.resume_key(trained)

    def map(self, raster: str, target: str, confidence: str | None) -> tuple[list[str], str | None]:
        """The written paths, or the reason the raster could not be mapped."""
        from pointseg.maps import map_raster

        try:
            writer = self.options.writer(target, self.predictor.classes, confidence)
            result = map_raster(self.predictor, raster, writer, self.options.tiling, aoi=self.options.aoi,
                                resume=self.resume)
        except ValueError as e:
            return [], str(e)
        extra = [str(p) for p in self.options.products(result, self.predictor.classes)]
        return [str(result.map)] + ([str(result.confidence)] if result.confidence else []) + extra, None


def map_rasters_ray(run: str | Path, jobs: list[tuple[Path, Path, Path | None]], options: Any,
                    workers: int | None = None, address: str | None = None, dataset: str | None = None
                    ) -> tuple[list[Path], list[str]]:
    """Map each ``(raster, target, confidence or None)`` on Ray actors; returns the written paths and one message
    per raster that could not be mapped. ``workers``: actors (default: one per CPU Ray has, at most one per
    raster), sharing the CPUs between them for torch threads. ``dataset``: the model head to map with."""
    import ray
    from ray.util import ActorPool

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=None if address else os.cpu_count(), include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    try:
        cpus = max(1, int(ray.available_resources().get("CPU", 1)))
        workers = max(1, min(workers or cpus, len(jobs)))
        threads = max(1, cpus // workers)
        actor = ray.remote(num_cpus=threads)(RasterMapper)
        pool = ActorPool([actor.remote(str(Path(run).resolve()), options, threads, dataset) for _ in range(workers)])
        results = pool.map(lambda a, job: a.map.remote(str(job[0]), str(job[1]), str(job[2]) if job[2] else None),
                           jobs)
        written: list[Path] = []
        unreadable: list[str] = []
        for paths, error in tqdm(results, total=len(jobs), unit="raster", desc=f"map on {workers} Ray actors"):
            written += [Path(p) for p in paths]
            if error:
                unreadable.append(error)
        return written, unreadable
    finally:
        if started:
            ray.shutdown()
