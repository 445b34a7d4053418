"""``pointseg curate``: S5's selection of unlabeled pool images for semi-supervised pre-training (see
``pointseg.curate``)."""

from __future__ import annotations

import argparse
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


def main(args: argparse.Namespace) -> dict:
    request = CurationRequest(args.budget, args.clusters, args.background, args.direction, args.size, args.batch_size)
    report = run_curation(args.run, args.data_root, args.split, tuple(args.pool), args.out, request, args.dataset)
    sizes = ", ".join(f"{row['picked']}/{row['pool']}" for row in report["clusters"])
    print(f"selected {report['selected']} of the pool's images in {args.out} (picked/pool per cluster: {sizes}; "
          f"mean entropy picked {report['picked']['mean_entropy']}, rejected {report['rejected']['mean_entropy']}; "
          f"{report['pool_images_per_s']} images/s); report and plots beside it")
    return report


def register(sub: argparse._SubParsersAction) -> None:
    cu = sub.add_parser("curate", help="select unlabeled pool images for semi-supervised pre-training (S5): "
                                       "confident images, in the proportions of the labeled images' clusters")
    cu.add_argument("--run", required=True, help="a trained run (directory or model.pt) that scores the images")
    cu.add_argument("--dataset", help="which dataset of a model trained on several")
    cu.add_argument("--data-root", required=True, help="the labeled images' root (with --split)")
    cu.add_argument("--split", default="Train")
    cu.add_argument("--pool", action="append", required=True, help="an unlabeled folder or .txt image list "
                                                                   "(repeat for several)")
    cu.add_argument("--budget", type=int, required=True, help="number of pool images to select")
    cu.add_argument("--clusters", type=int, default=8, help="K-Means clusters of the labeled images")
    cu.add_argument("--background", default="auto", help="class left out of the entropy (auto: a class named "
                                                         "background; none: every pixel counts)")
    cu.add_argument("--direction", choices=("lowest", "highest"), default="lowest",
                    help="pick the lowest-entropy (most confident) images first, or the highest")
    cu.add_argument("--size", type=int, default=256, help="images are scored resized to this side")
    cu.add_argument("--batch-size", type=int, default=16)
    cu.add_argument("--out", required=True, help="the selected list (.txt, one image path per line)")
    cu.set_defaults(func=main)
