"""The ``pointseg`` command line: points simulate/import, labels inspect, train, pretrain, curate, evaluate,
predict, suggest, map, export, cache, download, demo."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pointseg import build
from pointseg.build import TrainInputs
from pointseg.config import load_config, load_settings
from pointseg.points import STRATEGIES, answer, load_points, save_points, simulate
from pointseg.runs import model_file, read_info
from pointseg.suggest import SCORES
from pointseg.workflows import Tiling, run_evaluation, run_map_evaluation, run_prediction, run_training

log = logging.getLogger("pointseg")


def cmd_points_simulate(args: argparse.Namespace) -> Path:
    cfg = load_config(args.config, args.set)
    source = build.build_source(cfg, args.data_root, args.split)
    if args.at:
        points, dropped = answer(source, load_points(args.at, unclassified=True))
        save_points(args.out, points)
        print(f"answered the suggested clicks of {args.at} from the masks of {args.data_root} ({args.split}): "
              f"{len(points)} points on {len(points.images)} images in {args.out}")
        if dropped:
            print(f"left out {len(dropped)} suggestions on unlabeled pixels, e.g. {', '.join(dropped[:3])}")
        return Path(args.out)
    if args.per_image is None:
        raise ValueError("points simulate needs --per-image N (or --at SUGGESTIONS to answer suggested clicks)")
    points = simulate(source, args.per_image, args.seed, args.strategy)
    save_points(args.out, points)
    print(f"wrote {len(points)} points on {len(points.images)} images to {args.out}")
    return Path(args.out)


def cmd_points_import(args: argparse.Namespace) -> Path:
    from pointseg.workflows import import_point_layer

    points, report = import_point_layer(args.vector, args.raster, args.class_field, args.out, args.layer, args.crs,
                                        args.classes, args.x_field, args.y_field)
    print(report.summary())
    print(f"wrote {len(points)} points on {len(points.images)} rasters to {args.out} (classes: "
          f"{', '.join(points.classes)}; table {Path(args.out).with_suffix('.classes.csv')})")
    return Path(args.out)


def cmd_suggest(args: argparse.Namespace) -> Path:
    from pointseg.workflows import SuggestRequest, run_suggestion

    request = SuggestRequest(args.per_image, args.score, args.min_distance, args.class_weight, args.flips)
    points = run_suggestion(args.run, args.out, request, args.data_root, args.split, tuple(args.raster), args.points,
                            args.dataset)
    out = Path(args.out)
    suggested = sum(int((p[:, 2] < 0).sum()) for p in points.images.values())
    print(f"suggested {suggested} clicks on {len(points.images)} images: {out} (class null: to be given), pictures "
          f"in {out.parent / (out.stem + '_overlays')}" + (f", QGIS layers in {out.with_suffix('.gpkg')}"
                                                          if args.raster else ""))
    return out


def split_roots(items: list[str] | None) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """``--data-root`` values: the first dataset's root (``PATH``) and the others' (``NAME=PATH``, NAME without
    ``/``)."""
    main, named = None, []
    for item in items or []:
        name, _, path = item.partition("=")
        if path and "/" not in name:
            named.append((name, path))
        elif main is not None:
            raise ValueError(f"--data-root given twice ({main}, {item}); name the roots of further datasets: "
                             "--data-root NAME=PATH")
        else:
            main = item
    return main, tuple(named)


def cmd_train(args: argparse.Namespace) -> Path:
    data_root, dataset_roots = split_roots(args.data_root)
    inputs = TrainInputs(data_root, args.points, args.labeled, tuple(args.unlabeled), args.tags,
                         tuple(args.raster), tuple(args.mask), dataset_roots,
                         model_file(args.init) if args.init else None)
    path = run_training(load_settings(args.config, args.set), args.out, inputs, args.resume, args.argv)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 reports
        return path
    counts = read_info(path.parent)["invocations"][-1]["parameters"]
    added = ", ".join(f"{name} {n / 1e3:.0f}K" for name, n in counts["per_dataset"].items())
    print(f"trained model saved to {path} ({counts['total'] / 1e6:.2f}M parameters; added per dataset (head and "
          f"experts): {added})")
    return path


def cmd_pretrain(args: argparse.Namespace) -> Path:
    """``train`` as S5's S4P: method fixmatch, CutMix from a second unlabeled batch (the unlabeled batch twice the
    labeled one, halves mixed), unless the settings say otherwise."""
    if args.resume:
        return cmd_train(args)
    if not args.unlabeled:
        raise ValueError("pretrain learns from unlabeled images: give --unlabeled DIR or a .txt list "
                         "(e.g. from pointseg curate)")
    train = load_config(args.config, args.set)["train"]
    s4p = ["method.name=fixmatch", "method.cutmix_partner=second"]
    if train["unlabeled_batch_size"] is None:
        s4p.append(f"train.unlabeled_batch_size={2 * train['batch_size']}")
    args.set = [*s4p, *args.set]
    return cmd_train(args)


def cmd_curate(args: argparse.Namespace) -> dict:
    from pointseg.workflows import CurationRequest, run_curation

    request = CurationRequest(args.budget, args.clusters, args.background, args.direction, args.size, args.batch_size)
    report = run_curation(args.run, args.data_root, args.split, tuple(args.pool), args.out, request, args.dataset)
    sizes = ", ".join(f"{row['picked']}/{row['pool']}" for row in report["clusters"])
    print(f"selected {report['selected']} of the pool's images in {args.out} (picked/pool per cluster: {sizes}; "
          f"mean entropy picked {report['picked']['mean_entropy']}, rejected {report['rejected']['mean_entropy']}; "
          f"{report['pool_images_per_s']} images/s); report and plots beside it")
    return report


def cmd_evaluate(args: argparse.Namespace) -> dict:
    if args.mask:
        tiling = Tiling(args.tile, args.overlap, args.batch_size, args.cog, args.flips)
        metrics = run_map_evaluation(args.mask, args.out, args.run, args.raster, args.map, args.classes, tiling)
    elif args.run and args.data_root:
        metrics = run_evaluation(args.run, args.data_root, args.split, args.out, args.flips, args.dataset)
    else:
        raise ValueError("evaluate needs --run with --data-root, or --mask with --run and --raster, or with --map")
    print(Path(args.out).with_suffix(".txt").read_text(), end="")
    return metrics


def cmd_predict(args: argparse.Namespace) -> list[Path]:
    tiling = Tiling(args.tile, args.overlap, args.batch_size, args.cog, args.flips)
    written, unreadable = run_prediction(args.run, args.input, args.out, tiling, args.confidence, args.ray,
                                         args.ray_address, args.dataset)
    maps = [p for p in written if p.suffix == ".tif" and not p.stem.endswith("_confidence")]
    done = len(maps) if maps else len(written) // 2
    print(f"wrote {len(maps)} GeoTIFF maps" if maps else f"wrote {done} masks (index and colour PNGs)", "to", args.out)
    if unreadable:
        for message in unreadable:
            print(f"pointseg: skipped: {message}", file=sys.stderr)
        raise ValueError(f"{len(unreadable)} of {done + len(unreadable)} inputs could not be read and were skipped "
                         f"(listed in {Path(args.out) / 'unreadable.txt'})")
    return written


def cmd_map(args: argparse.Namespace) -> Path:
    """Import clicks -> train on the raster -> GeoTIFF map -> REPORT.md."""
    from pointseg.mapping import MapRequest, run_map

    return run_map(MapRequest(Path(args.raster), Path(args.points), args.class_field, Path(args.out), args.layer,
                              args.crs, args.x_field, args.y_field, Path(args.classes) if args.classes else None,
                              Path(args.config) if args.config else None, args.set,
                              Tiling(args.tile, args.overlap, args.batch_size, args.cog, args.flips), args.confidence))


def cmd_export(args: argparse.Namespace) -> Path:
    from pointseg.export import export_onnx

    result = export_onnx(args.run, args.out, args.tile, args.overlap, args.output, args.resolution,
                         dataset=args.dataset)
    print(f"wrote {result.path}: {args.output} of {args.tile} x {args.tile} windows; onnxruntime matches torch to "
          f"{result.max_abs_difference:.1g} (max abs difference)")
    return result.path


def cmd_labels_inspect(args: argparse.Namespace) -> list[dict]:
    from pointseg.io import write_json, write_text
    from pointseg.label_report import format_kept_table, information_kept
    from pointseg.report import plot_information_kept

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

    from pointseg.io import write_json, write_text
    from pointseg.label_report import format_propagation_table, propagation_report
    from pointseg.points import check_against, load_points
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


def cmd_cache(args: argparse.Namespace) -> dict:
    """Where the decoded-sample cache is and what it holds; ``clear`` empties it (or its older part) first."""
    import datetime

    from pointseg.data.cache import cache_info, clear_cache

    directory, cap_gb = build.cache_location(load_config(args.config, args.set))
    if args.cache_command == "clear":
        samples, size = clear_cache(directory, args.older_than)
        print(f"removed {samples} samples ({size / 1e9:.2f} GB) from {directory}")
    info = cache_info(directory)

    def day(t: float | None) -> str:
        return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else "-"

    cap = f"cap {cap_gb:g} GB (data.cache_max_gb)" if cap_gb else "no cap"
    print(f"cache: {directory}\n{info['samples']} samples in {info['files']} files, {info['bytes'] / 1e9:.2f} GB; "
          f"{cap}\nlast used: oldest {day(info['oldest_use'])}, newest {day(info['newest_use'])}"
          + (f"\n{info['temporary_files']} temporary files of interrupted writes" if info["temporary_files"] else ""))
    return info


def cmd_download(args: argparse.Namespace) -> Path:
    from pointseg.data.download import download_loveda

    return download_loveda(args.root, tuple(args.splits))


def cmd_demo(args: argparse.Namespace) -> Path:
    """Simulate 20 points/image -> train -> evaluate on Val -> predict a few images -> REPORT.md."""
    from pointseg.demo import run_demo

    return run_demo(args.data_root, args.out, args.set, download=args.download, per_image=args.per_image)


def add_train_arguments(sp: argparse.ArgumentParser) -> None:
    """The inputs of `train` and `pretrain`."""
    sp.add_argument("--init", metavar="RUN",
                    help="start from a trained run's model (its directory or model.pt): fine-tuning after "
                         "pre-training, or, with --set train.trainable=added, a dataset added to it")
    sp.add_argument("--data-root", action="append",
                    help="dataset root (a new run needs it or --raster; a resumed run keeps its own); repeat as "
                         "NAME=PATH for each dataset of `datasets` trained with it")
    sp.add_argument("--raster", action="append", default=[], metavar="FILE",
                    help="train on this georeferenced raster instead of a data root (repeatable; with --points)")
    sp.add_argument("--mask", action="append", default=[], metavar="FILE",
                    help="reference mask raster on the grid of each --raster (dense labels; classes from "
                         "data.classes)")
    sp.add_argument("--points", help="point-label file (default: train on dense masks)")
    sp.add_argument("--out", required=True, help="run directory")
    sp.add_argument("--resume", action="store_true",
                    help="continue the run in --out from its last checkpoint, on the inputs it was started with")
    sp.add_argument("--labeled", help="file of sample ids to take labels from; the rest of the split is unlabeled")
    sp.add_argument("--unlabeled", action="append", default=[], metavar="DIR",
                    help="folder of unlabeled images or a .txt list of them (repeatable); used by methods such as "
                         "fixmatch and pseudoseg")
    sp.add_argument("--tags", help="image-level labels of unlabeled images: CSV id,classes (names separated by ;)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pointseg", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", help="YAML file overriding the default config")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config key")

    def with_tiling(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--tile", type=int, default=Tiling.tile, help="raster window side in model pixels")
        sp.add_argument("--overlap", type=float, default=Tiling.overlap, help="share of a window its neighbour covers")
        sp.add_argument("--batch-size", type=int, default=Tiling.batch_size, help="raster windows per forward pass")
        sp.add_argument("--cog", action="store_true", help="write Cloud-Optimised GeoTIFFs with overviews")
        sp.add_argument("--flips", action="store_true",
                        help="test-time augmentation: average the class probabilities of the image and its left-right, "
                             "up-down and double flips (4x the forward passes)")

    pts = sub.add_parser("points", help="point labels").add_subparsers(dest="points_command", required=True)
    sim = pts.add_parser("simulate", help="simulate N clicks per image from dense masks")
    sim.add_argument("--data-root", required=True)
    sim.add_argument("--split", default="Train")
    sim.add_argument("--per-image", type=int, help="clicks per image")
    sim.add_argument("--at", metavar="SUGGESTIONS", help="instead: give the suggested clicks of this point file "
                                                         "(pointseg suggest) the classes of the dense masks")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--strategy", choices=STRATEGIES, default="uniform")
    sim.add_argument("--out", required=True)
    with_config(sim)
    sim.set_defaults(func=cmd_points_simulate)

    imp = pts.add_parser("import", help="clicks from a GIS point layer (GeoPackage, Shapefile, GeoJSON, CSV) onto "
                                        "rasters, reprojected to each raster's CRS")
    imp.add_argument("--vector", required=True, help="point layer file")
    imp.add_argument("--layer", help="layer name (files with several layers, e.g. GeoPackages)")
    imp.add_argument("--raster", required=True, action="append", help="raster the points are clicked on (repeatable)")
    imp.add_argument("--class-field", required=True, help="field holding class names or integer class values")
    imp.add_argument("--classes", help="class table CSV value,name,r,g,b (default: the field's distinct values)")
    imp.add_argument("--crs", help="CRS of the points (required for a CSV, e.g. EPSG:4326)")
    imp.add_argument("--x-field", default="x", help="CSV column of x / longitude")
    imp.add_argument("--y-field", default="y", help="CSV column of y / latitude")
    imp.add_argument("--out", required=True, help="point file to write (its class table goes beside it)")
    imp.set_defaults(func=cmd_points_import)

    sg = sub.add_parser("suggest", help="where to click next: uncertain pixels, spread out, on classes with few "
                                        "clicks so far")
    sg.add_argument("--run", required=True, help="run directory or its model.pt")
    sg.add_argument("--dataset", help="which dataset of a model trained on several (its head and class table)")
    sg.add_argument("--data-root", help="dataset root (with --split)")
    sg.add_argument("--split", default="Train")
    sg.add_argument("--raster", action="append", default=[], metavar="FILE", help="raster(s) instead of a data root")
    sg.add_argument("--points", help="the clicks made so far (point file)")
    sg.add_argument("--per-image", type=int, required=True, help="clicks to suggest per image")
    sg.add_argument("--score", choices=SCORES, default="margin", help="uncertainty: margin between the two most "
                                                                      "probable classes, entropy, or max probability")
    sg.add_argument("--min-distance", type=float,
                    help="full-resolution pixels between any two clicks, made or suggested (default: half the "
                         "spacing of all the clicks on a square grid over the image)")
    sg.add_argument("--class-weight", type=float, default=1.0,
                    help="how strongly classes with few clicks are favoured (0: not at all)")
    sg.add_argument("--flips", action="store_true", help="average the probabilities over flipped images")
    sg.add_argument("--out", required=True, help="point file: the clicks so far plus the suggestions (class null)")
    sg.set_defaults(func=cmd_suggest)

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
    ins.set_defaults(func=cmd_labels_inspect)

    tr = sub.add_parser("train", help="train a model (dense masks, or points with --points)")
    add_train_arguments(tr)
    with_config(tr)
    tr.set_defaults(func=cmd_train)
    pre = sub.add_parser("pretrain", help="semi-supervised pre-training (S5's S4P): train with method fixmatch on "
                                          "the labeled data and --unlabeled images (e.g. a curated list); "
                                          "fine-tune from it with train --init")
    add_train_arguments(pre)
    with_config(pre)
    pre.set_defaults(func=cmd_pretrain)

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
    cu.set_defaults(func=cmd_curate)

    ev = sub.add_parser("evaluate", help="metrics at full label resolution, on a dataset split or against a "
                                         "reference mask raster")
    ev.add_argument("--run", help="run directory or its model.pt")
    ev.add_argument("--data-root", help="dataset root (with --split)")
    ev.add_argument("--split", default="Val")
    ev.add_argument("--dataset", help="which dataset of a model trained on several (its head and class table)")
    ev.add_argument("--raster", help="raster the run maps, scored against --mask")
    ev.add_argument("--mask", help="reference mask raster on the grid of --raster or --map")
    ev.add_argument("--map", help="an existing map (GeoTIFF) to score against --mask")
    ev.add_argument("--classes", help="class table value,name,r,g,b with the mask's values (for --map without --run)")
    with_tiling(ev)
    ev.add_argument("--out", required=True, help="metrics JSON (table and plots are written beside it)")
    ev.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="GeoTIFF maps of rasters, or PNG masks of a folder of images "
                                        "(unreadable inputs are skipped and listed; exit code 2 if any)")
    pr.add_argument("--run", required=True, help="run directory or its model.pt")
    pr.add_argument("--dataset", help="which dataset of a model trained on several (its head and class table)")
    pr.add_argument("--input", required=True, help="a raster, a folder of rasters or images, or a .txt list of "
                                                   "rasters")
    pr.add_argument("--out", required=True, help="output folder")
    with_tiling(pr)
    pr.add_argument("--confidence", action="store_true",
                    help="also write <name>_confidence.tif: max-softmax probability in percent")
    pr.add_argument("--ray", type=int, nargs="?", const=0, metavar="WORKERS",
                    help="map rasters in parallel on Ray actors (WORKERS: how many; default one per CPU)")
    pr.add_argument("--ray-address", help="a running Ray cluster (default: start a local one)")
    pr.set_defaults(func=cmd_predict)

    mp = sub.add_parser("map", help="a raster and a GIS point layer in: a trained model, a GeoTIFF map and a report "
                                    "out (points import -> train -> predict)")
    mp.add_argument("--raster", required=True, help="the image to map (GeoTIFF or any GDAL raster)")
    mp.add_argument("--points", required=True, help="point layer of clicks (GeoPackage, Shapefile, GeoJSON, CSV)")
    mp.add_argument("--class-field", required=True, help="the layer's field with class names or values")
    mp.add_argument("--out", required=True, help="output folder: map.tif, REPORT.md, run/ ...")
    mp.add_argument("--layer", help="layer of a multi-layer file (GeoPackage)")
    mp.add_argument("--crs", help="CRS of CSV coordinates, e.g. EPSG:4326")
    mp.add_argument("--x-field", default="x", help="CSV column of x (easting/longitude)")
    mp.add_argument("--y-field", default="y", help="CSV column of y (northing/latitude)")
    mp.add_argument("--classes", help="class table value,name,r,g,b (names and colours; default: the field's values)")
    mp.add_argument("--confidence", action="store_true", help="also write confidence.tif (max-softmax, percent)")
    with_tiling(mp)
    with_config(mp)
    mp.set_defaults(func=cmd_map)

    ex = sub.add_parser("export", help="the run's model as ONNX (onnxruntime, the QGIS plugin Deepness)")
    ex.add_argument("--run", required=True, help="run directory or its model.pt")
    ex.add_argument("--dataset", help="which dataset of a model trained on several (its head and class table)")
    ex.add_argument("--out", required=True, help="ONNX file to write")
    ex.add_argument("--tile", type=int, default=Tiling.tile, help="window side of the graph's input, in pixels")
    ex.add_argument("--overlap", type=float, default=Tiling.overlap, help="window overlap Deepness should use")
    ex.add_argument("--output", choices=("probabilities", "logits"), default="probabilities",
                    help="softmax probabilities (Deepness) or logits")
    ex.add_argument("--resolution", type=float, help="cm per model pixel (default: from the run's training raster)")
    ex.set_defaults(func=cmd_export)

    cache = sub.add_parser("cache", help="the decoded-sample cache").add_subparsers(dest="cache_command", required=True)
    info = cache.add_parser("info", help="where the cache is and how big it is")
    with_config(info)
    info.set_defaults(func=cmd_cache)
    clear = cache.add_parser("clear", help="delete cached samples (they are decoded again when needed)")
    clear.add_argument("--older-than", type=float, metavar="DAYS", help="only samples unused for this many days")
    with_config(clear)
    clear.set_defaults(func=cmd_cache)

    dl = sub.add_parser("download", help="download LoveDA (needs internet)")
    dl.add_argument("--root", required=True)
    dl.add_argument("--splits", nargs="+", default=["Train", "Val"], choices=["Train", "Val", "Test"])
    dl.set_defaults(func=cmd_download)

    de = sub.add_parser("demo", help="the whole chain on LoveDA, in minutes on a CPU")
    de.add_argument("--data-root", required=True)
    de.add_argument("--out", required=True)
    de.add_argument("--per-image", type=int, default=20)
    de.add_argument("--download", action="store_true", help="download LoveDA into --data-root if missing")
    de.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    de.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = ["pointseg", *argv] if argv is not None else sys.argv  # recorded with each training run
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("pointseg: interrupted (a training run that reached a checkpoint continues with --resume)",
              file=sys.stderr)
        return 130
    except (ValueError, KeyError, OSError, RuntimeError, FloatingPointError) as e:
        if args.verbose:
            raise
        print(f"pointseg: error: {error_message(e)}", file=sys.stderr)
        return 2
    return 0


def error_message(e: BaseException) -> str:
    """``<file>: <reason>`` for OS errors (permission, disk full, ...), the message itself otherwise."""
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


if __name__ == "__main__":
    sys.exit(main())
