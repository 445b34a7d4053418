"""The training loop: explicit, seeded, exactly resumable, with atomic checkpoints and JSON-lines metrics.

A run is a function of its model, data and seed. Each random stream derives from the run's seed
(``stream_seed``): the model's initial weights (drawn by the caller, see ``build.build_run_model``), the method's draws
(dropout, strong augmentation, CutMix boxes) from the global torch generator seeded at step 0, and the data from
``StepBatches``, where the batch of step ``s`` and every crop and flip in it are a pure function of (seed, step).
A checkpoint therefore holds the step, the model, method, optimiser and schedule, the generators' states and the
partial logging interval; resuming from it gives the same weights and logged losses, bit for bit on the CPU, as
the run that was never stopped.

The pieces live beside this loop: batches (``batches``), the step's forward (``step``), optimiser and schedule
(``optim``), checkpoints (``checkpoint``), logging (``log``), device and seeds (``device``, ``seeding``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from tqdm import tqdm

from pointseg.engine.batches import step_batches
from pointseg.engine.checkpoint import save_checkpoint
from pointseg.engine.device import configure_determinism, peak_memory_mb
from pointseg.engine.distributed import SINGLE, Distribution, gather, reduce_line, wrap_step
from pointseg.engine.log import IntervalLog
from pointseg.engine.optim import OptimOptions, build_optimizer
from pointseg.engine.progress import Progress
from pointseg.engine.seeding import rng_state, set_rng_state, stream_seed
from pointseg.engine.step import Batches, Task, TrainStep
from pointseg.inference import autocast
from pointseg.io import append_jsonl, remove_temporaries, truncate_jsonl
from pointseg.methods import Method
from pointseg.models import SegmentationModel
from pointseg.options import Options, option

CHECKPOINT, METRICS = "checkpoints/last.pt", "metrics.jsonl"  # what the loop writes in a run directory


@dataclass(frozen=True)
class TrainOptions(Options):
    """The ``train`` section: the schedule, batches, where a run computes and how often it logs and checkpoints."""

    section: ClassVar[str] = "train"
    steps: int = option(500, "optimiser steps (about 6 min on 2 CPU cores); raise it for larger datasets or a GPU",
                        low=1)
    batch_size: int = option(8, "labeled crops per step (the global batch under torchrun)", low=1)
    unlabeled_batch_size: int | None = option(None, "unlabeled crops per step (null: batch_size)", low=1)
    device: str = option("auto", "auto | cpu | cuda")
    amp: bool | str = option("auto", "bf16 autocast: auto (where bf16 is native: CUDA, AVX512-BF16/AMX CPUs) | "
                                     "true | false", choices=("auto", True, False))
    deterministic: bool = option(False, "CUDA: deterministic cuDNN/cuBLAS kernels (slower); CPU runs are "
                                        "deterministic anyway")
    channels_last: bool = option(True, "channels-last memory format (faster convolutions)")
    trainable: str = option("all", "with --init: all (fine-tune everything) | added (only the heads and experts of "
                                   "the datasets the --init model lacks; the rest frozen, its other heads kept)",
                            choices=("all", "added"))
    threads: int = option(2, "CPU threads (0: torch's default)", low=0)
    num_workers: int = option(0, "data-loading processes", low=0)
    log_every: int = option(20, "steps per line of metrics.jsonl", low=1)
    checkpoint_every: int = option(200, "steps between checkpoints (and at the end)", low=1)


@dataclass(frozen=True)
class Placement:
    """Where and how the loop runs: ``device``, bf16 autocast (``amp``), this process's place in data-parallel
    training (``distribution``, see ``engine.distributed``) and whether a progress bar is shown."""

    device: torch.device | str = "cpu"
    amp: bool = False
    distribution: Distribution = SINGLE
    progress: bool = True


def train(model: SegmentationModel, tasks: Sequence[Task], method: Method, run_dir: str | Path,
          options: TrainOptions, optim: OptimOptions = OptimOptions(), seed: int = 0, *,
          placement: Placement = Placement(), checkpoint: dict | None = None,
          on_step: Callable[[int], None] | None = None) -> SegmentationModel:
    """Train ``model`` with ``method`` for ``options.steps`` optimiser steps, each on one random batch of every task.

    Labeled batches hold ``image``, ``soft_mask`` and ``weight``; methods that use unlabeled data also get a
    batch of the task's ``unlabeled`` each step. ``method(model, labeled, unlabeled, head) -> (loss, logs)``; the
    task losses and the model's auxiliary loss are summed into one backward pass (``TrainStep``), and the method's
    own trainable parameters are optimised with the model's (``optim``). Writes ``metrics.jsonl`` (every
    ``log_every`` steps: losses and the method's finite logs averaged over those steps, learning rate, throughput,
    peak memory) and ``checkpoints/last.pt`` (every ``checkpoint_every`` steps and at the end) under ``run_dir``.

    The model's initial weights are the caller's (seed before building it); everything random from here on
    derives from ``seed``. Given a ``checkpoint`` (``load_checkpoint``), training continues from it: lines of
    ``metrics.jsonl`` after its step are dropped and logged again, and the result equals the run that was never
    stopped. ``on_step(step)`` is called after every step (tests stop a run through it).

    Under data-parallel training (``placement.distribution``) the step runs inside DistributedDataParallel,
    ``batch_size`` is the global batch, rank 0 alone writes.
    """
    run_dir, device, distribution = Path(run_dir), torch.device(placement.device), placement.distribution
    if not tasks:
        raise ValueError("nothing to train on: no task")
    if method.uses_unlabeled and any(t.unlabeled is None for t in tasks):
        raise ValueError(f"method {type(method).__name__} needs unlabeled images")
    ckpt_path, metrics_path = run_dir / CHECKPOINT, run_dir / METRICS
    configure_determinism(device, options.deterministic)
    memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
    model.to(device)
    model.to(memory_format=memory_format)
    method.to(device)
    step_module = wrap_step(TrainStep(model, method), distribution, device)
    optimizer, scheduler = build_optimizer([*model.parameters(), *method.parameters()], optim.lr, optim.weight_decay,
                                           optim.warmup_steps, options.steps)
    start, interval = _restore(checkpoint, (model, method, optimizer, scheduler), seed, distribution)
    if distribution.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_temporaries(ckpt_path)  # left by a process killed while it saved
        truncate_jsonl(metrics_path, "step", start)
    draw = _task_batches(tasks, method.uses_unlabeled, options.batch_size, options.unlabeled_batch_size, seed, start,
                         options.num_workers, distribution)
    _train_mode(step_module, model)
    bar = tqdm(range(start, options.steps), initial=start, total=options.steps, desc="train",
               disable=not placement.progress or not distribution.is_main,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
    progress, logged = Progress(run_dir if distribution.is_main else None, options.steps), ""
    for step in bar:
        batches: Batches = [(head, _to(labeled, device, memory_format),
                             None if unlabeled is None else _to(unlabeled, device, memory_format))
                            for head, labeled, unlabeled in next(draw)]
        logs = _optimise(step_module, batches, (optimizer, scheduler), method, model, placement, step)
        interval.add(logs, sum(labeled["image"].shape[0] for _, labeled, _ in batches))
        done = step + 1
        if done % options.log_every == 0 or done == options.steps:
            line = reduce_line(interval.line(), distribution)  # means over the processes
            logged = f"; loss {line['loss']:.4f}, {line['images_per_s']:.1f} images/s"
            if distribution.is_main:
                append_jsonl(metrics_path, {"step": done, **line, "lr": scheduler.get_last_lr()[0],
                                            "peak_memory_mb": round(peak_memory_mb(device))})
        if done % options.checkpoint_every == 0 or done == options.steps:
            _save(ckpt_path, done, (model, method, optimizer, scheduler), interval, distribution)
        bar.set_postfix_str(Progress.text(progress.update(done)) + logged, refresh=False)
        if on_step is not None:
            on_step(done)
    return model


Trained = tuple[SegmentationModel, Method, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]


def _restore(checkpoint: dict | None, trained: Trained, seed: int, distribution: Distribution
             ) -> tuple[int, IntervalLog]:
    """The step to start from and the logging interval: a checkpoint's (its states loaded into ``trained``, its
    generators restored), or step 0 with this process's method stream seeded."""
    if checkpoint is None:
        torch.manual_seed(stream_seed(seed, "method", distribution.rank))  # each process its own draws
        return 0, IntervalLog()
    model, method, optimizer, scheduler = trained
    model.load_state_dict(checkpoint["model"])
    method.load_state_dict(checkpoint["method"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    rng = checkpoint["rng"]
    set_rng_state(rng[distribution.rank] if isinstance(rng, list) else rng)
    return checkpoint["step"], IntervalLog(checkpoint["interval"])


def _train_mode(step_module: torch.nn.Module, model: SegmentationModel) -> None:
    """Training mode, except for frozen normalisation layers, which keep their statistics."""
    step_module.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in module.parameters()):
            module.eval()


def _optimise(step_module: torch.nn.Module, batches: Batches,
              schedule: tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler], method: Method,
              model: SegmentationModel, placement: Placement, step: int) -> dict:
    """One optimiser step on ``batches``; the step's logs."""
    optimizer, scheduler = schedule
    with autocast(torch.device(placement.device), placement.amp):
        loss, logs = step_module(batches)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower optim.lr or disable amp")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    method.after_step(model)
    return logs


def _save(path: Path, done: int, trained: Trained, interval: IntervalLog, distribution: Distribution) -> None:
    """A checkpoint of step ``done`` with every process's generators (written by rank 0)."""
    model, method, optimizer, scheduler = trained
    rng = gather(rng_state(), distribution)  # every process's generators
    if distribution.is_main:
        save_checkpoint(path, step=done, model=model.state_dict(), method=method.state_dict(),
                        optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                        rng=rng if distribution.active else rng[0], interval=interval.state_dict())


def _task_batches(tasks: Sequence[Task], uses_unlabeled: bool, batch_size: int, unlabeled_batch_size: int | None,
                  seed: int, start: int, num_workers: int, distribution: Distribution = SINGLE
                  ) -> Iterator[Batches]:
    """Endless ``(head, labeled, unlabeled)`` batches of every task from step ``start`` on; task ``i`` draws from
    the ``i``-th ``labeled``/``unlabeled`` streams (task 0 from the run's own, as a one-dataset run); this
    process's share of each global batch."""
    share = (distribution.rank, distribution.world_size)
    labeled = [step_batches(t.labeled, batch_size, stream_seed(seed, "labeled", i), start, num_workers, *share)
               for i, t in enumerate(tasks)]
    unlabeled = [step_batches(t.unlabeled, unlabeled_batch_size or batch_size, stream_seed(seed, "unlabeled", i),
                              start, num_workers, *share) if uses_unlabeled and t.unlabeled is not None else None
                 for i, t in enumerate(tasks)]
    while True:
        yield [(t.head, next(lab), None if unl is None else next(unl))
               for t, lab, unl in zip(tasks, labeled, unlabeled, strict=True)]


def _to(batch: dict, device: torch.device, memory_format: torch.memory_format) -> dict:
    """Move a batch to ``device``; images in ``memory_format``."""
    return {k: (v.to(device, memory_format=memory_format) if k == "image" else v.to(device)) for k, v in batch.items()}
