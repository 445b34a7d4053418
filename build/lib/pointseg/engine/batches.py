"""The batches of a run: step ``s``'s batch, and every crop and flip in it, are a pure function of (seed, s)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sized
from typing import cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class StepBatches(Sampler[list[tuple[int, tuple[int, ...]]]]):
    """The batches of steps ``start``, ``start + 1``, ...: a pure function of (``seed``, step).

    Epoch ``e`` is a permutation of the ``size`` samples drawn from (seed, e); step ``s`` takes its next
    ``batch_size`` indices (an epoch's incomplete last batch is dropped). A dataset smaller than a batch is drawn
    with replacement at every step, so each batch is full and each draw is a new random crop. Every item is
    ``(index, key)``: the dataset seeds the crop and flips of that item with ``key = (seed, step, slot)``.

    With ``world_size`` processes (``engine.distributed``), ``batch_size`` is the global batch and process
    ``rank`` takes its slots ``rank, rank + world_size, ...``: together the processes see exactly the batch, crops
    and flips of one process (what a DistributedSampler does for an epoch, here for every step).
    """

    def __init__(self, size: int, batch_size: int, seed: int, start: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        if size < 1 or batch_size < 1:
            raise ValueError(f"need at least one sample and a batch size >= 1, got {size} and {batch_size}")
        if batch_size % world_size:
            raise ValueError(f"the batch size {batch_size} must divide among the {world_size} training processes")
        self.size, self.batch_size, self.seed, self.start = size, batch_size, seed, start
        self.rank, self.world_size = rank, world_size
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
            yield [(int(i), (self.seed, step, slot)) for slot, i in enumerate(self.indices(step))
                   if slot % self.world_size == self.rank]


def step_batches(dataset: Dataset, batch_size: int, seed: int, start: int = 0, num_workers: int = 0,
                 rank: int = 0, world_size: int = 1) -> Iterator[dict[str, torch.Tensor]]:
    """Endless collated batches of ``dataset`` from step ``start`` on (see ``StepBatches``; this process's share
    of each global batch)."""
    sampler = StepBatches(len(cast(Sized, dataset)), batch_size, seed, start, rank, world_size)
    # the loader's own generator only seeds worker processes; it keeps the global generator untouched
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(seed))
    return iter(loader)
