import json

import numpy as np
import pytest
import torch

from pointseg.data.cache import CachedSource
from pointseg.data.dataset import TrainDataset, Windows
from pointseg.data.sources import LoveDA
from pointseg.engine import (
    OptimOptions,
    Placement,
    StepBatches,
    Task,
    TrainOptions,
    TrainStep,
    load_checkpoint,
    seed_everything,
    step_batches,
    train,
    warmup_cosine,
)
from pointseg.io import TMP_SUFFIX
from pointseg.losses import SoftCrossEntropy
from pointseg.methods import Supervised
from pointseg.models import build_model


class Stop(Exception):
    """Raised from ``on_step`` to stop a run the way a crash would."""


def dataset(tmp_path, tiny_loveda):
    source = LoveDA(tiny_loveda, "Train", ("Rural",))
    return TrainDataset(CachedSource(source, tmp_path / "cache"), 7, Windows(crop=32))


def run(run_dir, ds, steps, seed=0, stop_at=None, resume=False, log_every=1, checkpoint_every=2):
    seed_everything(seed)
    model = build_model("unet-small", 7)

    def on_step(step):
        if step == stop_at:
            raise Stop

    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt") if resume else None
    options = TrainOptions(steps=steps, batch_size=2, log_every=log_every, checkpoint_every=checkpoint_every)
    optim = OptimOptions(lr=1e-3, weight_decay=0.0, warmup_steps=1)
    train(model, [Task(ds)], Supervised(SoftCrossEntropy()), run_dir, options, optim, seed,
          placement=Placement(progress=False), checkpoint=checkpoint, on_step=on_step)
    return model


def losses(run_dir):
    return [(x["step"], x["loss"]) for x in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]


def same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_training_logs_and_checkpoints(tmp_path, tiny_loveda):
    run(tmp_path / "run", dataset(tmp_path, tiny_loveda), steps=3)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3] and all(x["loss"] > 0 for x in lines)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 3
    assert not list((tmp_path / "run" / "checkpoints").glob(".*tmp*")), "no temporary files left behind"


class CountingMethod(Supervised):
    """Supervised, logging how many steps it has taken."""

    def __init__(self) -> None:
        super().__init__(SoftCrossEntropy())
        self.calls = 0

    def forward(self, model, labeled, unlabeled, head=None):
        loss, logs = super().forward(model, labeled, unlabeled, head)
        self.calls += 1
        return loss, {**logs, "calls": self.calls}


def test_logs_are_averaged_over_each_logging_interval(tmp_path, tiny_loveda):
    train(build_model("unet-small", 7), [Task(dataset(tmp_path, tiny_loveda))], CountingMethod(), tmp_path / "run",
          TrainOptions(steps=5, batch_size=2, log_every=2), OptimOptions(lr=1e-3, weight_decay=0.0, warmup_steps=0),
          placement=Placement(progress=False))
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(x["step"], x["calls"]) for x in lines] == [(2, 1.5), (4, 3.5), (5, 5.0)]


@pytest.mark.parametrize("log_every, checkpoint_every, stop_at", [
    (1, 2, 3),  # step 3 was logged after the checkpoint at 2: dropped, then logged again
    (3, 2, 5),  # the checkpoint at 4 holds step 4 of the interval logged at 6
    (2, 5, 7),  # both: step 6 logged past the checkpoint at 5, which holds half an interval
])
def test_a_stopped_run_resumed_equals_the_run_never_stopped(tmp_path, tiny_loveda, log_every, checkpoint_every,
                                                            stop_at):
    ds = dataset(tmp_path, tiny_loveda)
    whole = run(tmp_path / "whole", ds, steps=8, log_every=log_every, checkpoint_every=checkpoint_every)
    with pytest.raises(Stop):
        run(tmp_path / "cut", ds, steps=8, stop_at=stop_at, log_every=log_every, checkpoint_every=checkpoint_every)
    resumed = run(tmp_path / "cut", ds, steps=8, resume=True, log_every=log_every, checkpoint_every=checkpoint_every)
    assert same_weights(resumed, whole), "bit for bit the same weights"
    assert losses(tmp_path / "cut") == losses(tmp_path / "whole"), "each step logged once, with the same loss"


def test_a_checkpoint_holds_every_generator_and_the_partial_log_interval(tmp_path, tiny_loveda):
    run(tmp_path / "run", dataset(tmp_path, tiny_loveda), steps=3, log_every=2, checkpoint_every=3)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert set(state["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert set(state) >= {"model", "method", "optimizer", "scheduler", "step", "interval"}
    assert state["interval"]["images"] == 0 and state["scheduler"]["last_epoch"] == 3


def test_a_stray_temporary_checkpoint_is_removed_on_resume(tmp_path, tiny_loveda):
    ds = dataset(tmp_path, tiny_loveda)
    run(tmp_path / "run", ds, steps=2)
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    stray = ckpt.parent / f".{ckpt.name}.k9x2{TMP_SUFFIX}{ckpt.suffix}"  # as atomic_path names it
    stray.write_bytes(b"half a checkpoint")  # a process killed while saving leaves its temporary
    run(tmp_path / "run", ds, steps=3, resume=True)
    assert not stray.exists() and not list(ckpt.parent.glob(".*"))


def test_an_old_or_broken_checkpoint_is_an_error(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"step": 3, "rng": torch.get_rng_state()}, path)
    with pytest.raises(ValueError, match="older pointseg"):
        load_checkpoint(path)
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(path)


def test_same_seed_same_run_other_seed_other_run(tmp_path, tiny_loveda):
    ds = dataset(tmp_path, tiny_loveda)
    a = run(tmp_path / "a", ds, steps=3)
    torch.rand(100)  # whatever ran before in the process
    b = run(tmp_path / "b", ds, steps=3)
    c = run(tmp_path / "c", ds, steps=3, seed=1)
    assert same_weights(a, b) and losses(tmp_path / "a") == losses(tmp_path / "b")
    assert not same_weights(a, c)


def test_schedule_warms_up_then_decays_to_zero():
    assert warmup_cosine(0, 10, 100) == 0.1 and warmup_cosine(9, 10, 100) == 1.0
    assert warmup_cosine(100, 10, 100) == 0.0 and 0 < warmup_cosine(50, 10, 100) < 1


def test_a_dataset_smaller_than_a_batch_fills_every_batch():
    batches = iter(StepBatches(2, batch_size=8, seed=0))
    drawn = [[i for i, _ in next(batches)] for _ in range(3)]
    assert [len(b) for b in drawn] == [8, 8, 8]
    assert set(sum(drawn, [])) == {0, 1}


def test_a_large_dataset_is_one_permutation_per_epoch():
    sampler = StepBatches(10, batch_size=4, seed=0)  # 2 batches per epoch, the last 2 samples of each dropped
    epochs = [np.concatenate([sampler.indices(2 * e), sampler.indices(2 * e + 1)]) for e in range(3)]
    assert all(len(set(e.tolist())) == 8 for e in epochs)
    assert not np.array_equal(epochs[0], epochs[1])


def test_the_batches_of_a_step_are_a_function_of_seed_and_step_alone():
    from_start = iter(StepBatches(10, batch_size=3, seed=5))
    batches = [next(from_start) for _ in range(7)]
    assert next(iter(StepBatches(10, batch_size=3, seed=5, start=4))) == batches[4]
    assert len({key for batch in batches for _, key in batch}) == 21, "each item has its own random key"
    assert next(iter(StepBatches(10, batch_size=3, seed=6))) != batches[0]


def test_loader_workers_give_the_batches_of_the_main_process(tmp_path, tiny_loveda):
    ds = dataset(tmp_path, tiny_loveda)
    main = step_batches(ds, 2, seed=3, start=1)
    workers = step_batches(ds, 2, seed=3, start=1, num_workers=2)
    for _ in range(2):
        a, b = next(main), next(workers)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_each_step_draws_one_batch_per_task_and_one_backward_trains_every_head(tmp_path, tiny_loveda):
    ds = dataset(tmp_path, tiny_loveda)
    seed_everything(0)
    model = build_model("unet-small", {"a": 7, "b": 7})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    method = CountingMethod()
    tasks = [Task(ds, head="a"), Task(ds, head="b")]
    train(model, tasks, method, tmp_path / "run", TrainOptions(steps=2, batch_size=2, log_every=1),
          OptimOptions(lr=1e-3, weight_decay=0.0, warmup_steps=0),
          placement=Placement(progress=False))
    assert method.calls == 4  # two tasks, two steps
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(x["loss"] == pytest.approx(x["a/loss"] + x["b/loss"]) for x in lines)
    assert [x["a/calls"] for x in lines] == [1, 3] and [x["b/calls"] for x in lines] == [2, 4]
    after = model.state_dict()
    assert not torch.equal(after["heads.a.weight"], before["heads.a.weight"])
    assert not torch.equal(after["heads.b.weight"], before["heads.b.weight"])


def test_the_two_tasks_draw_independent_batches(tmp_path, tiny_loveda):
    from pointseg.engine.loop import _task_batches

    ds = dataset(tmp_path, tiny_loveda)
    batches = next(_task_batches([Task(ds, head="a"), Task(ds, head="b")], False, 2, None, 0, 0, 0))
    (head_a, a, _), (head_b, b, _) = batches
    assert (head_a, head_b) == ("a", "b") and not torch.equal(a["image"], b["image"])
    alone = next(_task_batches([Task(ds)], False, 2, None, 0, 0, 0))[0][1]
    assert torch.equal(alone["image"], a["image"])  # the first task draws as a one-dataset run


class AuxEncoder(torch.nn.Module):
    """An encoder that adds ``0.5 * mean(x)`` as an auxiliary loss at every forward."""

    def __init__(self, encoder):
        super().__init__()
        self.inner, self.out_channels, self.aux_loss = encoder, encoder.out_channels, None

    def forward(self, x):
        loss = 0.5 * x.mean()
        self.aux_loss = loss if self.aux_loss is None else self.aux_loss + loss
        return self.inner(x)


def test_the_step_adds_the_auxiliary_loss_of_the_model(tmp_path, tiny_loveda):
    torch.manual_seed(0)
    model = build_model("unet-small", 7)
    model.encoder = AuxEncoder(model.encoder)
    step = TrainStep(model, Supervised(SoftCrossEntropy()))
    batch = next(iter(torch.utils.data.DataLoader(dataset(tmp_path, tiny_loveda), batch_size=2)))
    total, logs = step([(None, batch, None)])
    image = (batch["image"] - model.mean) / model.std
    assert logs["loss_aux"] == pytest.approx(0.5 * image.mean().item(), rel=1e-5)
    assert total.item() == pytest.approx(logs["loss_sup"] + logs["loss_aux"], rel=1e-5)
    assert model.pop_auxiliary_loss() is None  # consumed by the step
