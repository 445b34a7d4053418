"""Data-parallel training with torch.distributed, started by torchrun (one process per device or CPU share).

``torchrun --nproc_per_node N -m pointseg train ...`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; each process
joins the group (gloo on the CPU, NCCL on GPUs), the whole training step (``TrainStep``: model and method) is
wrapped in ``DistributedDataParallel``, and each process takes its share of every global batch. BatchNorm layers
become ``SyncBatchNorm`` on GPUs; on the CPU (gloo has no SyncBN) each process normalises its own share. Rank 0
alone writes the run directory: metrics (averaged over the processes), checkpoints and the model.
"""

from __future__ import annotations

import datetime
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Distribution:
    """This process's place among ``world_size`` training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


SINGLE = Distribution()  # one process


def start_distributed(device: torch.device, timeout_s: float = 1800) -> tuple[Distribution, torch.device]:
    """Join the process group torchrun describes in the environment; returns this process's place and device
    (``cuda:LOCAL_RANK`` on GPUs). Without torchrun (no ``WORLD_SIZE`` or 1), nothing is started."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distribution(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s))
    return Distribution(rank, world_size, local_rank), device


def stop_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap_step(step: nn.Module, distribution: Distribution, device: torch.device) -> nn.Module:
    """``step`` in ``DistributedDataParallel`` (with SyncBatchNorm on GPUs) when several processes train."""
    if not distribution.active:
        return step
    if device.type == "cuda":
        step = nn.SyncBatchNorm.convert_sync_batchnorm(step)
    # some parameters may rest in a step (a learned gate's unchosen experts, a method's unused branch)
    return DistributedDataParallel(step, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)


def barrier(distribution: Distribution) -> None:
    if distribution.active:
        dist.barrier()


def broadcast(value: Any, distribution: Distribution) -> Any:
    """Rank 0's ``value`` on every process."""
    if not distribution.active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any, distribution: Distribution) -> list[Any]:
    """Every process's ``value``, in rank order (one process: ``[value]``)."""
    if not distribution.active:
        return [value]
    out: list[Any] = [None] * distribution.world_size
    dist.all_gather_object(out, value)
    return out


def reduce_line(line: dict[str, Any], distribution: Distribution, summed: tuple[str, ...] = ("images_per_s",)
                ) -> dict[str, Any]:
    """A log line's numbers averaged over the processes (``summed`` keys added up; None where all are None)."""
    if not distribution.active:
        return line
    keys = sorted(line)
    values = torch.tensor([math.nan if line[k] is None else float(line[k]) for k in keys], dtype=torch.float64)
    present = (~values.isnan()).double()
    totals = torch.stack([values.nan_to_num(0.0), present])
    dist.all_reduce(totals)
    out = {}
    for i, key in enumerate(keys):
        count = totals[1, i].item()
        out[key] = None if count == 0 else totals[0, i].item() / (1 if key in summed else count)
    return {key: out[key] for key in line}
