"""Several datasets in one run: the config, one head per dataset, evaluation per dataset."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pointseg.cli import main
from pointseg.config import load_config


def write_folder_dataset(root, split, n, size=64, seed=0):
    """A tiny three-class folder dataset: value-coded masks (0..2) in halves, images coloured by class."""
    rng = np.random.default_rng(seed)
    (root / split / "images").mkdir(parents=True)
    (root / split / "masks").mkdir(parents=True)
    for i in range(n):
        mask = np.kron(rng.integers(0, 3, size=(2, 2)), np.ones((size // 2, size // 2))).astype(np.uint8)
        image = np.stack([mask * 100, 200 - mask * 60, mask * 30], -1).astype(np.uint8)
        Image.fromarray(image).save(root / split / "images" / f"t{i}.png")
        Image.fromarray(mask).save(root / split / "masks" / f"t{i}.png")
    return root


@pytest.fixture
def second_dataset(tmp_path):
    root = tmp_path / "second"
    write_folder_dataset(root, "Train", 3)
    write_folder_dataset(root, "Val", 2, seed=1)
    table = tmp_path / "second.csv"
    table.write_text("value,name,r,g,b\n0,sand,200,200,0\n1,sea,0,0,200\n2,town,200,0,0\n")
    return root, table


def test_datasets_are_checked_as_data_sections():
    cfg = load_config(overrides=["datasets.dubai.format=folder", "datasets.dubai.crop=64"])
    assert cfg["datasets"] == {"dubai": {"format": "folder", "crop": 64}}
    with pytest.raises(KeyError, match="datasets.dubai.formt"):
        load_config(overrides=["datasets.dubai.formt=folder"])
    with pytest.raises(ValueError, match="expects int"):
        load_config(overrides=["datasets.dubai.crop=big"])
    with pytest.raises(ValueError, match="must be distinct"):
        load_config(overrides=["data.name=dubai", "datasets.dubai.format=folder"])


def test_one_run_trains_a_head_per_dataset_and_evaluates_each(tmp_path, tiny_loveda, tiny_overrides, second_dataset,
                                                                capsys):
    root, table = second_dataset
    sets = [a for o in [*tiny_overrides, "data.name=loveda", "datasets.second.format=folder",
                        f"datasets.second.classes={table}", "datasets.second.color_coded=false"]
            for a in ("--set", o)]
    run = tmp_path / "run"
    assert main(["train", "--data-root", str(tiny_loveda), "--data-root", f"second={root}", "--out", str(run),
                 *sets]) == 0
    assert "added per dataset (head and experts): loveda 0K, second 0K" in capsys.readouterr().out  # 1x1 heads
    state = torch.load(run / "model.pt", weights_only=False)
    assert list(state["heads"]) == ["loveda", "second"]
    assert state["heads"]["second"]["names"] == ["sand", "sea", "town"]
    line = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["loss"] == pytest.approx(line["loveda/loss"] + line["second/loss"])

    out = tmp_path / "eval" / "second.json"
    assert main(["evaluate", "--run", str(run), "--data-root", str(root), "--split", "Val", "--dataset", "second",
                 "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert set(metrics["per_class_iou"]) == {"sand", "sea", "town"}
    assert main(["evaluate", "--run", str(run), "--data-root", str(root), "--split", "Val",
                 "--out", str(out)]) == 2
    assert "name the one to use" in capsys.readouterr().err
    pred = tmp_path / "pred"
    assert main(["predict", "--run", str(run), "--dataset", "loveda", "--input",
                 str(tiny_loveda / "Val" / "Rural" / "images_png"), "--out", str(pred)]) == 0
    assert np.asarray(Image.open(pred / "4.png")).max() < 7
    clicks = tmp_path / "next.json"
    assert main(["suggest", "--run", str(run), "--dataset", "second", "--data-root", str(root), "--split", "Val",
                 "--per-image", "2", "--out", str(clicks)]) == 0
    assert json.loads(clicks.read_text())["classes"] == ["sand", "sea", "town"]
    assert main(["export", "--run", str(run), "--dataset", "second", "--tile", "32", "--out",
                 str(tmp_path / "second.onnx")]) == 0

    assert main(["train", "--out", str(run), "--resume", "--set", "train.steps=6"]) == 0  # keeps both roots
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 6


def test_a_dataset_without_its_root_is_an_error(tmp_path, tiny_loveda, tiny_overrides, capsys):
    sets = [a for o in [*tiny_overrides, "datasets.second.format=folder"] for a in ("--set", o)]
    assert main(["train", "--data-root", str(tiny_loveda), "--out", str(tmp_path / "r"), *sets]) == 2
    assert "--data-root second=PATH" in capsys.readouterr().err
    assert main(["train", "--data-root", str(tiny_loveda), "--data-root", f"third={tmp_path}",
                 "--out", str(tmp_path / "r"), *sets]) == 2
    assert "no dataset 'third'" in capsys.readouterr().err


def test_a_moe_vit_trains_on_two_datasets_from_the_cli(tmp_path, tiny_loveda, tiny_overrides, second_dataset, capsys):
    root, table = second_dataset
    sets = [a for o in [*tiny_overrides, "model.name=vit-tiny", "model.moe_part=0.25", "data.name=loveda",
                        "datasets.second.format=folder", f"datasets.second.classes={table}",
                        "datasets.second.color_coded=false"] for a in ("--set", o)]
    run = tmp_path / "run"
    assert main(["train", "--data-root", str(tiny_loveda), "--data-root", f"second={root}", "--out", str(run),
                 *sets]) == 0
    out = capsys.readouterr().out
    assert "M parameters" in out and "second 443K" in out  # 12 experts of 48 x 768 + a 3-class head
    info = json.loads((run / "run.json").read_text())["invocations"][0]["parameters"]
    assert info["per_dataset"]["second"] == 12 * (768 * 48 + 48) + 64 * 3 + 3


def dataset_sets(table):
    return ["datasets.second.format=folder", f"datasets.second.classes={table}", "datasets.second.color_coded=false"]


def test_a_dataset_added_to_a_trained_model_trains_its_head_and_experts_alone(tmp_path, tiny_loveda, tiny_overrides,
                                                                               second_dataset, capsys):
    root, table = second_dataset
    vit = [*tiny_overrides, "model.name=vit-tiny", "model.moe_part=0.25", "data.name=loveda"]
    first = tmp_path / "first"
    assert main(["train", "--data-root", str(tiny_loveda), "--out", str(first),
                 *[a for o in vit for a in ("--set", o)]]) == 0
    added = tmp_path / "added"  # the new dataset is the run's first (data), its root the only one
    sets = [*vit, "data.name=second", "data.format=folder", f"data.classes={table}", "data.color_coded=false",
            "train.trainable=added"]
    assert main(["train", "--init", str(first), "--data-root", str(root), "--out", str(added),
                 *[a for o in sets for a in ("--set", o)]]) == 0
    before = torch.load(first / "model.pt", weights_only=False)
    after = torch.load(added / "model.pt", weights_only=False)
    assert list(after["heads"]) == ["loveda", "second"]
    new = [k for k in after["model"] if ".experts.second." in k or k.startswith("heads.second.")]
    assert len(new) == 12 * 2 + 2  # an expert (weight, bias) in each of 12 blocks, and the head
    assert all(torch.equal(after["model"][k], v) for k, v in before["model"].items()), "the rest is frozen"
    start = after["model"]["encoder.vit.blocks.0.mlp.experts.loveda.weight"]
    assert not torch.equal(after["model"]["encoder.vit.blocks.0.mlp.experts.second.weight"], start)
    out = tmp_path / "eval.json"
    for name, data in (("loveda", tiny_loveda), ("second", root)):
        assert main(["evaluate", "--run", str(added), "--dataset", name, "--data-root", str(data), "--split", "Val",
                     "--out", str(out)]) == 0


def test_fine_tuning_from_a_plain_vit_starts_the_experts_from_its_ffn(tmp_path, tiny_loveda, tiny_overrides,
                                                                        second_dataset):
    root, table = second_dataset
    plain = [*tiny_overrides, "model.name=vit-tiny", "data.name=loveda"]
    first = tmp_path / "first"
    assert main(["train", "--data-root", str(tiny_loveda), "--out", str(first),
                 *[a for o in plain for a in ("--set", o)]]) == 0
    sets = [*plain, "model.moe_part=0.25", *dataset_sets(table), "train.steps=1", "optim.lr=1e-12"]
    tuned = tmp_path / "tuned"
    assert main(["train", "--init", str(first), "--data-root", str(tiny_loveda), "--data-root", f"second={root}",
                 "--out", str(tuned), *[a for o in sets for a in ("--set", o)]]) == 0
    before = torch.load(first / "model.pt", weights_only=False)["model"]
    after = torch.load(tuned / "model.pt", weights_only=False)["model"]
    fc2 = before["encoder.vit.blocks.3.mlp.fc2.weight"]
    for dataset in ("loveda", "second"):
        assert torch.allclose(after[f"encoder.vit.blocks.3.mlp.experts.{dataset}.weight"], fc2[-48:], atol=1e-6)
    assert torch.allclose(after["encoder.vit.blocks.3.mlp.shared.weight"], fc2[:-48], atol=1e-6)


def test_init_from_a_model_of_other_classes_or_another_architecture_is_an_error(tmp_path, tiny_run, tiny_loveda,
                                                                               tiny_overrides, capsys):
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    code = main(["train", "--init", str(tiny_run), "--data-root", str(tiny_loveda), "--out", str(tmp_path / "r"),
                 *sets, "--set", "model.name=vit-tiny"])
    assert code == 2 and "do not fit model.name=vit-tiny" in capsys.readouterr().err
    code = main(["train", "--init", str(tiny_run), "--data-root", str(tiny_loveda), "--out", str(tmp_path / "r"),
                 *sets, "--set", "train.trainable=added"])
    assert code == 2 and "lacks, but it has all of ['seg']" in capsys.readouterr().err


def test_a_shared_decoder_becomes_every_dataset_s_own_decoder_when_fine_tuned_with_one_each(
        tmp_path, tiny_run, tiny_loveda, tiny_overrides, second_dataset):
    root, table = second_dataset
    sets = [*tiny_overrides, "data.name=loveda", *dataset_sets(table), "model.decoder_per_dataset=true",
            "train.steps=1", "optim.lr=1e-12"]
    tuned = tmp_path / "tuned"
    assert main(["train", "--init", str(tiny_run), "--data-root", str(tiny_loveda), "--data-root", f"second={root}",
                 "--out", str(tuned), *[a for o in sets for a in ("--set", o)]]) == 0
    before = torch.load(tiny_run / "model.pt", weights_only=False)["model"]
    after = torch.load(tuned / "model.pt", weights_only=False)["model"]
    weights = [k for k in before if k.startswith("decoder.") and k.endswith("weight")]
    assert weights and not any(k in after for k in weights)
    for dataset in ("loveda", "second"):
        for key in weights:
            own = "decoder." + dataset + key[len("decoder"):]
            assert torch.allclose(after[own], before[key], atol=1e-6), own
    out = tmp_path / "second.json"
    assert main(["evaluate", "--run", str(tuned), "--dataset", "second", "--data-root", str(root), "--split", "Val",
                 "--out", str(out)]) == 0
