"""S5's selection of unlabeled pool images for semi-supervised pre-training (see ``pointseg.curate``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pointseg import build, curate, runs
from pointseg.data.sources import ImageFolder
from pointseg.io import check_writable, write_json, write_text
from pointseg.report import plot_curation


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

    def __post_init__(self) -> None:
        for name in ("budget", "clusters", "size", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")


def run_curation(run: str | Path, data_root: str | Path, split: str, pools: tuple[str | Path, ...],
                 out: str | Path, request: CurationRequest, dataset_name: str | None = None) -> dict:
    """Select ``request.budget`` images of the unlabeled ``pools`` (folders or ``.txt`` lists) with the model of
    ``run`` and the images of ``split`` under ``data_root`` (see ``pointseg.curate``): writes ``out`` (one image
    path per line, an ``--unlabeled`` input), ``<out stem>_report.json`` and the two plots beside it."""
    out = Path(out)
    check_writable(out.parent)
    trained = runs.load_run(run, head=dataset_name)
    cfg, predictor = trained.head_cfg, trained.predictor()
    labeled = build.build_source(cfg, data_root, split, require_masks=False)
    pool = [ImageFolder(p, trained.classes, recursive=True, images=cfg["data"]["images"]) for p in pools]
    background = curate.background_index(trained.classes.names, request.background)
    views = [curate.SquareImages(s, request.size, trained.scaling, predictor.mode) for s in ([labeled], pool)]
    ours, theirs = (curate.score_images(predictor, v, background, request.batch_size, name)
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
