"""Pool curation (S5): entropy without background, cosine clusters, quotas, the CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pointseg.cli import main
from pointseg.curate import background_index, describe_images, nearest_cluster, quotas, select


class Constant(torch.nn.Module):
    """A 'model' whose logits are given: encode -> [logits], decode -> logits."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.p = torch.nn.Parameter(torch.zeros(1))

    def encode(self, images):
        return [self.logits]

    def decode(self, features):
        return features[-1]


def test_entropy_is_the_mean_over_pixels_not_predicted_as_background():
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, :, 0, 0] = torch.tensor([5.0, 0.0])  # background, confident
    logits[0, :, 0, 1] = torch.tensor([0.0, 0.0])  # uniform over 2 classes: ln 2, argmax 0 (ties: first) ...
    logits[0, 1, 0, 1] = 1e-3  # ... nudged to class 1 so it counts
    features, entropy = describe_images(Constant(logits), torch.zeros(1, 3, 1, 2), background=0)
    assert entropy.item() == pytest.approx(np.log(2), abs=1e-6)
    _, every = describe_images(Constant(logits), torch.zeros(1, 3, 1, 2), background=None)
    p = torch.tensor([5.0, 0.0]).softmax(0)
    assert every.item() == pytest.approx((np.log(2) - (p * p.log()).sum().item()) / 2, abs=1e-6)
    assert features.shape == (1, 2)
    all_background = torch.zeros(1, 2, 1, 1)
    all_background[0, 0] = 3.0
    assert describe_images(Constant(all_background), torch.zeros(1, 3, 1, 1), 0)[1].isnan().all()


def test_pool_images_join_the_cluster_of_highest_cosine_similarity():
    centres = np.array([[1.0, 0.0], [0.0, 1.0]])
    features = np.array([[10.0, 1.0], [0.1, 0.2], [-1.0, 0.5]])  # magnitude does not matter, direction does
    assert nearest_cluster(features, centres).tolist() == [0, 1, 1]


@pytest.mark.parametrize("labeled, available, budget, expected", [
    ([2, 1, 1], [10, 10, 10], 8, [4, 2, 2]),
    ([1, 1, 1], [10, 10, 10], 10, [4, 3, 3]),  # largest remainders, ties to the first
    ([3, 1], [2, 10], 8, [2, 6]),  # the first cluster's shortfall passes on
    ([1, 1], [2, 3], 10, [2, 3]),  # the pool is smaller than the budget: all of it
    ([0, 2], [5, 1], 4, [3, 1]),  # the only labeled cluster is full: the rest by room
])
def test_quotas_follow_the_labeled_shares_and_add_up_to_the_budget(labeled, available, budget, expected):
    take = quotas(labeled, available, budget)
    assert take.tolist() == expected and take.sum() == min(budget, sum(available))
    assert all(t <= a for t, a in zip(take, available, strict=True))


def test_each_cluster_is_filled_with_its_lowest_entropy_images_first():
    cluster = np.array([0, 0, 0, 1, 1])
    entropy = np.array([0.5, np.nan, 0.1, 0.9, 0.3])
    assert select(cluster, entropy, np.array([2, 1])).tolist() == [0, 2, 4]
    assert select(cluster, entropy, np.array([1, 1]), "highest").tolist() == [0, 3]
    assert select(cluster, entropy, np.array([3, 0])).tolist() == [0, 1, 2]  # unscored (all background) last


def test_background_is_named_or_found():
    names = ("background", "building", "road")
    assert background_index(names, "auto") == 0 and background_index(names, "road") == 2
    assert background_index(("a", "b"), "auto") is None and background_index(names, "none") is None
    with pytest.raises(ValueError, match="not a class"):
        background_index(names, "water")


def test_curate_selects_a_list_that_trains_as_unlabeled_input(tmp_path, tiny_run, tiny_loveda, tiny_overrides,
                                                                capsys):
    pool = tmp_path / "pool"
    for folder, n, side in (("a", 5, 48), ("b", 4, 80)):  # images of several sizes, in sub-folders
        (pool / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.random.default_rng(i).integers(0, 255, (side, side, 3), np.uint8)).save(
                pool / folder / f"{i}.jpg")
    out = tmp_path / "sel" / "selected.txt"
    assert main(["curate", "--run", str(tiny_run), "--data-root", str(tiny_loveda), "--pool", str(pool / "a"),
                 "--pool", str(pool / "b"), "--budget", "4", "--clusters", "2", "--size", "32",
                 "--out", str(out)]) == 0
    listed = out.read_text().splitlines()
    assert len(listed) == 4 and all(p.endswith(".jpg") for p in listed)
    report = json.loads((out.parent / "selected_report.json").read_text())
    assert sum(row["quota"] for row in report["clusters"]) == 4 == report["selected"]
    assert sum(row["pool"] for row in report["clusters"]) == 9
    assert (out.parent / "selected_curation.png").exists() and (out.parent / "selected_contact_sheet.png").exists()
    assert "selected 4 of the pool" in capsys.readouterr().out
    sets = [a for o in [*tiny_overrides, "method.name=fixmatch"] for a in ("--set", o)]
    assert main(["train", "--data-root", str(tiny_loveda), "--unlabeled", str(out), "--out", str(tmp_path / "s4p"),
                 *sets]) == 0
    assert main(["curate", "--run", str(tiny_run), "--data-root", str(tiny_loveda), "--pool", str(pool / "a"),
                 "--budget", "4", "--clusters", "9", "--out", str(out)]) == 2
    assert "--clusters must be between 1 and the number of labeled images (4)" in capsys.readouterr().err


def test_pretrain_then_fine_tune_from_it(tmp_path, tiny_loveda, tiny_overrides, capsys):
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    pre = tmp_path / "s4p"
    assert main(["pretrain", "--data-root", str(tiny_loveda), "--out", str(pre), *sets]) == 2
    assert "give --unlabeled" in capsys.readouterr().err
    unlabeled = tiny_loveda / "Val" / "Rural" / "images_png"
    assert main(["pretrain", "--data-root", str(tiny_loveda), "--unlabeled", str(unlabeled), "--out", str(pre),
                 *sets]) == 0
    line = json.loads((pre / "metrics.jsonl").read_text().splitlines()[-1])
    assert "loss_unsup" in line and "mask_ratio" in line  # fixmatch
    config = (pre / "config.yaml").read_text()
    assert "cutmix_partner: second" in config and "unlabeled_batch_size: 4" in config  # twice batch 2
    tuned = tmp_path / "tuned"
    assert main(["train", "--init", str(pre), "--data-root", str(tiny_loveda), "--out", str(tuned), *sets]) == 0
    inputs = json.loads((tuned / "run.json").read_text())["inputs"]
    assert inputs["init"]["path"] == str((pre / "model.pt").resolve())
