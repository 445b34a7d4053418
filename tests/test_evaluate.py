"""Evaluation against reference mask rasters: of a map file, or of the map a run makes."""

import json

import numpy as np
import pytest
import rasterio
from affine import Affine

from pointseg.cli import main
from pointseg.data.classes import ClassTable
from pointseg.evaluate import evaluate_map
from pointseg.mapwriter import aux_xml as aux_xml_text
from tests.conftest import shared_path

TABLE = ClassTable(("a", "b", "c"), ((255, 0, 0), (0, 255, 0), (0, 0, 255)), values=(1, 2, 3))


GRID = Affine(10, 0, 0, 0, -10, 0)


def write(path, array, nodata=None, transform=GRID):
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[1], height=array.shape[0], count=1,
                       dtype=array.dtype, crs="EPSG:32633", transform=transform, nodata=nodata) as dst:
        dst.write(array[None])
    return path


@pytest.fixture
def scene(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.integers(1, 4, (70, 90)).astype(np.uint8)
    truth[:5] = 0  # unlabeled
    return write(tmp_path / "mask.tif", truth, nodata=0), truth


def test_a_map_equal_to_its_mask_scores_one_and_confident_right_pixels_are_calibrated(tmp_path, scene):
    mask, truth = scene
    perfect = np.where(truth > 0, truth - 1, 255).astype(np.uint8)
    map_path = write(tmp_path / "map.tif", perfect, nodata=255)
    confidence = write(tmp_path / "conf.tif", np.full_like(perfect, 100), nodata=255)
    metrics = evaluate_map(map_path, mask, TABLE, tmp_path / "eval" / "m.json", confidence=confidence, rows=16)
    assert metrics["miou"] == 1.0 and metrics["pixel_accuracy"] == 1.0 and metrics["ece"] == 0.0
    assert metrics["pixels"] == 65 * 90, "unlabeled rows are not scored"
    for name in ("m.txt", "m_confusion.png", "m_reliability.png", "m_overlays.png"):
        assert (tmp_path / "eval" / name).exists(), name


def test_the_confusion_of_a_shifted_map_equals_the_count_by_hand(tmp_path, scene):
    mask, truth = scene
    shifted = np.where(truth > 0, truth % 3, 255).astype(np.uint8)  # every class predicted as the next one
    shifted[10:20] = 255  # a stretch without map data is not scored
    metrics = evaluate_map(write(tmp_path / "map.tif", shifted, nodata=255), mask, TABLE, tmp_path / "m.json")
    cm = np.array(metrics["confusion_matrix"])
    expected = np.zeros((3, 3), dtype=int)
    rows = np.r_[5:10, 20:70]
    for t in (1, 2, 3):
        expected[t - 1, t % 3] = int((truth[rows] == t).sum())
    assert np.array_equal(cm, expected) and metrics["miou"] == 0.0 and metrics["ece"] is None


@pytest.mark.parametrize("case, message", [
    ("grid", "on another grid than"),
    ("values", "are not classes of the table"),
])
def test_maps_that_do_not_fit_are_errors(tmp_path, scene, case, message):
    mask, truth = scene
    if case == "grid":
        bad = write(tmp_path / "map.tif", np.zeros((70, 90), np.uint8), transform=Affine(10, 0, 5, 0, -10, 0))
    else:
        bad = write(tmp_path / "map.tif", np.full((70, 90), 7, np.uint8))
    with pytest.raises(ValueError, match=message):
        evaluate_map(bad, mask, TABLE, tmp_path / "m.json")


def test_evaluate_a_run_or_a_map_against_a_mask_raster_from_the_command_line(tmp_path, capsys):
    enmap = shared_path("data", "geo", "enmap-berlin")
    table = tmp_path / "enmap.csv"
    names = ("impervious", "low vegetation", "tree", "soil", "water")
    table.write_text("value,name,r,g,b\n" + "".join(f"{v},{n},{v * 40},0,0\n" for v, n in enumerate(names, 1)))
    points = tmp_path / "clicks.json"
    landcover = str(enmap / "landcover_map_l2.tif")
    assert main(["points", "import", "--vector", str(enmap / "landcover_point_singlepart_3035.gpkg"), "--raster",
                 landcover, "--class-field", "level_2", "--classes", str(table), "--out", str(points)]) == 0
    run = tmp_path / "run"
    assert main(["train", "--raster", landcover, "--points", str(points), "--out", str(run),
                 *[a for s in ["model.name=unet-small", "data.crop=32", "train.batch_size=2", "train.steps=2",
                               "train.amp=false"] for a in ("--set", s)]]) == 0
    out = tmp_path / "scores" / "enmap.json"
    assert main(["evaluate", "--run", str(run), "--raster", landcover, "--mask", landcover, "--out", str(out),
                 "--tile", "64"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["pixels"] == int((rasterio.open(landcover).read(1) > 0).sum()) and 0 <= metrics["ece"] <= 1
    assert not list(out.parent.glob(".map-*")), "the temporary map is removed"
    assert main(["predict", "--run", str(run), "--input", landcover, "--out", str(tmp_path / "maps"),
                 "--tile", "64"]) == 0
    again = tmp_path / "again.json"
    args = ["evaluate", "--map", str(tmp_path / "maps" / "landcover_map_l2.tif"), "--mask", landcover, "--out",
            str(again)]
    assert main(args) == 2 and "needs its class table" in capsys.readouterr().err
    assert main([*args, "--classes", str(table)]) == 0
    assert json.loads(again.read_text())["confusion_matrix"] == metrics["confusion_matrix"]


def test_a_class_table_in_another_order_than_the_map_is_matched_by_name(tmp_path, scene):
    mask, truth = scene
    order = ("c", "a", "b")  # the map's classes, as a run trained on clicks named c, a, b numbers them
    perfect = np.array([255, 1, 2, 0])[truth]  # mask values 1, 2, 3 (a, b, c) -> map values 1, 2, 0
    map_path = write(tmp_path / "map.tif", perfect.astype(np.uint8), nodata=255)
    (tmp_path / "table.csv").write_text("value,name,r,g,b\n1,a,0,0,0\n2,b,0,0,0\n3,c,0,0,0\n")
    args = ["evaluate", "--map", str(map_path), "--mask", str(mask), "--classes", str(tmp_path / "table.csv")]
    assert main([*args, "--out", str(tmp_path / "unordered.json")]) == 0  # no names beside the map: table order
    assert json.loads((tmp_path / "unordered.json").read_text())["miou"] == 0.0
    (tmp_path / "map.tif.aux.xml").write_text(aux_xml_text(ClassTable(order, ((0, 0, 0),) * 3)))
    assert main([*args, "--out", str(tmp_path / "ordered.json")]) == 0  # names in map.tif.aux.xml: matched
    assert json.loads((tmp_path / "ordered.json").read_text())["miou"] == 1.0
    (tmp_path / "table.csv").write_text("value,name,r,g,b\n1,a,0,0,0\n2,b,0,0,0\n3,d,0,0,0\n")
    assert main([*args, "--out", str(tmp_path / "bad.json")]) == 2


def test_mask_classes_the_map_cannot_predict_are_scored_as_errors(tmp_path, scene):
    mask, truth = scene
    map_path = write(tmp_path / "map.tif", np.where(truth > 0, np.minimum(truth, 2) - 1, 255).astype(np.uint8),
                     nodata=255)  # predicts a, b only; every c (value 3) becomes b
    (tmp_path / "map.tif.aux.xml").write_text(aux_xml_text(ClassTable(("a", "b"), ((0, 0, 0),) * 2)))
    (tmp_path / "table.csv").write_text("value,name,r,g,b\n1,a,0,0,0\n2,b,0,0,0\n3,c,0,0,0\n")
    out = tmp_path / "m.json"
    assert main(["evaluate", "--map", str(map_path), "--mask", str(mask), "--classes", str(tmp_path / "table.csv"),
                 "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    a, b, c = ((truth == v).sum() for v in (1, 2, 3))
    assert metrics["per_class_iou"] == {"a": 1.0, "b": pytest.approx(b / (b + c)), "c": 0.0}
