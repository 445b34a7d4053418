"""``pointseg train`` and ``pointseg pretrain``: a model from clicks, dense masks or unlabeled images, into a run
directory that resumes exactly (``pointseg.runs``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pointseg.commands.options import with_config

if TYPE_CHECKING:
    from pointseg.fastloop import FastRun


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
    from pointseg import build, fastloop, runs
    from pointseg.config import load_settings
    from pointseg.workflows.train import run_training

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


def report_fast(fast: FastRun) -> Path:
    """Print what a fast fit did; returns its model file."""
    from pointseg import runs
    from pointseg.workflows.train import click_accuracy_text

    s = fast.seconds
    print(f"fast model fitted on {fast.samples} samples in {s['fit']:.1f} s (encoder features {s['features']:.1f} s, "
          f"{fast.cache.encoded} images encoded, the rest read from the feature cache)")
    if fast.choice is not None:
        print(f"fast model: {fast.choice.text()}")
    print(click_accuracy_text(fast.accuracy, list(fast.trained.classes.names)))
    path = fast.run_dir / runs.MODEL
    print(f"saved to {path}")
    return path


def main_pretrain(args: argparse.Namespace) -> Path:
    """``train`` as S5's S4P: method fixmatch, CutMix from a second unlabeled batch (the unlabeled batch twice the
    labeled one, halves mixed), unless the settings say otherwise."""
    if args.resume:
        return main(args)
    if not args.unlabeled:
        raise ValueError("pretrain learns from unlabeled images: give --unlabeled DIR or a .txt list "
                         "(e.g. from pointseg curate)")
    from pointseg.config import load_config

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
                    help="fit the fast model in seconds: a head (fast.head) over the frozen encoder's hypercolumn, on "
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
