"""Data-parallel training on CPU processes (gloo): same gradients as one process, and torchrun end to end."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pointseg.engine import StepBatches, TrainStep
from pointseg.engine.distributed import Distribution, reduce_line, wrap_step
from pointseg.losses import SoftCrossEntropy
from pointseg.methods import Supervised
from pointseg.models import SegmentationModel

TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Conv(torch.nn.Module):
    """A BatchNorm-free encoder (one map) or decoder, so that shares of a batch normalise alike."""

    def __init__(self, channels: int, decoder: bool = False):
        super().__init__()
        self.conv = torch.nn.Conv2d(3 if not decoder else channels, channels, 3, padding=1)
        self.decoder, self.out_channels = decoder, (channels if decoder else (channels,))

    def forward(self, x):
        return torch.relu(self.conv(x[-1] if self.decoder else x)) if self.decoder else [torch.relu(self.conv(x))]


def tiny_model() -> SegmentationModel:
    torch.manual_seed(0)
    return SegmentationModel(Conv(8), Conv(8, decoder=True), {"seg": 3},
                             lambda n: torch.nn.Conv2d(8, n, 1), size_divisor=1)


def global_batch() -> dict:
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 3, (4, 16, 16), generator=g)
    return {"image": torch.rand(4, 3, 16, 16, generator=g),
            "soft_mask": torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float(),
            "weight": torch.ones(4, 16, 16), "valid": torch.ones(4, 16, 16)}


def grads_of_share(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        step = wrap_step(TrainStep(tiny_model(), Supervised(SoftCrossEntropy())), Distribution(rank, world),
                         torch.device("cpu"))
        share = {k: v[rank::world] for k, v in global_batch().items()}  # the slots StepBatches gives this rank
        loss, _ = step([(None, share, None)])
        loss.backward()
        if rank == 0:
            torch.save({n: p.grad for n, p in step.module.model.named_parameters()}, out)
    finally:
        dist.destroy_process_group()


def in_two_processes(function, out) -> None:
    """``function(rank, 2, port, out)`` in two spawned processes joined in a gloo group; fails past ``TIMEOUT_S``."""
    context = mp.start_processes(function, args=(2, free_port(), str(out)), nprocs=2, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"{function.__name__} in 2 processes did not finish in time")


def test_two_processes_give_the_gradients_of_one_process_on_the_same_global_batch(tmp_path):
    out = tmp_path / "grads.pt"
    in_two_processes(grads_of_share, out)
    model = tiny_model()
    loss, _ = TrainStep(model, Supervised(SoftCrossEntropy()))([(None, global_batch(), None)])
    loss.backward()
    shared = torch.load(out)
    for name, p in model.named_parameters():
        assert torch.allclose(shared[name], p.grad, atol=1e-6), name


def test_each_process_takes_its_slots_of_the_global_batch():
    one = next(iter(StepBatches(10, 4, seed=3)))
    shares = [next(iter(StepBatches(10, 4, seed=3, rank=r, world_size=2))) for r in range(2)]
    assert sorted(shares[0] + shares[1], key=lambda item: item[1]) == one
    with pytest.raises(ValueError, match="must divide among the 3"):
        StepBatches(10, 4, seed=3, world_size=3)


def reduce_lines(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        lines = [{"loss": 1.0, "images_per_s": 3.0, "pseudo_acc": None, "pseudo_ece": 0.2},
                 {"loss": 3.0, "images_per_s": 5.0, "pseudo_acc": None, "pseudo_ece": None}]
        reduced = reduce_line(lines[rank], Distribution(rank, world))
        torch.save(reduced, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_log_lines_are_averaged_over_the_processes_and_one_process_keeps_its_own():
    line = {"loss": 1.0, "images_per_s": 3.0, "pseudo_acc": None}
    assert reduce_line(line, Distribution()) == {"loss": 1.0, "images_per_s": 3.0, "pseudo_acc": None}


def test_two_processes_log_the_mean_loss_the_summed_throughput_and_none_where_none_measured(tmp_path):
    out = tmp_path / "line"
    in_two_processes(reduce_lines, out)
    for rank in range(2):  # every process gets the same line, in the order of its keys
        line = torch.load(f"{out}.{rank}")
        assert list(line) == ["loss", "images_per_s", "pseudo_acc", "pseudo_ece"]
        assert line == {"loss": 2.0, "images_per_s": 8.0, "pseudo_acc": None, "pseudo_ece": pytest.approx(0.2)}


def torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "pointseg", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_torchrun_trains_on_two_cpu_processes_and_resumes(tmp_path, tiny_loveda, tiny_overrides):
    sets = [a for o in [*tiny_overrides, "train.threads=1", "train.log_every=1"] for a in ("--set", o)]
    run = tmp_path / "run"
    done = torchrun("train", "--data-root", str(tiny_loveda), "--out", str(run), *sets)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("trained model saved") == 1  # rank 0 reports
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4]  # rank 0 alone writes
    assert all(torch.isfinite(torch.tensor(x["loss"])) for x in lines)
    assert json.loads((run / "run.json").read_text())["invocations"][0]["processes"] == 2
    assert len(torch.load(run / "checkpoints" / "last.pt", weights_only=False)["rng"]) == 2  # each process's
    resumed = torchrun("train", "--out", str(run), "--resume", "--set", "train.steps=6", "--set", "train.threads=1")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 6
    assert (run / "model.pt").exists()
