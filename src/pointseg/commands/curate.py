"""``pointseg curate``: S5's selection of unlabeled pool images for semi-supervised pre-training (see
``pointseg.curate``)."""

from __future__ import annotations

import argparse


def main(args: argparse.Namespace) -> dict:
    from pointseg.workflows.curate import CurationRequest, run_curation

    request = CurationRequest(budget=args.budget, clusters=args.clusters, background=args.background,
                              direction=args.direction, size=args.size, batch_size=args.batch_size)
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
    cu.add_argument("--split", default="Train", help="the split of --data-root holding the labeled images")
    cu.add_argument("--pool", action="append", required=True, help="an unlabeled folder or .txt image list "
                                                                   "(repeat for several)")
    cu.add_argument("--budget", type=int, required=True, help="number of pool images to select")
    cu.add_argument("--clusters", type=int, default=8, help="K-Means clusters of the labeled images")
    cu.add_argument("--background", default="auto", help="class left out of the entropy (auto: a class named "
                                                         "background; none: every pixel counts)")
    cu.add_argument("--direction", choices=("lowest", "highest"), default="lowest",
                    help="pick the lowest-entropy (most confident) images first, or the highest")
    cu.add_argument("--size", type=int, default=256, help="images are scored resized to this side")
    cu.add_argument("--batch-size", type=int, default=16, help="images scored per forward pass")
    cu.add_argument("--out", required=True, help="the selected list (.txt, one image path per line)")
    cu.set_defaults(func=main)
