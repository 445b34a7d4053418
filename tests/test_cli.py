import json

import numpy as np
import pytest
from PIL import Image

from pointseg.cli import main


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
    assert 0 <= metrics["miou"] <= 1 and metrics["pixels"] == 2 * (64 * 64 - 2 * 64)
    assert 0 <= metrics["ece"] <= 1
    for name in ("val.txt", "val_confusion.png", "val_overlays.png", "val_reliability.png"):
        assert (out.parent / name).exists(), name
    pred_dir = tmp_path / "pred"
    assert main(["predict", "--run", str(run), "--input", str(tiny_loveda / "Val" / "Rural" / "images_png"),
                 "--out", str(pred_dir)]) == 0
    mask = np.asarray(Image.open(pred_dir / "4.png"))
    assert mask.shape == (64, 64) and mask.max() < 7
    assert np.asarray(Image.open(pred_dir / "4_color.png")).shape == (64, 64, 3)


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


@pytest.mark.parametrize("method", ["fixmatch", "pseudoseg"])
def test_semi_supervised_from_points_uses_the_unlabeled_pixels(tmp_path, tiny_loveda, tiny_overrides, method):
    sets = [a for o in [*tiny_overrides, f"method.name={method}", "method.grid_stride=8"] for a in ("--set", o)]
    pts = tmp_path / "points.json"
    assert main(["points", "simulate", "--data-root", str(tiny_loveda), "--per-image", "10", "--out", str(pts)]) == 0
    assert main(["train", "--data-root", str(tiny_loveda), "--points", str(pts), "--out", str(tmp_path / "r"),
                 *sets]) == 0
    last = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "loss_unsup" in last and any(k.startswith("pseudo_") for k in last), "pseudo labels monitored on masks"


def test_few_masks_plus_unlabeled_folders(tmp_path, tiny_loveda, tiny_overrides):
    (tmp_path / "labeled.txt").write_text("# two labeled images\nRural/0\nRural/1\n")
    extra = tmp_path / "extra" / "Tile 1" / "images"
    extra.mkdir(parents=True)
    Image.fromarray(np.zeros((40, 50, 3), dtype=np.uint8)).save(extra / "a.jpg")
    (extra.parent / "masks").mkdir()
    Image.fromarray(np.zeros((40, 50), dtype=np.uint8)).save(extra.parent / "masks" / "a.png")  # never read
    sets = [a for o in [*tiny_overrides, "method.name=fixmatch"] for a in ("--set", o)]
    assert main(["train", "--data-root", str(tiny_loveda), "--labeled", str(tmp_path / "labeled.txt"),
                 "--unlabeled", str(tmp_path / "extra"), "--out", str(tmp_path / "r"), *sets]) == 0
    last = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "loss_unsup" in last
    # the unlabeled Train images have masks, the folder none: quality is monitored on the former only
    assert last["pseudo_acc"] is None or 0 <= last["pseudo_acc"] <= 1


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
    sets = [a for o in [*tiny_overrides, "method.name=pseudoseg", "method.grid_stride=8",
                        "method.background_class=0"] for a in ("--set", o)]
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
