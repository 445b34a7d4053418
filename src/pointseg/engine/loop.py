"""The training loop: explicit, seeded, exactly resumable, with atomic checkpoints and JSON-lines metrics.

A run is a function of its model, data and seed. Each random stream derives from the run's seed
(``stream_seed``): the model's initial weights (drawn by the caller, see ``workflows``), the method's draws
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
from pathlib import Path

import torch
from tqdm import tqdm

from pointseg.engine.batches import step_batches
from pointseg.engine.checkpoint import save_checkpoint
from pointseg.engine.device import configure_determinism, peak_memory_mb
from pointseg.engine.distributed import SINGLE, Distribution, gather, reduce_line, wrap_step
from pointseg.engine.log import IntervalLog
from pointseg.engine.optim import build_optimizer
from pointseg.engine.seeding import rng_state, set_rng_state, stream_seed
from pointseg.engine.step import Batches, Task, TrainStep
from pointseg.inference import autocast
from pointseg.io import append_jsonl, remove_temporaries, truncate_jsonl
from pointseg.methods import Method
from pointseg.models import SegmentationModel


def train(model: SegmentationModel, tasks: Sequence[Task], method: Method, run_dir: str | Path, *, steps: int,
          batch_size: int, lr: float, weight_decay: float = 0.0, warmup_steps: int = 0,
          unlabeled_batch_size: int | None = None, device: torch.device | str = "cpu", amp: bool = True,
          channels_last: bool = True, seed: int = 0, num_workers: int = 0, log_every: int = 20,
          checkpoint_every: int = 200, checkpoint: dict | None = None, progress: bool = True,
          deterministic: bool = False, on_step: Callable[[int], None] | None = None,
          distribution: Distribution = SINGLE) -> SegmentationModel:
    """Train ``model`` with ``method`` for ``steps`` optimiser steps, each on one random batch of every task.

    Labeled batches hold ``image``, ``soft_mask`` and ``weight``; methods that use unlabeled data also get a
    batch of the task's ``unlabeled`` each step. ``method(model, labeled, unlabeled, head) -> (loss, logs)``; the
    task losses and the model's auxiliary loss are summed into one backward pass (``TrainStep``), and the method's
    own trainable parameters are optimised with the model's. Writes ``metrics.jsonl`` (every ``log_every`` steps:
    losses and the method's finite logs averaged over those steps, learning rate, throughput, peak memory) and
    ``checkpoints/last.pt`` (every ``checkpoint_every`` steps and at the end) under ``run_dir``.

    The model's initial weights are the caller's (seed before building it); everything random from here on
    derives from ``seed``. Given a ``checkpoint`` (``load_checkpoint``), training continues from it: lines of
    ``metrics.jsonl`` after its step are dropped and logged again, and the result equals the run that was never
    stopped. ``on_step(step)`` is called after every step (tests stop a run through it).

    ``distribution``: this process's place in data-parallel training (``engine.distributed``): the step runs
    inside DistributedDataParallel, ``batch_size`` is the global batch, rank 0 alone writes.
    """
    run_dir, device = Path(run_dir), torch.device(device)
    if not tasks:
        raise ValueError("nothing to train on: no task")
    if method.uses_unlabeled and any(t.unlabeled is None for t in tasks):
        raise ValueError(f"method {type(method).__name__} needs unlabeled images")
    ckpt_path, metrics_path = run_dir / "checkpoints" / "last.pt", run_dir / "metrics.jsonl"
    configure_determinism(device, deterministic)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device)
    model.to(memory_format=memory_format)
    method.to(device)
    step_module = wrap_step(TrainStep(model, method), distribution, device)
    optimizer, scheduler = build_optimizer([*model.parameters(), *method.parameters()], lr, weight_decay,
                                           warmup_steps, steps)
    start, interval = 0, IntervalLog()
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        method.load_state_dict(checkpoint["method"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        rng = checkpoint["rng"]
        set_rng_state(rng[distribution.rank] if isinstance(rng, list) else rng)
        start, interval = checkpoint["step"], IntervalLog(checkpoint["interval"])
    else:
        torch.manual_seed(stream_seed(seed, "method", distribution.rank))  # each process its own draws
    if distribution.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_temporaries(ckpt_path)  # left by a process killed while it saved
        truncate_jsonl(metrics_path, "step", start)
    draw = _task_batches(tasks, method.uses_unlabeled, batch_size, unlabeled_batch_size, seed, start, num_workers,
                         distribution)

    step_module.train()
    for module in model.modules():  # a frozen normalisation layer keeps its statistics too
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in module.parameters()):
            module.eval()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="train",
               disable=not progress or not distribution.is_main)
    for step in bar:
        batches: Batches = [(head, _to(labeled, device, memory_format),
                             None if unlabeled is None else _to(unlabeled, device, memory_format))
                            for head, labeled, unlabeled in next(draw)]
        with autocast(device, amp):
            loss, logs = step_module(batches)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower optim.lr or disable amp")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        method.after_step(model)
        interval.add(logs, sum(labeled["image"].shape[0] for _, labeled, _ in batches))
        done = step + 1
        if done % log_every == 0 or done == steps:
            line = reduce_line(interval.line(), distribution)  # means over the processes
            bar.set_postfix(loss=f"{line['loss']:.4f}", img_s=f"{line['images_per_s']:.1f}")
            if distribution.is_main:
                append_jsonl(metrics_path, {"step": done, **line, "lr": scheduler.get_last_lr()[0],
                                            "peak_memory_mb": round(peak_memory_mb(device))})
        if done % checkpoint_every == 0 or done == steps:
            rng = gather(rng_state(), distribution)  # every process's generators
            if distribution.is_main:
                save_checkpoint(ckpt_path, step=done, model=model.state_dict(), method=method.state_dict(),
                                optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                                rng=rng if distribution.active else rng[0], interval=interval.state_dict())
        if on_step is not None:
            on_step(done)
    return model


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
