"""The ``pointseg`` command line: points simulate, train, evaluate, predict, demo, download."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
import yaml

from pointseg import build
from pointseg.config import load_config, merge
from pointseg.data.dataset import EvalDataset
from pointseg.data.sources import ImageFolder, Source
from pointseg.evaluate import evaluate, write_predictions
from pointseg.points import STRATEGIES, load_points, save_points, simulate
from pointseg.report import plot_loss
from pointseg.train import pick_device, train

log = logging.getLogger("pointseg")


def cmd_points_simulate(args: argparse.Namespace) -> Path:
    cfg = load_config(args.config, args.set)
    source = build.build_source(cfg, args.data_root, args.split)
    points = simulate(source, args.per_image, args.seed, args.strategy)
    save_points(args.out, points)
    print(f"wrote {len(points)} points on {len(points.images)} images to {args.out}")
    return Path(args.out)


def read_ids(path: str | Path) -> list[str]:
    """Sample ids, one per line (blank lines and ``#`` comments skipped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ValueError(f"{path}: cannot read id list ({e})") from e
    ids = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not ids:
        raise ValueError(f"{path}: the id list is empty")
    return ids


def run_config(cfg: dict, run_dir: Path, resume: bool) -> dict:
    """The config of a new run, or with ``resume`` the saved one (only ``train.steps`` may change)."""
    if (run_dir / "config.yaml").exists() and not resume:
        raise FileExistsError(f"{run_dir}: already holds a run; pass --resume to continue it or choose another --out")
    if resume and (run_dir / "config.yaml").exists():
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        cfg = merge(saved, {"train": {"steps": cfg["train"]["steps"]}})
    run_dir.mkdir(parents=True, exist_ok=True)
    return cfg


def training_sources(cfg: dict, data_root: str | Path, dense: bool, labeled_ids: str | Path | None,
                     unlabeled_dirs: list[str] | tuple[str, ...]) -> tuple[Source, list[Source]]:
    """The labeled source and the unlabeled ones: the rest of the split (with ``labeled_ids``) and folders."""
    source = build.build_source(cfg, data_root, cfg["data"]["train_split"], require_masks=dense and not labeled_ids)
    unlabeled: list[Source] = [ImageFolder(d, source.classes, recursive=True, images=cfg["data"]["images"])
                               for d in unlabeled_dirs]
    if labeled_ids is not None:
        ids = read_ids(labeled_ids)
        chosen = set(ids)
        rest = [r.id for r in source.refs if r.id not in chosen]
        if rest:
            unlabeled.insert(0, source.subset(rest, "unlabeled"))
        source = source.subset(ids, f"labeled ids of {labeled_ids}")
    return source, unlabeled


def run_training(cfg: dict, data_root: str | Path, out: str | Path, points_path: str | Path | None = None,
                 resume: bool = False, argv: list[str] | None = None, labeled_ids: str | Path | None = None,
                 unlabeled_dirs: list[str] | tuple[str, ...] = (), tags: str | Path | None = None) -> Path:
    """Train per ``cfg`` into run directory ``out``; returns the path of the saved model.

    ``labeled_ids``: a file of the sample ids whose masks (or points) are used; the other images of the
    split become unlabeled data. ``unlabeled_dirs``: folders of further unlabeled images. A method that uses
    unlabeled data and gets none of these learns from the unlabeled pixels of the labeled images. ``tags``:
    image-level labels of the unlabeled images (CSV ``id,classes``), used by PseudoSeg's Grad-CAMs.
    """
    run_dir = Path(out)
    cfg = run_config(cfg, run_dir, resume)
    if cfg["train"]["threads"]:
        torch.set_num_threads(cfg["train"]["threads"])
    source, unlabeled_sources = training_sources(cfg, data_root, points_path is None, labeled_ids, unlabeled_dirs)
    points = load_points(points_path) if points_path else None
    dataset = build.build_train_dataset(cfg, source, points)
    model = build.build_model_from_config(cfg, source.classes.num_classes)
    method = build.build_method(cfg, model, source.classes.num_classes)
    unlabeled = None
    if method.uses_unlabeled:
        image_tags = build.read_tags(tags, list(source.classes.names)) if tags else None
        unlabeled = build.build_unlabeled_dataset(cfg, unlabeled_sources or [source], image_tags)
    build.write_run_info(run_dir, cfg, argv)
    t, o = cfg["train"], cfg["optim"]
    train(model, dataset, method, run_dir, unlabeled=unlabeled, unlabeled_batch_size=t["unlabeled_batch_size"],
          steps=t["steps"], batch_size=t["batch_size"],
          lr=o["lr"], weight_decay=o["weight_decay"], warmup_steps=o["warmup_steps"],
          device=pick_device(t["device"]), amp=t["amp"], channels_last=t["channels_last"], seed=cfg["seed"],
          num_workers=t["num_workers"], log_every=t["log_every"], checkpoint_every=t["checkpoint_every"],
          resume=resume)
    build.save_model(run_dir / "model.pt", model, cfg, source.classes)
    plot_loss(run_dir / "metrics.jsonl", run_dir / "loss.png")
    return run_dir / "model.pt"


def cmd_train(args: argparse.Namespace) -> Path:
    cfg = load_config(args.config, args.set)
    path = run_training(cfg, args.data_root, args.out, args.points, args.resume, sys.argv, args.labeled,
                        args.unlabeled, args.tags)
    print(f"trained model saved to {path}")
    return path


def run_evaluation(run_dir: str | Path, data_root: str | Path, split: str, out: str | Path) -> dict:
    model, cfg, classes = build.load_run(run_dir, pick_device(cfg_device(run_dir)))
    source = build.build_source(cfg, data_root, split)
    metrics = evaluate(model, build.build_eval_dataset(cfg, source), classes, out, amp=cfg["train"]["amp"])
    return metrics


def cfg_device(run_dir: str | Path) -> str:
    return yaml.safe_load((Path(run_dir) / "config.yaml").read_text())["train"]["device"]


def cmd_evaluate(args: argparse.Namespace) -> dict:
    metrics = run_evaluation(args.run, args.data_root, args.split, args.out)
    print(Path(args.out).with_suffix(".txt").read_text(), end="")
    return metrics


def cmd_predict(args: argparse.Namespace) -> list[Path]:
    model, cfg, classes = build.load_run(args.run, pick_device(cfg_device(args.run)))
    dataset = EvalDataset(build.build_cache(cfg, ImageFolder(args.input, classes)))
    written = write_predictions(model, dataset, classes, args.out, amp=cfg["train"]["amp"])
    print(f"wrote {len(written) // 2} masks (index and colour PNGs) to {args.out}")
    return written


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
    return reports


def cmd_download(args: argparse.Namespace) -> Path:
    from pointseg.data.download import download_loveda

    return download_loveda(args.root, tuple(args.splits))


def cmd_demo(args: argparse.Namespace) -> Path:
    """Simulate 20 points/image -> train -> evaluate on Val -> predict a few images -> REPORT.md."""
    from pointseg.demo import run_demo

    return run_demo(args.data_root, args.out, args.set, download=args.download, per_image=args.per_image)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pointseg", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", help="YAML file overriding the default config")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config key")

    pts = sub.add_parser("points", help="point labels").add_subparsers(dest="points_command", required=True)
    sim = pts.add_parser("simulate", help="simulate N clicks per image from dense masks")
    sim.add_argument("--data-root", required=True)
    sim.add_argument("--split", default="Train")
    sim.add_argument("--per-image", type=int, required=True)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--strategy", choices=STRATEGIES, default="uniform")
    sim.add_argument("--out", required=True)
    with_config(sim)
    sim.set_defaults(func=cmd_points_simulate)

    lab = sub.add_parser("labels", help="label diagnostics").add_subparsers(dest="labels_command", required=True)
    ins = lab.add_parser("inspect", help="label area kept per class by nearest vs soft down-sampling")
    ins.add_argument("--data-root", required=True)
    ins.add_argument("--split", default="Train")
    ins.add_argument("--scale", type=float, nargs="+", default=[0.5, 0.25, 0.125])
    ins.add_argument("--mode", choices=["area", "bilinear"], default="area")
    ins.add_argument("--out", required=True, help="directory for the table (.md, .json) and bar plot (.png)")
    with_config(ins)
    ins.set_defaults(func=cmd_labels_inspect)

    tr = sub.add_parser("train", help="train a model (dense masks, or points with --points)")
    tr.add_argument("--data-root", required=True)
    tr.add_argument("--points", help="point-label file (default: train on dense masks)")
    tr.add_argument("--out", required=True, help="run directory")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    tr.add_argument("--labeled", help="file of sample ids to take labels from; the rest of the split is unlabeled")
    tr.add_argument("--unlabeled", action="append", default=[], metavar="DIR",
                    help="folder of unlabeled images (repeatable); used by methods such as fixmatch and pseudoseg")
    tr.add_argument("--tags", help="image-level labels of unlabeled images: CSV id,classes (names separated by ;)")
    with_config(tr)
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="metrics at full label resolution")
    ev.add_argument("--run", required=True)
    ev.add_argument("--data-root", required=True)
    ev.add_argument("--split", default="Val")
    ev.add_argument("--out", required=True, help="metrics JSON (table and plots are written beside it)")
    ev.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="predict masks for a folder of images")
    pr.add_argument("--run", required=True)
    pr.add_argument("--input", required=True)
    pr.add_argument("--out", required=True)
    pr.set_defaults(func=cmd_predict)

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
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        args.func(args)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        if args.verbose:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"pointseg: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
