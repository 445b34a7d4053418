"""Workflows: train, evaluate and predict as plain functions that the CLI, the demo and the benchmarks share."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from pointseg import build, runs
from pointseg.data.dataset import TrainDataset
from pointseg.data.sources import ImageFolder, Source
from pointseg.evaluate import evaluate, write_predictions
from pointseg.inference import use_amp
from pointseg.io import check_writable, write_text
from pointseg.methods import Method
from pointseg.models import SegmentationModel
from pointseg.points import load_points
from pointseg.report import plot_loss
from pointseg.train import load_checkpoint, pick_device, seed_everything, stream_seed, train

log = logging.getLogger(__name__)


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


def training_sources(cfg: dict, data_root: str | Path, dense: bool, labeled_ids: str | Path | None,
                     unlabeled_dirs: tuple[str | Path, ...]) -> tuple[Source, list[Source]]:
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


def build_training(cfg: dict, inputs: runs.TrainInputs
                   ) -> tuple[Source, TrainDataset, SegmentationModel, Method, Dataset | None]:
    """The labeled source and dataset, the model (initialised from the run's seed), the method and, for methods
    that use them, the unlabeled data."""
    if inputs.data_root is None:
        raise ValueError("--data-root is required to start a run")
    source, unlabeled_sources = training_sources(cfg, inputs.data_root, inputs.points is None, inputs.labeled,
                                                 inputs.unlabeled)
    points = load_points(inputs.points) if inputs.points else None
    dataset = build.build_train_dataset(cfg, source, points)
    seed_everything(stream_seed(cfg["seed"], "model"))  # the initial weights
    model = build.build_model_from_config(cfg, source.classes.num_classes)
    method = build.build_method(cfg, model, source.classes.num_classes)
    unlabeled = None
    if method.uses_unlabeled:
        image_tags = build.read_tags(inputs.tags, list(source.classes.names)) if inputs.tags else None
        unlabeled = build.build_unlabeled_dataset(cfg, unlabeled_sources or [source], image_tags)
    return source, dataset, model, method, unlabeled


def run_training(settings: dict, out: str | Path, inputs: runs.TrainInputs, resume: bool = False,
                 argv: list[str] | None = None, on_step: Callable[[int], None] | None = None) -> Path:
    """Train into run directory ``out``; returns the path of the saved model.

    ``settings``: the config keys asked for (a whole config, or only the keys to change), put over the defaults
    for a new run and over the run's saved config with ``resume`` (where only ``runs.RESUMABLE`` keys may
    differ). ``inputs``: what the run trains on. ``inputs.labeled``: a file of the sample ids whose masks (or
    points) are used; the other images of the split become unlabeled data. ``inputs.unlabeled``: folders of
    further unlabeled images. A method that uses unlabeled data and gets none of these learns from the unlabeled
    pixels of the labeled images. ``inputs.tags``: image-level labels of the unlabeled images (CSV
    ``id,classes``), used by PseudoSeg's Grad-CAMs. Everything is set up before the run directory is written;
    a new run that fails before its first checkpoint is removed again.
    """
    run_dir = Path(out)
    prepare = runs.prepare_resume if resume else runs.prepare_new
    cfg, inputs = prepare(run_dir, settings, inputs)
    t, o = cfg["train"], cfg["optim"]
    if t["threads"]:
        torch.set_num_threads(t["threads"])
    device = pick_device(t["device"])
    amp = use_amp(t["amp"], device)
    source, dataset, model, method, unlabeled = build_training(cfg, inputs)
    checkpoint_path = run_dir / runs.CHECKPOINT
    checkpoint = load_checkpoint(checkpoint_path, device) if resume and checkpoint_path.exists() else None
    created = False
    if resume:
        start = checkpoint["step"] if checkpoint else 0
        log.info("resuming %s from step %d of %d", run_dir, start, t["steps"])
        runs.record_resume(run_dir, cfg, argv, start, device=str(device), amp=amp)
    else:
        created = runs.start_run(run_dir, cfg, inputs, argv, device=str(device), amp=amp)
    try:
        with runs.locked(run_dir):
            train(model, dataset, method, run_dir, unlabeled=unlabeled,
                  unlabeled_batch_size=t["unlabeled_batch_size"], steps=t["steps"], batch_size=t["batch_size"],
                  lr=o["lr"], weight_decay=o["weight_decay"], warmup_steps=o["warmup_steps"], device=device,
                  amp=amp, channels_last=t["channels_last"], seed=cfg["seed"], num_workers=t["num_workers"],
                  log_every=t["log_every"], checkpoint_every=t["checkpoint_every"], checkpoint=checkpoint,
                  deterministic=t["deterministic"], on_step=on_step)
    except BaseException:
        if not resume and not checkpoint_path.exists():
            runs.discard_run(run_dir, created)  # nothing to resume: a retry starts afresh
        raise
    runs.save_model(run_dir / runs.MODEL, model, cfg, source.classes)
    plot_loss(run_dir / runs.METRICS, run_dir / "loss.png")
    return run_dir / runs.MODEL


def run_evaluation(run: str | Path, data_root: str | Path, split: str, out: str | Path) -> dict:
    """Metrics of a finished run (directory or ``model.pt``) on ``split`` at full label resolution."""
    check_writable(Path(out).parent)
    model, cfg, classes = runs.load_run(run)
    source = build.build_source(cfg, data_root, split)
    return evaluate(model, build.build_eval_dataset(cfg, source), classes, out, amp=inference_amp(model, cfg))


def inference_amp(model: SegmentationModel, cfg: dict) -> bool:
    """bf16 autocast for inference: the run's ``train.amp`` on the device the model is on now."""
    return use_amp(cfg["train"]["amp"], next(model.parameters()).device)


def run_prediction(run: str | Path, input_dir: str | Path, out: str | Path) -> tuple[list[Path], list[str]]:
    """Index and colour PNG masks for every readable image in ``input_dir``.

    Unreadable images are skipped, not fatal: returns the written paths and one message per skipped image
    (``<file>: <reason>``), which are also listed in ``<out>/unreadable.txt``.
    """
    check_writable(out)
    model, cfg, classes = runs.load_run(run)
    dataset = build.build_eval_dataset(cfg, ImageFolder(input_dir, classes))
    unreadable: list[str] = []
    written = write_predictions(model, dataset, classes, out, amp=inference_amp(model, cfg), unreadable=unreadable)
    listing = Path(out) / "unreadable.txt"
    if unreadable:
        write_text(listing, "".join(f"{m}\n" for m in unreadable))
    else:
        listing.unlink(missing_ok=True)  # from an earlier prediction into the same folder
    return written, unreadable
