"""Label diagnostics: what down-sampling keeps of each class, and what click propagation labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointseg import build
from pointseg.data.points import check_against, load_points
from pointseg.data.sources import Source
from pointseg.io import write_json, write_text
from pointseg.label_report import format_kept_table, format_propagation_table, information_kept, propagation_report
from pointseg.propagation import propagated_labels, propagation_quality
from pointseg.report import plot_information_kept, plot_overlays


def inspect_labels(cfg: dict, data_root: str | Path, split: str, scales: list[float], mode: str, out: str | Path,
                   points: str | Path | None = None) -> tuple[list[dict], str]:
    """What down-sampling to each of ``scales`` keeps of each class of ``split`` (``mode``: area or bilinear), and
    with ``points``, what click propagation labels: the reports and their tables, written into ``out``."""
    bad = [s for s in scales if not 0 < s <= 1]
    if bad:
        raise ValueError(f"--scale takes shares of the full resolution in (0, 1], got {bad[0]:g}")
    source = build.build_source(cfg, data_root, split)
    reports = [information_kept(source, s, mode) for s in scales]
    out = Path(out)
    write_json(out / "information_kept.json", reports)
    tables = "\n\n".join(format_kept_table(r) for r in reports)
    write_text(out / "information_kept.md", tables + "\n")
    plot_information_kept(reports, out / "information_kept.png")
    if points:
        tables += "\n\n" + inspect_propagation(cfg, source, points, out)
    return reports, tables


def inspect_propagation(cfg: dict, source: Source, points_path: str | Path, out: Path) -> str:
    """``labels inspect --points``: per class, the pixels click propagation labels and how often the masks agree;
    a table, JSON and an overlay picture of the first images in ``out``."""
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
