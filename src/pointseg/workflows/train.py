"""Training a run: a model from clicks, dense masks or unlabeled images, into a run directory that resumes exactly
(``pointseg.runs``)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from pointseg import build, runs
from pointseg.engine import Placement, Task, load_checkpoint, train
from pointseg.engine.distributed import barrier, start_distributed, stop_distributed
from pointseg.report import plot_loss

log = logging.getLogger(__name__)


def run_training(settings: dict, out: str | Path, inputs: build.TrainInputs, resume: bool = False,
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

    Started by torchrun, every process trains its share of each batch (``engine.distributed``); rank 0 alone
    writes the run directory.
    """
    run_dir = Path(out)
    prepare = runs.prepare_resume if resume else runs.prepare_new
    cfg, inputs = prepare(run_dir, settings, inputs)  # every process, before any writes
    runtime = build.build_runtime(cfg)
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    distribution, device = start_distributed(runtime.device)
    try:
        return _train_run(cfg, run_dir, inputs, resume, argv, on_step, Placement(device, runtime.amp, distribution))
    finally:
        stop_distributed()


def _train_run(cfg: dict, run_dir: Path, inputs: build.TrainInputs, resume: bool, argv: list[str] | None,
               on_step: Callable[[int], None] | None, placement: Placement) -> Path:
    distribution, device = placement.distribution, torch.device(placement.device)
    initial = None
    if inputs.init is not None:
        saved = runs.read_model(inputs.init)
        initial = build.Initial(saved.state, saved.heads, saved.data)
    run = build.build_training(cfg, inputs, initial)
    options, optim = build.build_train_options(cfg)
    checkpoint_path = run_dir / runs.CHECKPOINT
    checkpoint = load_checkpoint(checkpoint_path, device) if resume and checkpoint_path.exists() else None
    created = False
    facts = {"device": str(device), "amp": placement.amp, "precision": "bf16" if placement.amp else "float32",
             "parameters": run.model.parameter_counts(),
             "processes": distribution.world_size}
    if distribution.is_main:
        if resume:
            start = checkpoint["step"] if checkpoint else 0
            log.info("resuming %s from step %d of %d", run_dir, start, options.steps)
            runs.record_resume(run_dir, cfg, argv, start, **facts)
        else:
            created = runs.start_run(run_dir, cfg, inputs, argv, **facts)
    barrier(distribution)
    try:
        with runs.locked(run_dir) if distribution.is_main else contextlib.nullcontext():
            tasks = [Task(part.dataset, part.unlabeled, part.name) for part in run.parts]
            train(run.model, tasks, run.method, run_dir, options, optim, cfg["seed"], placement=placement,
                  checkpoint=checkpoint, on_step=on_step)
    except BaseException:
        if distribution.is_main and not resume and not checkpoint_path.exists():
            runs.discard_run(run_dir, created)  # nothing to resume: a retry starts afresh
        raise
    if distribution.is_main:
        runs.save_model(run_dir / runs.MODEL, run.model, cfg, run.tables, run.scaling, run.data, run.dtype)
        plot_loss(run_dir / runs.METRICS, run_dir / "loss.png")
    barrier(distribution)  # the model is written before any process reports it
    return run_dir / runs.MODEL


def click_accuracy_text(accuracy: dict | None, names: list[str]) -> str:
    """Click accuracy in a line (with the classes that have clicks)."""
    if accuracy is None:
        return "click accuracy: too few clicks for cross-validation"
    per_class = ", ".join(f"{n} {v:.0%}" for n, v in zip(names, accuracy["per_class"], strict=True) if v is not None)
    return (f"click accuracy ({accuracy['folds']}-fold cross-validation over {accuracy['clicks']} clicks): "
            f"{accuracy['accuracy']:.1%}, click mIoU {accuracy['miou']:.3f}; per class: {per_class}")
