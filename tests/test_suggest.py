"""Where to click next: the scores, the greedy spread-out pick, and the click loop through the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pyogrio
import pytest
import rasterio
import torch

from pointseg.cli import main
from pointseg.data.points import UNCLASSIFIED, load_points
from pointseg.inference import certainty
from pointseg.suggest import class_rarity, pick, suggest_clicks
from tests.conftest import shared_path
from tests.test_maps import write_raster


def test_certainty_by_hand():
    probs = torch.tensor([[0.7, 0.25], [0.2, 0.25], [0.1, 0.25], [0.0, 0.25]])  # (C=4, 2 pixels)
    assert certainty(probs, "max").tolist() == pytest.approx([0.7, 0.25])
    assert certainty(probs, "margin").tolist() == pytest.approx([0.5, 0.0])
    h = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    assert certainty(probs, "entropy").tolist() == pytest.approx([1 - h / math.log(4), 0.0], abs=1e-6)
    with pytest.raises(KeyError, match="valid"):
        certainty(probs, "variance")


def test_class_rarity_favours_classes_with_few_clicks():
    assert class_rarity(np.array([0, 3, 1]), 1.0).tolist() == pytest.approx([1.0, 0.25, 0.5])
    assert class_rarity(np.array([0, 3, 1]), 0.0).tolist() == [1.0, 1.0, 1.0]


def test_pick_takes_the_best_pixels_spread_out_and_away_from_made_clicks():
    score = np.zeros((10, 10))
    score[2, 2], score[2, 3], score[8, 8], score[5, 0] = 0.9, 0.8, 0.7, 0.6
    score[0, 9] = np.nan  # no data: never picked
    assert pick(score, 3, 1.0) == [(2, 2), (2, 3), (8, 8)]  # distance 1: neighbours allowed
    assert pick(score, 3, 2.0) == [(2, 2), (8, 8), (5, 0)]  # (2, 3) is too close to (2, 2)
    assert pick(score, 2, 2.0, taken=np.array([[8, 9]])) == [(2, 2), (5, 0)]
    assert (0, 9) not in pick(score, 100, 1.0)


def test_suggestions_weigh_uncertainty_by_class_rarity_and_refuse_more_clicks_than_pixels():
    uncertainty = np.array([[0.9, 0.5]])
    predicted = np.array([[0, 1]])
    rarity = class_rarity(np.array([9, 0]))  # class 0 has 9 clicks: 0.1
    found = suggest_clicks(uncertainty, predicted, None, np.zeros((0, 3), int), rarity, 1, 1.0, (1, 2))
    assert (found[0].row, found[0].col, found[0].predicted) == (0, 1, 1)
    valid = np.array([[True, False]])
    with pytest.raises(ValueError, match="asks for 2 clicks but the image has only 1 pixels with data"):
        suggest_clicks(uncertainty, predicted, valid, np.zeros((0, 3), int), rarity, 2, 1.0, (1, 2))


def test_suggestions_go_to_the_unsure_lower_half_not_to_saturated_boundary_lines_in_scan_order():
    """The top half has thin boundary lines where the model is exactly undecided (uncertainty 1: a saturated pixel
    score); the lower half has broad regions where it is nearly as unsure throughout. Ranked pixel by pixel, every
    pick went to the lines, in row order; ranked by the region's uncertainty they go to the lower half."""
    uncertainty = np.zeros((200, 200))
    uncertainty[5:100:10, :] = 1.0  # boundary lines, one pixel thick
    uncertainty[120:190, 10:90] = uncertainty[120:190, 110:190] = 0.9  # unsure regions
    found = suggest_clicks(uncertainty, np.zeros((200, 200), int), None, np.zeros((0, 3), int), np.ones(1), 6, 20.0,
                           (200, 200))
    assert len(found) == 6 and all(s.row >= 100 for s in found)
    assert len({s.col < 100 for s in found}) == 2  # both regions
    assert all(0 < s.score < 1 for s in found)  # not saturated
    flat = suggest_clicks(np.ones((60, 60)), np.zeros((60, 60), int), None, np.zeros((0, 3), int), np.ones(1), 3, 1.0,
                          (60, 60))
    assert max(s.row for s in flat) > 20  # equal scores: not the first rows in scan order


def test_region_uncertainty_counts_no_data_and_the_outside_as_sure():
    from pointseg.suggest import region_uncertainty

    u = np.array([[1.0, 0.0, 0.5], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0]])
    valid = np.ones((3, 3), bool)
    valid[0, 2] = False
    assert region_uncertainty(u, valid, 3)[1, 1] == pytest.approx(2.5 / 9)  # the 0.5 at (0, 2) has no data
    assert region_uncertainty(u, valid, 3)[0, 0] == pytest.approx(2.0 / 9)  # 5 of the 9 pixels are off the image
    assert region_uncertainty(u, None, 1).tolist() == u.tolist()


def test_suggest_on_a_raster_proposes_clicks_where_the_map_is_unsure(tmp_path):
    """A raster whose top half is red on the left and green on the right, and whose lower half is their mixture: a
    fast model fitted on red and green clicks is unsure over the whole lower half and at the top's boundary.
    ``pointseg suggest`` puts its clicks in the lower half (they all went to the top rows before)."""
    from rasterio.transform import from_origin

    image = np.zeros((3, 160, 160), dtype=np.uint8)
    image[0, :80, :80], image[1, :80, 80:] = 200, 200
    image[0, 80:], image[1, 80:] = 100, 100
    raster = tmp_path / "scene.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=160, height=160, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000, 5600000, 10, 10)) as ds:
        ds.write(image)
    points = tmp_path / "clicks.json"
    clicks = [[r, c, 0] for r in (10, 40, 70) for c in (10, 40, 70)] + [[r, c, 1] for r in (10, 40, 70)
                                                                       for c in (90, 120, 150)]
    points.write_text(json.dumps({"format": "pointseg.points", "version": 1, "classes": ["red", "green"], "meta": {},
                                  "images": {"scene": {"height": 160, "width": 160, "points": clicks}}}))
    run = tmp_path / "run"
    sets = ["model.encoder_weights=null", "model.hypercolumn_stages=[0]", "fast.folds=0", "labels.propagate=none",
            f"data.cache_dir={tmp_path / 'cache'}", "data.scale=1"]
    assert main(["train", "--fast", "--raster", str(raster), "--points", str(points), "--out", str(run),
                 *[a for s in sets for a in ("--set", s)]]) == 0
    out = tmp_path / "next.json"
    assert main(["suggest", "--run", str(run), "--raster", str(raster), "--points", str(points), "--per-image", "4",
                 "--out", str(out)]) == 0
    suggested = load_points(out, unclassified=True).images["scene"][len(clicks):]
    assert len(suggested) == 4 and (suggested[:, 0] >= 80).all(), suggested
    assert np.ptp(suggested[:, 0]) >= 16, suggested  # spread over the unsure half, not along its first row


def test_the_click_loop_suggest_answer_retrain(tmp_path, tiny_run, tiny_loveda, tiny_overrides, capsys):
    clicks = tmp_path / "clicks.json"
    assert main(["points", "simulate", "--data-root", str(tiny_loveda), "--per-image", "3", "--out", str(clicks)]) == 0
    out = tmp_path / "next.json"
    assert main(["suggest", "--run", str(tiny_run), "--data-root", str(tiny_loveda), "--points", str(clicks),
                 "--per-image", "4", "--min-distance", "6", "--flips", "--out", str(out)]) == 0
    suggested = load_points(out, unclassified=True)
    made = load_points(clicks)
    for image_id, pts in suggested.images.items():
        assert np.array_equal(pts[:3], made.images[image_id])  # the clicks so far, unchanged
        new = pts[3:]
        assert len(new) == 4 and (new[:, 2] == UNCLASSIFIED).all()
        everything = pts[:, :2].astype(float)
        gaps = np.sqrt(((everything[:, None] - everything[None]) ** 2).sum(-1)) + np.eye(len(pts)) * 99
        assert gaps[3:].min() >= 6  # apart from each other and from the clicks so far
    assert len(list((tmp_path / "next_overlays").glob("*.png"))) == 4
    assert '"points": [[' in out.read_text() and "null]" in out.read_text()
    # training on suggestions nobody classified is refused, with the way out
    capsys.readouterr()
    assert main(["train", "--data-root", str(tiny_loveda), "--points", str(out), "--out", str(tmp_path / "r0"),
                 *[a for o in tiny_overrides for a in ("--set", o)]]) == 2
    assert "has no class (a suggested click)" in capsys.readouterr().err
    answered = tmp_path / "answered.json"
    assert main(["points", "simulate", "--at", str(out), "--data-root", str(tiny_loveda), "--out", str(answered)]) == 0
    filled = load_points(answered)
    from pointseg.data.sources import LoveDA

    masks = {r.id: LoveDA(tiny_loveda, "Train", ("Rural",)).read_mask(r) for r in
             LoveDA(tiny_loveda, "Train", ("Rural",)).refs}
    for image_id, pts in filled.images.items():
        assert (masks[image_id][pts[:, 0], pts[:, 1]] == pts[:, 2]).all()  # each answer is the mask's class
        assert len(pts) <= 7
    assert main(["train", "--data-root", str(tiny_loveda), "--points", str(answered), "--out", str(tmp_path / "r1"),
                 *[a for o in tiny_overrides for a in ("--set", o)]]) == 0


def test_suggest_refuses_points_of_other_classes_and_too_many_clicks(tmp_path, tiny_run, tiny_loveda, capsys):
    clicks = tmp_path / "clicks.json"
    assert main(["points", "simulate", "--data-root", str(tiny_loveda), "--per-image", "2", "--out", str(clicks)]) == 0
    doc = json.loads(clicks.read_text())
    doc["classes"] = list(reversed(doc["classes"]))
    other = tmp_path / "other.json"
    other.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(["suggest", "--run", str(tiny_run), "--data-root", str(tiny_loveda), "--points", str(other),
                 "--per-image", "2", "--out", str(tmp_path / "s.json")]) == 2
    assert "differ from the run's classes" in capsys.readouterr().err
    assert main(["suggest", "--run", str(tiny_run), "--data-root", str(tiny_loveda), "--per-image", str(64 * 64 + 1),
                 "--out", str(tmp_path / "s.json")]) == 2
    assert "asks for 4097 clicks but the image has only 4096 pixels" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()


def test_suggest_on_a_raster_writes_a_layer_for_qgis(tmp_path, capsys):
    landsat = shared_path("data", "geo", "landsat-rgb", "RGB.byte.tif")
    points = tmp_path / "p.json"
    doc = {"format": "pointseg.points", "version": 1, "classes": ["dark", "bright"], "meta": {},
           "images": {"RGB.byte": {"height": 718, "width": 791, "points": [[300, 400, 0], [200, 300, 1]]}}}
    points.write_text(json.dumps(doc))
    run = tmp_path / "run"
    assert main(["train", "--raster", str(landsat), "--points", str(points), "--out", str(run),
                 *[a for s in ["model.name=unet-small", "data.crop=32", "train.batch_size=2", "train.steps=2",
                               "train.amp=false"] for a in ("--set", s)]]) == 0
    out = tmp_path / "next.json"
    assert main(["suggest", "--run", str(run), "--raster", str(landsat), "--points", str(points), "--per-image", "5",
                 "--score", "entropy", "--out", str(out)]) == 0
    layer = pyogrio.read_info(out.with_suffix(".gpkg"), layer="RGB.byte")
    assert layer["features"] == 5 and layer["geometry_type"] == "Point"
    _, _, wkb, fields = pyogrio.raw.read(out.with_suffix(".gpkg"), layer="RGB.byte")[:4]
    import shapely

    xy = shapely.get_coordinates(shapely.from_wkb(wkb))
    suggested = load_points(out, unclassified=True).images["RGB.byte"][2:]
    with rasterio.open(landsat) as ds:
        assert pyogrio.read_info(out.with_suffix(".gpkg"), layer="RGB.byte")["crs"] is not None
        for (x, y), (row, col, _) in zip(xy, suggested, strict=True):
            assert ds.index(x, y) == (row, col)  # the layer's points are the suggested pixels, in the raster's CRS
            assert ds.read(1, window=((row, row + 1), (col, col + 1)))[0, 0] != ds.nodata  # never on nodata
    assert list(fields[3]) == [""] * 5  # the class field the analyst fills
    five = write_raster(tmp_path / "five.tif", 40, 40, bands=5)
    capsys.readouterr()
    assert main(["suggest", "--run", str(run), "--raster", str(five), "--per-image", "1",
                 "--out", str(tmp_path / "x.json")]) == 2
    assert "5 bands, but the model takes 3 bands" in capsys.readouterr().err

    # clicks made on another raster are not silently ignored: the point file must be this raster's
    other = write_raster(tmp_path / "other.tif", 40, 40)
    assert main(["suggest", "--run", str(run), "--raster", str(other), "--points", str(points), "--per-image", "1",
                 "--out", str(tmp_path / "y.json")]) == 2
    assert "clicks on rasters ['RGB.byte'], which are not among --raster ['other']" in capsys.readouterr().err
    assert not (tmp_path / "y.json").exists()
    # into a folder that is not there yet
    deep = tmp_path / "new" / "folder" / "next.json"
    assert main(["suggest", "--run", str(run), "--raster", str(landsat), "--points", str(points), "--per-image", "2",
                 "--out", str(deep)]) == 0
    assert deep.exists() and deep.with_suffix(".gpkg").exists()


def test_the_default_distance_spreads_the_clicks_like_half_a_grid():
    from pointseg.suggest import auto_distance

    assert auto_distance((1000, 1000), 100) == 50.0  # 100 clicks on a 10 x 10 grid are 100 pixels apart
    assert auto_distance((10, 40), 0) == 10.0
