"""The training loop: explicit, seeded, exactly resumable, with atomic checkpoints and JSON-lines metrics.

A run is a function of its model, data and seed. Each random stream derives from the run's seed
(``stream_seed``): the model's initial weights (drawn by the caller, see ``workflows``), the method's draws
(dropout, strong augmentation, CutMix boxes) from the global torch generator seeded at step 0, and the data from
``StepBatches``, where the batch of step ``s`` and every crop and flip in it are a pure function of (seed, step).
A checkpoint therefore holds the step, the model, method, optimiser and schedule, the generators' states and the
partial logging interval; resuming from it gives the same weights and logged losses, bit for bit on the CPU, as
the run that was never stopped.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sized
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from pointseg.inference import autocast
from pointseg.io import append_jsonl, atomic_path, remove_temporaries, truncate_jsonl
from pointseg.methods import Method
from pointseg.models import SegmentationModel

STREAMS = ("model", "method", "labeled", "unlabeled", "bands")  # the independent random streams of a run
CHECKPOINT_FORMAT = 2


def stream_seed(seed: int, stream: str) -> int:
    """The seed of one random stream of a run (``STREAMS``), independent of the others (NumPy SeedSequence)."""
    return int(np.random.SeedSequence([seed, STREAMS.index(stream)]).generate_state(1, np.uint64)[0] >> 1)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), NumPy's and Python's global generators, e.g. before a model is built.

    pointseg itself draws only from torch's and from explicit NumPy generators; the other two are seeded (and
    checkpointed) for code of other libraries that may draw from them.
    """
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    random.seed(seed)


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    return torch.device(name)


def configure_determinism(device: torch.device, deterministic: bool) -> None:
    """On CUDA, deterministic cuDNN and cuBLAS kernels (``deterministic``) or cuDNN's autotuner off at least.

    CPU kernels are deterministic for a given thread count, so nothing is changed there.
    """
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = False
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)  # ops without such a kernel warn, naming themselves


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


class StepBatches(Sampler[list[tuple[int, tuple[int, ...]]]]):
    """The batches of steps ``start``, ``start + 1``, ...: a pure function of (``seed``, step).

    Epoch ``e`` is a permutation of the ``size`` samples drawn from (seed, e); step ``s`` takes its next
    ``batch_size`` indices (an epoch's incomplete last batch is dropped). A dataset smaller than a batch is drawn
    with replacement at every step, so each batch is full and each draw is a new random crop. Every item is
    ``(index, key)``: the dataset seeds the crop and flips of that item with ``key = (seed, step, slot)``.
    """

    def __init__(self, size: int, batch_size: int, seed: int, start: int = 0) -> None:
        if size < 1 or batch_size < 1:
            raise ValueError(f"need at least one sample and a batch size >= 1, got {size} and {batch_size}")
        self.size, self.batch_size, self.seed, self.start = size, batch_size, seed, start
        self.per_epoch = size // batch_size  # 0: smaller than a batch
        self._epoch: tuple[int, np.ndarray] | None = None

    def indices(self, step: int) -> np.ndarray:
        """Sample indices of the batch of ``step``."""
        if self.per_epoch == 0:
            return np.random.default_rng([self.seed, step]).integers(self.size, size=self.batch_size)
        epoch, position = divmod(step, self.per_epoch)
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.size))
        return self._epoch[1][position * self.batch_size:(position + 1) * self.batch_size]

    def __iter__(self) -> Iterator[list[tuple[int, tuple[int, ...]]]]:
        for step in itertools.count(self.start):
            yield [(int(i), (self.seed, step, slot)) for slot, i in enumerate(self.indices(step))]


def step_batches(dataset: Dataset, batch_size: int, seed: int, start: int = 0, num_workers: int = 0
                 ) -> Iterator[dict[str, torch.Tensor]]:
    """Endless collated batches of ``dataset`` from step ``start`` on (see ``StepBatches``)."""
    sampler = StepBatches(len(cast(Sized, dataset)), batch_size, seed, start)
    # the loader's own generator only seeds worker processes; it keeps the global generator untouched
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(seed))
    return iter(loader)


def rng_state() -> dict[str, Any]:
    """The state of every global generator: torch (CPU, and CUDA when started), NumPy and Python."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
            "numpy": np.random.get_state(), "python": random.getstate()}  # noqa: NPY002


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])


class IntervalLog:
    """The loss and method logs since the last log line; a line holds their means (NaN and inf left out)."""

    def __init__(self, state: dict | None = None) -> None:
        self.values: dict[str, list[float]] = defaultdict(list, state["values"] if state else {})
        self.images = state["images"] if state else 0
        self.t0 = time.perf_counter()

    def add(self, logs: dict[str, float], images: int) -> None:
        for key, value in logs.items():
            self.values[key].append(value)
        self.images += images

    def line(self) -> dict[str, Any]:
        """The means of this interval plus throughput; starts the next interval."""
        finite = {key: [v for v in values if math.isfinite(v)] for key, values in self.values.items()}
        means = {key: sum(v) / len(v) if v else None for key, v in finite.items()}  # None: e.g. no masks
        means["images_per_s"] = self.images / (time.perf_counter() - self.t0)
        self.values, self.images, self.t0 = defaultdict(list), 0, time.perf_counter()
        return means

    def state_dict(self) -> dict:
        return {"values": dict(self.values), "images": self.images}


def save_checkpoint(path: Path, **state: Any) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """A checkpoint written by ``train``, its tensors on ``device``; an error for unreadable or older files."""
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise ValueError(f"{path}: cannot read checkpoint ({e})") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint written by an older pointseg, which cannot be resumed exactly; "
                         "start a new run in another directory")
    return state


def train(model: SegmentationModel, dataset: Dataset, method: Method, run_dir: str | Path, *, steps: int,
          batch_size: int, lr: float, weight_decay: float = 0.0, warmup_steps: int = 0,
          unlabeled: Dataset | None = None, unlabeled_batch_size: int | None = None,
          device: torch.device | str = "cpu", amp: bool = True, channels_last: bool = True,
          seed: int = 0, num_workers: int = 0, log_every: int = 20, checkpoint_every: int = 200,
          checkpoint: dict | None = None, progress: bool = True, deterministic: bool = False,
          on_step: Callable[[int], None] | None = None) -> SegmentationModel:
    """Train ``model`` with ``method`` for ``steps`` optimiser steps on random batches of ``dataset``.

    Labeled batches hold ``image``, ``soft_mask`` and ``weight``; methods that use unlabeled data also get a
    batch of ``unlabeled`` each step. ``method(model, labeled, unlabeled) -> (loss, logs)``; the method's own
    trainable parameters are optimised with the model's. Writes ``metrics.jsonl`` (every ``log_every`` steps:
    loss and the method's finite logs averaged over those steps, learning rate, throughput, peak memory) and
    ``checkpoints/last.pt`` (every ``checkpoint_every`` steps and at the end) under ``run_dir``.

    The model's initial weights are the caller's (seed before building it); everything random from here on
    derives from ``seed``. Given a ``checkpoint`` (``load_checkpoint``), training continues from it: lines of
    ``metrics.jsonl`` after its step are dropped and logged again, and the result equals the run that was never
    stopped. ``on_step(step)`` is called after every step (tests stop a run through it).
    """
    run_dir, device = Path(run_dir), torch.device(device)
    if method.uses_unlabeled and unlabeled is None:
        raise ValueError(f"method {type(method).__name__} needs unlabeled images")
    ckpt_path, metrics_path = run_dir / "checkpoints" / "last.pt", run_dir / "metrics.jsonl"
    configure_determinism(device, deterministic)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device)
    model.to(memory_format=memory_format)
    method.to(device)
    params = [p for p in [*model.parameters(), *method.parameters()] if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup_steps, steps))
    start, interval = 0, IntervalLog()
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        method.load_state_dict(checkpoint["method"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        set_rng_state(checkpoint["rng"])
        start, interval = checkpoint["step"], IntervalLog(checkpoint["interval"])
    else:
        torch.manual_seed(stream_seed(seed, "method"))
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_temporaries(ckpt_path)  # left by a process killed while it saved
    truncate_jsonl(metrics_path, "step", start)
    batches = step_batches(dataset, batch_size, stream_seed(seed, "labeled"), start, num_workers)
    unlabeled_batches = None
    if method.uses_unlabeled and unlabeled is not None:
        unlabeled_batches = step_batches(unlabeled, unlabeled_batch_size or batch_size,
                                         stream_seed(seed, "unlabeled"), start, num_workers)

    model.train()
    method.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="train", disable=not progress)
    for step in bar:
        labeled = _to(next(batches), device, memory_format)
        extra = _to(next(unlabeled_batches), device, memory_format) if unlabeled_batches is not None else None
        with autocast(device, amp):
            loss, logs = method(model, labeled, extra)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower optim.lr or disable amp")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        method.after_step(model)
        interval.add({"loss": loss.item(), **logs}, labeled["image"].shape[0])
        done = step + 1
        if done % log_every == 0 or done == steps:
            line = interval.line()
            bar.set_postfix(loss=f"{line['loss']:.4f}", img_s=f"{line['images_per_s']:.1f}")
            append_jsonl(metrics_path, {"step": done, **line, "lr": scheduler.get_last_lr()[0],
                                        "peak_memory_mb": round(peak_memory_mb(device))})
        if done % checkpoint_every == 0 or done == steps:
            save_checkpoint(ckpt_path, format=CHECKPOINT_FORMAT, step=done, model=model.state_dict(),
                            method=method.state_dict(), optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(), rng=rng_state(), interval=interval.state_dict())
        if on_step is not None:
            on_step(done)
    return model


def _to(batch: dict, device: torch.device, memory_format: torch.memory_format) -> dict:
    """Move a batch to ``device``; images in ``memory_format``."""
    return {k: (v.to(device, memory_format=memory_format) if k == "image" else v.to(device)) for k, v in batch.items()}
