"""``pointseg train`` and ``pointseg pretrain``: a model from clicks, dense masks or unlabeled images, into a run
directory that resumes exactly (``pointseg.runs``)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from pointseg import build, fastloop, runs
from pointseg.commands.options import with_config
from pointseg.config import load_config, load_settings
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


def main(args: argparse.Namespace) -> Path:
    data_root, dataset_roots = split_roots(args.data_root)
    inputs = build.TrainInputs(data_root, args.points, args.labeled, tuple(args.unlabeled), args.tags,
                         tuple(args.raster), tuple(args.mask), dataset_roots,
                         runs.model_file(args.init) if args.init else None)
    settings = load_settings(args.config, args.set)
    if getattr(args, "fast", False):
        return report_fast(fastloop.fast_train(settings, args.out, inputs, args.argv)) if not args.resume else \
            _no_fast_resume()
    if args.init:
        settings = fastloop.warm_start_settings(settings, args.init)
    path = run_training(settings, args.out, inputs, args.resume, args.argv)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 reports
        return path
    counts = runs.read_info(path.parent)["invocations"][-1]["parameters"]
    added = ", ".join(f"{name} {n / 1e3:.0f}K" for name, n in counts["per_dataset"].items())
    print(f"trained model saved to {path} ({counts['total'] / 1e6:.2f}M parameters; added per dataset (head and "
          f"experts): {added})")
    return path


def _no_fast_resume() -> Path:
    raise ValueError("--fast fits in seconds and does not resume: start a new run in another --out")


def report_fast(fast: fastloop.FastRun) -> Path:
    """Print what a fast fit did; returns its model file."""
    s = fast.seconds
    print(f"fast model fitted on {fast.samples} samples in {s['fit']:.1f} s (encoder features {s['features']:.1f} s, "
          f"{fast.cache.encoded} images encoded, the rest read from the feature cache)")
    print(click_accuracy_text(fast.accuracy, list(fast.trained.classes.names)))
    path = fast.run_dir / runs.MODEL
    print(f"saved to {path}")
    return path


def click_accuracy_text(accuracy: dict | None, names: list[str]) -> str:
    """Click accuracy in a line (with the classes that have clicks)."""
    if accuracy is None:
        return "click accuracy: too few clicks for cross-validation"
    per_class = ", ".join(f"{n} {v:.0%}" for n, v in zip(names, accuracy["per_class"], strict=True) if v is not None)
    return (f"click accuracy ({accuracy['folds']}-fold cross-validation over {accuracy['clicks']} clicks): "
            f"{accuracy['accuracy']:.1%}, click mIoU {accuracy['miou']:.3f}; per class: {per_class}")


def main_pretrain(args: argparse.Namespace) -> Path:
    """``train`` as S5's S4P: method fixmatch, CutMix from a second unlabeled batch (the unlabeled batch twice the
    labeled one, halves mixed), unless the settings say otherwise."""
    if args.resume:
        return main(args)
    if not args.unlabeled:
        raise ValueError("pretrain learns from unlabeled images: give --unlabeled DIR or a .txt list "
                         "(e.g. from pointseg curate)")
    train = load_config(args.config, args.set)["train"]
    s4p = ["method.name=fixmatch", "method.fixmatch.cutmix_partner=second"]
    if train["unlabeled_batch_size"] is None:
        s4p.append(f"train.unlabeled_batch_size={2 * train['batch_size']}")
    args.set = [*s4p, *args.set]
    return main(args)


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


def register(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser("train", help="train a model (dense masks, or points with --points)")
    add_train_arguments(tr)
    tr.add_argument("--fast", action="store_true",
                    help="fit the fast model in seconds: a softmax head over the frozen encoder's hypercolumn, on "
                         "the clicks (--points) and their propagation, with its click accuracy; warm-start the full "
                         "recipe from it with train --init FASTRUN")
    with_config(tr)
    tr.set_defaults(func=main)
    pre = sub.add_parser("pretrain", help="semi-supervised pre-training (S5's S4P): train with method fixmatch on "
                                          "the labeled data and --unlabeled images (e.g. a curated list); "
                                          "fine-tune from it with train --init")
    add_train_arguments(pre)
    with_config(pre)
    pre.set_defaults(func=main_pretrain)
