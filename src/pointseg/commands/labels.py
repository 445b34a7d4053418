"""``pointseg labels inspect``: what down-sampling keeps of each class, and what click propagation labels."""

from __future__ import annotations

import argparse

from pointseg.commands.options import with_config


def main_inspect(args: argparse.Namespace) -> list[dict]:
    from pointseg.config import load_config
    from pointseg.workflows.labels import inspect_labels

    reports, tables = inspect_labels(load_config(args.config, args.set), args.data_root, args.split, args.scale,
                                     args.mode, args.out, args.points)
    print(tables)
    return reports


def register(sub: argparse._SubParsersAction) -> None:
    lab = sub.add_parser("labels", help="label diagnostics: what down-sampling keeps of each class, what click "
                                        "propagation labels").add_subparsers(dest="labels_command", required=True)
    ins = lab.add_parser("inspect", help="label area kept per class by nearest vs soft down-sampling")
    ins.add_argument("--data-root", required=True, help="dataset root with masks (with --split)")
    ins.add_argument("--split", default="Train", help="the split whose masks are inspected")
    ins.add_argument("--scale", type=float, nargs="+", default=[0.5, 0.25, 0.125],
                     help="shares of the full resolution the masks are down-sampled to")
    ins.add_argument("--mode", choices=["area", "bilinear"], default="area",
                     help="how soft labels are down-sampled: class shares per area, or bilinear")
    ins.add_argument("--points", help="also report click propagation of these clicks (labels.propagate*; default "
                                      "superpixel): pixels labeled per class, share right against the masks, overlays")
    ins.add_argument("--out", required=True, help="directory for the table (.md, .json) and bar plot (.png)")
    with_config(ins)
    ins.set_defaults(func=main_inspect)
