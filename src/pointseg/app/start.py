"""A new app project, as ``pointseg app`` starts it: on a raster (its clicks imported from a point layer) or on a
folder of image tiles (its clicks from a point file)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pointseg import build
from pointseg.app.project import PROJECT, Project, hex_colour
from pointseg.config import deep_update, flatten, load_settings, resolve_settings
from pointseg.data.classes import ClassTable
from pointseg.data.points import PointSet, check_against, load_points
from pointseg.data.raster import open_raster
from pointseg.io import error_message
from pointseg.workflows.map import raster_defaults
from pointseg.workflows.points import import_point_layer


def start_project(args: argparse.Namespace) -> Project:
    """A new project on ``--raster``, its palette from ``--classes`` or the point layer's classes, its clicks
    from ``--points``."""
    if args.mask is True:
        raise ValueError("--mask with --raster names the reference mask raster: --mask REF.tif")
    if args.mask and not Path(args.mask).is_file():
        raise ValueError(f"{args.mask}: no such reference mask raster (--mask)")
    raster = Path(args.raster)
    with open_raster(raster) as ds:
        images = {raster.stem: {"height": ds.height, "width": ds.width}}
    project_dir = Path(args.project)
    table = ClassTable.from_csv(args.classes, color_coded=False) if args.classes else None
    defaults, why = raster_defaults(raster, fast=True)
    settings = checked_settings(deep_update(defaults, load_settings(args.config, args.set)))  # before any write
    points = None
    if args.points:
        if not args.class_field:
            raise ValueError("--points needs --class-field (the layer's field with class names or values)")
        points, report = import_point_layer(args.points, [raster], args.class_field, project_dir / "import" /
                                            "points.json", classes=args.classes)
        print(report.summary())
        table = ClassTable.from_csv(project_dir / "import" / "points.classes.csv", color_coded=False)
    classes = [{"name": n, "color": hex_colour(c)} for n, c in zip(table.names, table.colors, strict=True)] \
        if table else []
    print(f"{raster.name}: {why}")
    source: dict = {"rasters": [str(raster.resolve())]}
    if args.mask:
        if table is None or table.values is None:
            raise ValueError("--mask needs --classes TABLE.csv with the mask's class values")
        source |= {"mask": str(Path(args.mask).resolve()), "class_values": list(table.values)}
    return add_points(Project.create(project_dir, images, classes, source, settings), points)


def start_tiles(args: argparse.Namespace) -> Project:
    """A new project on the image tiles of ``--split`` under ``--data-root``; its palette is the dataset's class
    table (``--classes`` for a folder dataset), its clicks from a point file (``--points``, e.g. of ``points
    simulate``); with ``--mask``, the maps are scored against the split's masks."""
    if isinstance(args.mask, str):
        raise ValueError("--mask takes no file with --data-root: give --mask alone to score against the split's "
                         "own masks")
    if args.class_field:
        raise ValueError("--class-field is for point layers on a --raster; with --data-root, --points is a point "
                         "file (points.json)")
    settings = checked_settings(load_settings(args.config, args.set))
    data = {"train_split": args.split}
    if args.classes:
        data |= {"classes": str(Path(args.classes).resolve()), "format": settings.get("data", {}).get("format",
                                                                                                     "folder")}
    settings = deep_update(settings, {"data": data})
    source = build.build_source(resolve_settings(settings), args.data_root, args.split, require_masks=False)
    if not source.refs:
        raise ValueError(f"{args.data_root}: no images in split {args.split}")
    if args.mask and not any(ref.mask for ref in source.refs):
        raise ValueError(f"{args.data_root}: split {args.split} has no masks to score the maps against (--mask)")
    images = {}
    for ref in source.refs:
        height, width = source.size(ref)
        images[ref.id] = {"height": height, "width": width}
    table = source.classes
    points = None
    if args.points:
        points = load_points(args.points)
        check_against(points, list(images), {k: (v["height"], v["width"]) for k, v in images.items()},
                      list(table.names))
    classes = [{"name": n, "color": hex_colour(c)} for n, c in zip(table.names, table.colors, strict=True)]
    info = {"data_root": str(Path(args.data_root).resolve()), "split": args.split} | ({"mask": True}
                                                                                     if args.mask else {})
    return add_points(Project.create(Path(args.project), images, classes, info, settings), points)


def add_points(project: Project, points: PointSet | None) -> Project:
    """``project`` with the clicks of ``points`` added."""
    for image, pts in (points.images.items() if points else []):
        for row, col, cls in pts.tolist():
            project.add_click(image, row, col, cls)
    return project


def checked_settings(settings: dict) -> dict:
    """``settings`` (config keys over the defaults), once they are known to work: valid keys and values, and a model
    that can be built from them (a weights file that is there and readable, hub weights that can be had offline or
    fetched). Nothing is written before this check."""
    cfg = resolve_settings(settings)
    try:
        build.build_model_from_config(cfg, 2)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        weights = cfg["model"]["encoder_weights"]
        raise ValueError(f"model.encoder_weights={weights}: {error_message(e)}" if weights not in (None, "none", "")
                         else f"model.name={cfg['model']['name']}: {error_message(e)}") from e
    return settings


def same_inputs(project: Project, args: argparse.Namespace) -> bool:
    """Whether ``args`` start a project on what ``project`` holds: the same raster, or the same split of the same
    tile folder."""
    source = project.info["source"]
    if args.raster:
        return source.get("rasters") == [str(Path(args.raster).resolve())]
    return (source.get("data_root"), source.get("split")) == (str(Path(args.data_root).resolve()), args.split)


def open_project(args: argparse.Namespace) -> Project:
    """The project of ``--project``: started anew (``--raster`` or ``--data-root`` on a folder without one), or
    reopened as it was left (``--project`` alone, or the command that started it run again), its settings changed
    by ``--set``/``--config`` (said on the terminal; every later round uses them)."""
    folder = Path(args.project)
    starting = bool(args.raster or args.data_root)
    if starting and not (folder / PROJECT).exists():
        return start_project(args) if args.raster else start_tiles(args)
    project = Project.open(folder)
    if starting:
        if not same_inputs(project, args):
            raise ValueError(f"{folder}: holds a project on other images; reopen it with --project {folder} (and "
                             "--set KEY=VALUE to change its settings), or start this one in another folder")
        print(f"{folder}: reopened the project this command started ({len(project.clicks())} clicks; --points, "
              "--classes and --mask are not read again)")
    elif args.points or args.classes or args.mask:
        raise ValueError("--points, --classes and --mask start a project: give --raster or --data-root too")
    sets = load_settings(args.config, args.set)
    if sets:
        old = project.info.get("settings") or {}
        new = checked_settings(deep_update(old, sets))
        before, after = flatten(resolve_settings(old)), flatten(resolve_settings(new))
        changes = [f"{key}: {before.get(key)} -> {value}" for key, value in after.items() if before.get(key) != value]
        project.set_settings(new)
        print(f"{folder}: settings changed for the next rounds ({'; '.join(changes) or 'nothing new'})")
    else:
        checked_settings(project.info.get("settings") or {})
    return project
