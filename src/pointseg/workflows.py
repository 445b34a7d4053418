"""Workflows: train, evaluate and predict as plain functions that the CLI, the demo and the benchmarks share."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from pointseg import build, runs
from pointseg.config import merge
from pointseg.data.dataset import EvalDataset
from pointseg.data.sources import ImageFolder, Source
from pointseg.evaluate import evaluate, write_predictions
from pointseg.points import load_points
from pointseg.report import plot_loss
from pointseg.train import pick_device, train


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
    runs.write_run_info(run_dir, cfg, argv)
    t, o = cfg["train"], cfg["optim"]
    train(model, dataset, method, run_dir, unlabeled=unlabeled, unlabeled_batch_size=t["unlabeled_batch_size"],
          steps=t["steps"], batch_size=t["batch_size"],
          lr=o["lr"], weight_decay=o["weight_decay"], warmup_steps=o["warmup_steps"],
          device=pick_device(t["device"]), amp=t["amp"], channels_last=t["channels_last"], seed=cfg["seed"],
          num_workers=t["num_workers"], log_every=t["log_every"], checkpoint_every=t["checkpoint_every"],
          resume=resume)
    runs.save_model(run_dir / "model.pt", model, cfg, source.classes)
    plot_loss(run_dir / "metrics.jsonl", run_dir / "loss.png")
    return run_dir / "model.pt"


def run_evaluation(run_dir: str | Path, data_root: str | Path, split: str, out: str | Path) -> dict:
    model, cfg, classes = runs.load_run(run_dir, pick_device(cfg_device(run_dir)))
    source = build.build_source(cfg, data_root, split)
    metrics = evaluate(model, build.build_eval_dataset(cfg, source), classes, out, amp=cfg["train"]["amp"])
    return metrics


def cfg_device(run_dir: str | Path) -> str:
    return yaml.safe_load((Path(run_dir) / "config.yaml").read_text())["train"]["device"]




def run_prediction(run_dir: str | Path, input_dir: str | Path, out: str | Path) -> list[Path]:
    """Index and colour PNG masks for every image in ``input_dir``; returns the written paths."""
    model, cfg, classes = runs.load_run(run_dir, pick_device(cfg_device(run_dir)))
    dataset = EvalDataset(build.build_cache(cfg, ImageFolder(input_dir, classes)))
    return write_predictions(model, dataset, classes, out, amp=cfg["train"]["amp"])
