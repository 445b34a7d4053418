"""The training loop: explicit, seeded, resumable, with atomic checkpoints and JSON-lines metrics."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterator, Sized
from pathlib import Path
from typing import cast

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm import tqdm

from pointseg.inference import autocast
from pointseg.io import append_jsonl, atomic_path
from pointseg.methods import Method
from pointseg.models import SegmentationModel


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    return torch.device(name)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor: linear warm-up to 1, then cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: CUDA allocations on a GPU, resident set size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def save_checkpoint(path: Path, **state) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _batches(dataset: Dataset, batch_size: int, num_workers: int, generator: torch.Generator
             ) -> Iterator[dict[str, torch.Tensor]]:
    """Endless shuffled batches, epoch after epoch.

    A dataset smaller than a batch (e.g. 2 labeled images) is drawn with replacement to fill every batch: each
    draw is a new random crop, and the labeled signal per step does not shrink with the number of labeled images.
    """
    sized = cast(Sized, dataset)
    if len(sized) < batch_size:
        sampler = RandomSampler(sized, replacement=True, num_samples=batch_size, generator=generator)
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers)
    else:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers, drop_last=True,
                            generator=generator)
    while True:
        yield from loader


def train(model: SegmentationModel, dataset: Dataset, method: Method, run_dir: str | Path, *, steps: int,
          batch_size: int, lr: float, weight_decay: float = 0.0, warmup_steps: int = 0,
          unlabeled: Dataset | None = None, unlabeled_batch_size: int | None = None,
          device: torch.device | str = "cpu", amp: bool = True, channels_last: bool = True,
          seed: int = 0, num_workers: int = 0, log_every: int = 20, checkpoint_every: int = 200,
          resume: bool = False, progress: bool = True) -> SegmentationModel:
    """Train ``model`` with ``method`` for ``steps`` optimiser steps on random batches of ``dataset``.

    Labeled batches hold ``image``, ``soft_mask`` and ``weight``; methods that use unlabeled data also get a
    batch of ``unlabeled`` each step. ``method(model, labeled, unlabeled) -> (loss, logs)``; the method's own
    trainable parameters are optimised with the model's. Writes ``metrics.jsonl`` (every ``log_every`` steps:
    loss and the method's finite logs averaged over those steps, learning rate, throughput, peak memory) and
    ``checkpoints/last.pt`` (every ``checkpoint_every`` steps and at the end) under ``run_dir``. With ``resume``,
    training continues from the last checkpoint: model, method, optimiser, schedule and random state are restored.
    """
    run_dir, device = Path(run_dir), torch.device(device)
    run_dir.mkdir(parents=True, exist_ok=True)
    if method.uses_unlabeled and unlabeled is None:
        raise ValueError(f"method {type(method).__name__} needs unlabeled images")
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device)
    model.to(memory_format=memory_format)
    method.to(device)
    params = [p for p in [*model.parameters(), *method.parameters()] if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup_steps, steps))
    start = 0
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start = state["step"]
    if start == 0:
        torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + start)
    batches = _batches(dataset, batch_size, num_workers, generator)
    unlabeled_batches = None
    if method.uses_unlabeled and unlabeled is not None:
        unlabeled_batches = _batches(unlabeled, unlabeled_batch_size or batch_size, num_workers,
                                     torch.Generator().manual_seed(seed + start + 1))

    model.train()
    method.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="train", disable=not progress)
    seen, t0 = 0, time.perf_counter()
    interval: dict[str, list[float]] = defaultdict(list)  # loss and method logs since the last log line
    for step in bar:
        labeled = _to(next(batches), device, memory_format)
        extra = _to(next(unlabeled_batches), device, memory_format) if unlabeled_batches else None
        with autocast(device, amp):
            loss, logs = method(model, labeled, extra)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower optim.lr or disable amp")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        method.after_step(model)
        seen += labeled["image"].shape[0]
        for key, value in {"loss": loss.item(), **logs}.items():
            interval[key].append(value)
        done = step + 1
        if done % log_every == 0 or done == steps:
            rate = seen / (time.perf_counter() - t0)
            finite = {key: [v for v in values if math.isfinite(v)] for key, values in interval.items()}
            means = {key: sum(v) / len(v) if v else None for key, v in finite.items()}  # NaN: e.g. no masks
            bar.set_postfix(loss=f"{means['loss']:.4f}", img_s=f"{rate:.1f}")
            append_jsonl(run_dir / "metrics.jsonl", {"step": done, **means, "lr": scheduler.get_last_lr()[0],
                                                     "images_per_s": rate,
                                                     "peak_memory_mb": round(peak_memory_mb(device))})
            seen, t0, interval = 0, time.perf_counter(), defaultdict(list)
        if done % checkpoint_every == 0 or done == steps:
            save_checkpoint(ckpt_path, model=model.state_dict(), method=method.state_dict(),
                            optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                            rng=torch.get_rng_state(), step=done)
    return model


def _to(batch: dict, device: torch.device, memory_format: torch.memory_format) -> dict:
    """Move a batch to ``device``; images in ``memory_format``."""
    return {k: (v.to(device, memory_format=memory_format) if k == "image" else v.to(device)) for k, v in batch.items()}
