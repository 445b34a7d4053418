import json

import torch

from pointseg.data.cache import SampleCache
from pointseg.data.dataset import TrainDataset
from pointseg.data.sources import LoveDA
from pointseg.losses import SoftCrossEntropy
from pointseg.methods import Supervised
from pointseg.models import build_model
from pointseg.train import _batches, train, warmup_cosine


def run(tmp_path, tiny_loveda, steps, resume=False, seed=0):
    source = LoveDA(tiny_loveda, "Train", ("Rural",))
    ds = TrainDataset(SampleCache(source, 1.0, tmp_path / "cache"), crop=32, num_classes=7)
    torch.manual_seed(seed)
    model = build_model("unet-small", 7)
    train(model, ds, Supervised(SoftCrossEntropy()), tmp_path / "run", steps=steps, batch_size=2, lr=1e-3,
          warmup_steps=1, amp=False, log_every=1, checkpoint_every=2, resume=resume, progress=False, seed=seed)
    return model


def test_training_logs_and_checkpoints(tmp_path, tiny_loveda):
    run(tmp_path, tiny_loveda, steps=3)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3] and all(x["loss"] > 0 for x in lines)
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)["step"] == 3
    assert not list((tmp_path / "run" / "checkpoints").glob(".*tmp*")), "no temporary files left behind"


class CountingMethod(Supervised):
    """Supervised, logging how many steps it has taken."""

    def __init__(self) -> None:
        super().__init__(SoftCrossEntropy())
        self.calls = 0

    def forward(self, model, labeled, unlabeled):
        loss, logs = super().forward(model, labeled, unlabeled)
        self.calls += 1
        return loss, {**logs, "calls": self.calls}


def test_logs_are_averaged_over_each_logging_interval(tmp_path, tiny_loveda):
    ds = TrainDataset(SampleCache(LoveDA(tiny_loveda, "Train", ("Rural",)), 1.0, tmp_path / "cache"), crop=32,
                      num_classes=7)
    train(build_model("unet-small", 7), ds, CountingMethod(), tmp_path / "run", steps=5, batch_size=2, lr=1e-3,
          amp=False, log_every=2, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(x["step"], x["calls"]) for x in lines] == [(2, 1.5), (4, 3.5), (5, 5.0)]


def test_resume_continues_from_the_last_checkpoint(tmp_path, tiny_loveda):
    run(tmp_path, tiny_loveda, steps=2)
    first = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    model = run(tmp_path, tiny_loveda, steps=4, resume=True)
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4], "resumed run logs steps 3 and 4 only"
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert last["step"] == 4 and last["scheduler"]["last_epoch"] == 4
    changed = any(not torch.equal(first["model"][k], v) for k, v in model.state_dict().items())
    assert changed


def test_same_seed_same_model(tmp_path, tiny_loveda):
    a = run(tmp_path / "a", tiny_loveda, steps=2)
    b = run(tmp_path / "b", tiny_loveda, steps=2)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_schedule_warms_up_then_decays_to_zero():
    assert warmup_cosine(0, 10, 100) == 0.1 and warmup_cosine(9, 10, 100) == 1.0
    assert warmup_cosine(100, 10, 100) == 0.0 and 0 < warmup_cosine(50, 10, 100) < 1


def test_a_dataset_smaller_than_a_batch_fills_every_batch():
    dataset = [{"i": torch.tensor(i)} for i in range(2)]
    batches = _batches(dataset, batch_size=8, num_workers=0, generator=torch.Generator().manual_seed(0))
    drawn = [next(batches)["i"] for _ in range(3)]
    assert [len(b) for b in drawn] == [8, 8, 8]
    assert set(torch.cat(drawn).tolist()) == {0, 1}


def test_a_large_dataset_is_one_permutation_per_epoch():
    dataset = [{"i": torch.tensor(i)} for i in range(10)]
    batches = _batches(dataset, batch_size=5, num_workers=0, generator=torch.Generator().manual_seed(0))
    epoch = torch.cat([next(batches)["i"] for _ in range(2)])
    assert sorted(epoch.tolist()) == list(range(10))
