"""``pointseg labels inspect``: what down-sampling keeps of each class, and what click propagation labels."""

from __future__ import annotations

import argparse
from pathlib import Path

from pointseg import build
from pointseg.commands.options import with_config
from pointseg.config import load_config


def main_inspect(args: argparse.Namespace) -> list[dict]:
    from pointseg.io import write_json, write_text
    from pointseg.label_report import format_kept_table, information_kept
    from pointseg.report import plot_information_kept

    bad = [s for s in args.scale if not 0 < s <= 1]
    if bad:
        raise ValueError(f"--scale takes shares of the full resolution in (0, 1], got {bad[0]:g}")
    cfg = load_config(args.config, args.set)
    source = build.build_source(cfg, args.data_root, args.split)
    reports = [information_kept(source, s, args.mode) for s in args.scale]
    out = Path(args.out)
    write_json(out / "information_kept.json", reports)
    tables = "\n\n".join(format_kept_table(r) for r in reports)
    write_text(out / "information_kept.md", tables + "\n")
    plot_information_kept(reports, out / "information_kept.png")
    print(tables)
    if args.points:
        print("\n" + inspect_propagation(cfg, source, args.points, out))
    return reports


def inspect_propagation(cfg: dict, source, points_path: str, out: Path) -> str:
    """``labels inspect --points``: per class, the pixels click propagation labels and how often the masks agree;
    a table, JSON and an overlay picture of the first images in ``out``."""
    import numpy as np

    from pointseg.data.points import check_against, load_points
    from pointseg.io import write_json, write_text
    from pointseg.label_report import format_propagation_table, propagation_report
    from pointseg.propagation import propagated_labels, propagation_quality
    from pointseg.report import plot_overlays

    if cfg["labels"]["propagate"] == "none":
        cfg = {**cfg, "labels": {**cfg["labels"], "propagate": "superpixel"}}
    points = load_points(points_path)
    check_against(points, [r.id for r in source.refs], {r.id: source.size(r) for r in source.refs
                                                        if r.id in points.images}, list(source.classes.names))
    cached, n = build.build_cached(cfg, source), source.classes.num_classes
    spread = build.build_propagation(cfg)
    masks = propagated_labels(cached, points, spread, build.build_scaling(cfg, source), build.cache_location(cfg)[0],
                              cfg["data"]["ignore_index"])
    clicks = points.class_counts()
    report = propagation_report(propagation_quality(masks, cached, n, cfg["data"]["ignore_index"]), clicks,
                                list(source.classes.names), len(masks), {**vars(spread),
                                                                         "weight": cfg["labels"]["propagate_weight"]})
    write_json(out / "propagation.json", report)
    table = format_propagation_table(report)
    write_text(out / "propagation.md", table + "\n")
    shown = []
    for ref in [r for r in cached.refs if r.id in masks][:4]:
        sample = cached.read(ref)
        step = max(1, max(sample["image"].shape[:2]) // 512)
        shown.append((ref.id, np.asarray(sample["image"])[::step, ::step], np.asarray(sample["mask"])[::step, ::step],
                      np.asarray(masks[ref.id])[::step, ::step]))
    plot_overlays(shown, source.classes, out / "propagation.png", ("image", "truth", "propagated clicks"))
    return table


def register(sub: argparse._SubParsersAction) -> None:
    lab = sub.add_parser("labels", help="label diagnostics").add_subparsers(dest="labels_command", required=True)
    ins = lab.add_parser("inspect", help="label area kept per class by nearest vs soft down-sampling")
    ins.add_argument("--data-root", required=True)
    ins.add_argument("--split", default="Train")
    ins.add_argument("--scale", type=float, nargs="+", default=[0.5, 0.25, 0.125])
    ins.add_argument("--mode", choices=["area", "bilinear"], default="area")
    ins.add_argument("--points", help="also report click propagation of these clicks (labels.propagate*; default "
                                      "superpixel): pixels labeled per class, share right against the masks, overlays")
    ins.add_argument("--out", required=True, help="directory for the table (.md, .json) and bar plot (.png)")
    with_config(ins)
    ins.set_defaults(func=main_inspect)
