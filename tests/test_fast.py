"""The fast model: its head against scikit-learn, the hypercolumn head's algebra, the warm start, the feature
cache, corrective clicks, and fast runs through the CLI like any other run."""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from pointseg import runs
from pointseg.cli import main
from pointseg.data.points import corrective_points, load_points
from pointseg.data.sources import LoveDA
from pointseg.fast import ABSENT_LOGIT, Samples, click_folds, fit_mlp, fit_softmax, near_held
from pointseg.features import FeatureCache
from pointseg.models import build_model
from pointseg.models.hypercolumn import (
    FOREST_FLOOR,
    ForestHead,
    HypercolumnHead,
    MLPHypercolumnHead,
    graph_refusal,
    pixel_features,
    resample,
    warm_start_state,
)
from pointseg.treemodel import fit_forest
from pointseg.workflows.sample import sample_dir
from tests.conftest import shared_path

FAST = ["model.encoder_weights=null", "data.scale=1.0", "train.amp=false", "fast.folds=3"]


def sets(options: list[str]) -> list[str]:
    return [a for o in options for a in ("--set", o)]


def test_the_head_agrees_with_scikit_learns_logistic_regression():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1.5, (3, 6))
    y = np.repeat([0, 1, 3], [40, 25, 15])  # class 2 has no samples
    x = centres[np.searchsorted([0, 1, 3], y)] + rng.normal(0, 1.0, (80, 6)) * rng.uniform(0.5, 3, 6)
    weights = rng.uniform(0.5, 1.5, 80)
    w, b = fit_softmax(torch.tensor(x, dtype=torch.float64), y, weights, 4, c=0.1, max_iter=500)
    scaler = StandardScaler().fit(x)
    reference = LogisticRegression(C=0.1, class_weight="balanced", max_iter=5000, tol=1e-10)
    reference.fit(scaler.transform(x), y, sample_weight=weights)
    test = rng.normal(0, 2, (200, 6))
    ours = (torch.tensor(test) @ w.T + b).numpy()
    assert (ours.argmax(1) == reference.predict(scaler.transform(test))).all()
    theirs = reference.predict_log_proba(scaler.transform(test))
    ours_present = torch.tensor(ours[:, [0, 1, 3]]).log_softmax(1).numpy()
    assert np.abs(ours_present - theirs).max() < 1e-4
    assert b[2] == ABSENT_LOGIT and (w[2] == 0).all()  # a class without clicks is never predicted


def test_the_forest_head_agrees_with_scikit_learns_random_forest_after_saving_and_loading():
    rng = np.random.default_rng(0)
    image = torch.rand(1, 2, 24, 20, generator=torch.Generator().manual_seed(1)).half().float()
    features = pixel_features(image, (3, 5))[0].permute(1, 2, 0).reshape(-1, 10).numpy()
    y = np.where(features[:, 0] + features[:, 3] > 1.0, 3, 0)  # classes 1 and 2 have no samples
    y[rng.choice(len(y), 20, replace=False)] = 1
    weight = rng.uniform(0.5, 1.5, len(y))
    trees = fit_forest(features, y, weight, 4, trees=15, min_samples_leaf=2, max_features=0.5, seed=3)
    head = ForestHead(4, (3, 5))
    head.set_trees(trees)
    loaded = ForestHead(4, (3, 5))
    loaded.load_state_dict(head.state_dict())  # buffers of the forest's own size
    reference = RandomForestClassifier(15, min_samples_leaf=2, max_features=0.5, random_state=3, n_jobs=1)
    reference.fit(features, y, sample_weight=weight)
    probs = loaded([image]).exp()[0].permute(1, 2, 0).reshape(-1, 4).numpy()
    assert np.abs(probs[:, [0, 1, 3]] - reference.predict_proba(features)).max() < 1e-5
    assert probs[:, 2].max() <= FOREST_FLOOR * 1.01  # a class without samples: the floor, never predicted
    assert graph_refusal(loaded) is not None and graph_refusal(HypercolumnHead((3,), 2, 0.5)) is None


def test_the_mlp_head_maps_what_its_fit_predicts():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(0, 1, (90, 5)))
    y = (x[:, 0] * x[:, 1] > 0).numpy().astype(np.int64) * 2  # not linearly separable; class 1 absent
    layers = fit_mlp(x, y, np.ones(90), 3, hidden=8, c=10.0, class_weight="balanced", max_iter=300, seed=0)
    head = MLPHypercolumnHead((5,), 3, scale=1.0, hidden=8)
    w1, b1, w2, b2 = layers
    with torch.no_grad():
        head.hidden.conv.weight.copy_(w1.view_as(head.hidden.conv.weight))
        head.hidden.conv.bias.copy_(b1)
        head.out.weight.copy_(w2.view_as(head.out.weight))
        head.out.bias.copy_(b2)
    stage = x.T.reshape(1, 5, 9, 10).float()  # the samples as pixels of a 9 x 10 grid at the input's size
    mapped = head([torch.zeros(1, 3, 9, 10), stage]).argmax(1).flatten().numpy()
    by_hand = (torch.relu(x @ w1.T + b1) @ w2.T + b2).argmax(1).numpy()
    assert (mapped == by_hand).all() and (by_hand == y).mean() > 0.9 and not (by_hand == 1).any()


def test_click_accuracy_leaves_out_propagated_samples_near_a_held_click_in_any_window():
    positions = np.array([[100, 1020], [100, 1030], [100, 1300], [500, 1030], [100, 1030]], dtype=float)
    samples = Samples(torch.zeros(5, 1), np.zeros(5, np.int64), np.ones(5), position=positions,
                      click=np.array([0, -1, -1, -1, -1]), image=np.array([0, 0, 0, 0, 1]), pixels=torch.zeros(5, 0))
    # the click lies at column 1020, in the first 1024-pixel feature window of image 0; a propagated cell 10 pixels
    # away in the next window is left out, cells far away and the same place in another image are kept
    assert near_held(samples, np.array([0]), reach=48).tolist() == [False, True, False, False, False]


def test_click_folds_keep_the_clicks_of_a_block_together():
    positions = np.array([[10, 10], [20, 30], [70, 10], [10, 70], [75, 80], [10, 10]], dtype=float)
    samples = Samples(torch.zeros(6, 1), np.zeros(6, np.int64), np.ones(6), position=positions,
                      click=np.arange(6), image=np.array([0, 0, 0, 0, 0, 1]), pixels=torch.zeros(6, 0))
    rows = np.arange(6)
    blocked = [click_folds(samples, rows, folds=2, block=64, seed=s) for s in range(10)]
    single = [click_folds(samples, rows, folds=2, block=0, seed=s) for s in range(10)]
    # clicks 0 and 1 share a 64 x 64 block: always one fold, so neither helps to predict the other; click by click
    # they part on some seeds; the click at the same place in another image is in a block of its own
    assert all(f[0] == f[1] for f in blocked) and any(f[0] != f[1] for f in single)
    assert any(f[0] != f[5] for f in blocked)
    assert all(sorted(np.bincount(f)) in ([2, 4], [3, 3]) for f in blocked)  # 5 blocks over 2 folds: 3 and 2
    assert np.bincount(click_folds(samples, rows, folds=3, block=0, seed=0)).tolist() == [2, 2, 2]


def test_the_softmax_heads_keys_of_earlier_configs_are_read_in_their_section():
    from pointseg.config import default_config, load_settings, merge

    cfg = merge(default_config(), load_settings(None, ["fast.c=0.5", "fast.max_iter=7"]))
    assert cfg["fast"]["softmax"] == {"c": 0.5, "max_iter": 7} and "c" not in cfg["fast"]


def test_the_hypercolumn_head_equals_a_1x1_convolution_over_the_concatenated_grid():
    torch.manual_seed(0)
    image = torch.rand(2, 5, 32, 48)
    parts = [image, torch.rand(2, 4, 16, 24), torch.rand(2, 6, 2, 3)]  # input-sized, finer and coarser than the grid
    head = HypercolumnHead((5, 4, 6), 3, scale=0.25)
    grid = (8, 12)
    stacked = torch.cat([resample(p, grid) for p in parts], 1)
    by_hand = torch.nn.functional.interpolate(head.conv(stacked), size=(32, 48), mode="bilinear", align_corners=False)
    assert torch.allclose(head([image, *parts]), by_hand, atol=1e-5)
    assert torch.allclose(resample(image, grid), torch.nn.functional.avg_pool2d(image, 4))  # box down


def test_the_warm_started_model_starts_as_the_fast_fit_and_the_u_nets_gradients_flow():
    torch.manual_seed(0)
    fast = build_model("hypercolumn-mobilenetv2", 4).eval()
    with torch.no_grad():
        for p in fast.heads.parameters():
            p.normal_()
    warm = build_model("unet-hypercolumn-mobilenetv2", 4)
    warm.load_state_dict(warm_start_state(fast.state_dict(), warm))
    warm.eval()
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(warm(image), fast(image), atol=1e-5)
    warm.train()
    warm(image).logsumexp(1).mean().backward()
    assert warm.heads["seg"].unet[0].weight.grad.abs().sum() > 0  # the zeroed U-Net head learns from step one
    assert warm.heads["seg"].hypercolumn.conv.weight.grad.abs().sum() > 0
    assert warm_start_state(warm.state_dict(), warm) is None  # a full run is loaded as it is


class Counting(torch.nn.Module):
    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = encoder, 0
        self.out_channels = encoder.out_channels

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_the_cache_encodes_each_image_once_and_again_when_the_image_or_weights_change(tmp_path, tiny_loveda):
    from pointseg.data.bands import BandScaling
    from pointseg.data.cache import CachedSource

    source = CachedSource(LoveDA(tiny_loveda, "Train", ("Rural",)), tmp_path / "samples")
    model = build_model("hypercolumn-mobilenetv2", 7).eval()
    model.encoder = Counting(model.encoder)

    def cache() -> FeatureCache:
        return FeatureCache(model, source, BandScaling.full_range(3), 1.0, "area", (1, 5), tmp_path / "features")

    first = cache()
    features = [first.get(u) for u in first.units()]
    assert model.encoder.calls == 4 and first.encoded == 4
    assert features[0][2] is None and features[0][5].shape == (1, 1280, 2, 2)
    again = cache()
    assert all(torch.equal(a[1], again.get(u)[1]) for a, u in zip(features, again.units(), strict=True))
    assert model.encoder.calls == 4 and again.encoded == 0  # read from disk
    image = source.refs[0].image
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    assert [cache().get(u) for u in cache().units()] and model.encoder.calls == 5  # that image only
    with torch.no_grad():
        next(model.encoder.parameters()).add_(1)
    changed = cache()
    changed.get(changed.units()[1])
    assert model.encoder.calls == 6
    other_bands = FeatureCache(model, source, BandScaling.full_range(3), 1.0, "area", (1, 5), tmp_path / "features",
                               bands=[3, 2, 1])
    assert other_bands.key(other_bands.units()[0]) != cache().key(cache().units()[0])
    assert sorted(p.name.split(".", 1)[1] for p in (tmp_path / "features").iterdir())[:3] == [
        "features-0.npy", "features-0.npy", "features-0.npy"]  # stage 0 is always kept, in the sample-cache layout


def test_corrective_clicks_land_only_on_wrong_labelled_unclicked_pixels():
    mask = np.full((20, 20), 255, dtype=np.uint8)
    mask[5:15, 5:15] = 1
    mask[5:15, 5:8] = 2
    predicted = np.ones((20, 20), dtype=np.uint8)  # wrong on the 30 pixels of class 2
    existing = np.array([[6, 6, 2], [10, 10, 1]])
    out = corrective_points(mask, predicted, existing, 12, np.random.default_rng(0))
    new = out[2:]
    assert (out[:2] == existing).all() and len(new) == 12 and len({(r, c) for r, c, _ in new}) == 12
    assert (mask[new[:, 0], new[:, 1]] == 2).all() and (new[:, 2] == 2).all()
    assert not ((new[:, 0] == 6) & (new[:, 1] == 6)).any()
    everywhere = corrective_points(mask, predicted, existing, 40, np.random.default_rng(0))[2:]
    assert (mask[everywhere[:, 0], everywhere[:, 1]] != 255).all()
    assert (mask[everywhere[:29, 0], everywhere[:29, 1]] == 2).all()  # the 29 wrong pixels first, then right ones
    right = corrective_points(mask, mask, np.zeros((0, 3), np.int64), 5, np.random.default_rng(0))
    assert len(right) == 5 and (mask[right[:, 0], right[:, 1]] != 255).all()  # a right map: uniform


@pytest.fixture
def fast_run(tmp_path, tiny_loveda, tiny_overrides, capsys):
    points = tmp_path / "points.json"
    assert main(["points", "simulate", "--data-root", str(tiny_loveda), "--per-image", "12", "--out",
                 str(points)]) == 0
    run = tmp_path / "fast"
    assert main(["train", "--fast", "--data-root", str(tiny_loveda), "--points", str(points), "--out", str(run),
                 *sets([*tiny_overrides, *FAST])]) == 0
    assert "click accuracy (3-fold cross-validation over 48 clicks)" in capsys.readouterr().out
    return run, points


def test_a_fast_run_is_a_normal_run(tmp_path, tiny_loveda, fast_run, capsys):
    run, points = fast_run
    info = json.loads((run / "fast.json").read_text())
    assert info["encoded"] == 4 and info["click_accuracy"]["folds"] == 3
    assert info["click_accuracy"]["clicks"] == len(load_points(points))
    assert runs.load_run(run).cfg["model"]["name"] == "hypercolumn-mobilenetv2"
    assert main(["evaluate", "--run", str(run), "--data-root", str(tiny_loveda), "--split", "Val", "--out",
                 str(tmp_path / "val.json")]) == 0
    assert json.loads((tmp_path / "val.json").read_text())["miou"] > 0.2  # colour-coded blocks: the bands suffice
    assert main(["predict", "--run", str(run), "--input", str(tiny_loveda / "Val" / "Rural" / "images_png"),
                 "--out", str(tmp_path / "maps")]) == 0
    assert len(list((tmp_path / "maps").glob("*.png"))) >= 2
    assert info["head"] == runs.load_run(run).cfg["model"]["hypercolumn_head"] == info["choice"]["head"]
    assert set(info["choice"]["click_accuracy"]) == {"softmax", "forest"}  # auto scored its candidates
    best = max(v["accuracy"] for v in info["choice"]["click_accuracy"].values())
    assert info["choice"]["click_accuracy"][info["head"]]["accuracy"] == best == info["click_accuracy"]["accuracy"]
    forest = tmp_path / "forest"
    assert main(["train", "--fast", "--data-root", str(tiny_loveda), "--points", str(points), "--out", str(forest),
                 *sets([*FAST, "model.encoder_weights=null", "fast.head=forest"])]) == 0
    capsys.readouterr()
    assert main(["export", "--run", str(forest), "--out", str(tmp_path / "forest.onnx"), "--tile", "64"]) == 2
    assert "head heads.seg (ForestHead: a forest of decision trees" in capsys.readouterr().err
    assert main(["predict", "--run", str(forest), "--input", str(tiny_loveda / "Val" / "Rural" / "images_png"),
                 "--out", str(tmp_path / "forest-maps")]) == 0  # mapped by torch, the backend it can run on
    run = tmp_path / "softmax"
    assert main(["train", "--fast", "--data-root", str(tiny_loveda), "--points", str(points), "--out", str(run),
                 *sets([*FAST, "model.encoder_weights=null", "fast.head=softmax"])]) == 0
    onnx = tmp_path / "fast.onnx"
    assert main(["export", "--run", str(run), "--out", str(onnx), "--tile", "64"]) == 0
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = runs.load_run(run, device="cpu").model(image).softmax(1).numpy()
    got = session.run(None, {session.get_inputs()[0].name: image.numpy()})[0]
    assert np.abs(got - want).max() < 1e-3
    assert main(["suggest", "--run", str(run), "--data-root", str(tiny_loveda), "--split", "Val", "--per-image", "3",
                 "--out", str(tmp_path / "next.json")]) == 0
    assert len(load_points(tmp_path / "next.json", unclassified=True)) == 6


def test_corrective_simulation_and_the_warm_start_from_the_cli(tmp_path, tiny_loveda, tiny_overrides, fast_run):
    run, points = fast_run
    more = tmp_path / "more.json"
    assert main(["points", "simulate", "--data-root", str(tiny_loveda), "--strategy", "corrective", "--run", str(run),
                 "--points", str(points), "--per-image", "5", "--out", str(more)]) == 0
    before, after = load_points(points), load_points(more)
    trained = runs.load_run(run)
    dataset = trained.dataset(tiny_loveda, "Train")
    predicted = {s["id"]: (p, s["mask"].numpy()) for s, p in trained.predictor().iter_predictions(dataset)}
    for image_id, pts in after.images.items():
        assert (pts[: len(before.images[image_id])] == before.images[image_id]).all()
        new = pts[len(before.images[image_id]):]
        pred, mask = predicted[image_id]
        errors = (pred != mask) & (mask != 255)
        wrong = int(errors.sum()) - int(errors[before.images[image_id][:, 0], before.images[image_id][:, 1]].sum())
        on_wrong = int((pred[new[:, 0], new[:, 1]] != mask[new[:, 0], new[:, 1]]).sum())
        assert len(new) == 5 and on_wrong == min(5, wrong)  # where the map is wrong while it is wrong anywhere
        assert (new[:, 2] == mask[new[:, 0], new[:, 1]]).all()
    warm = tmp_path / "warm"
    assert main(["train", "--init", str(run), "--data-root", str(tiny_loveda), "--points", str(more), "--out",
                 str(warm), *sets([*[o for o in tiny_overrides if not o.startswith("model.name")], *FAST[:1],
                                   "train.steps=2"])]) == 0
    assert runs.load_run(warm).cfg["model"]["name"] == "unet-hypercolumn-mobilenetv2"


def test_map_fast_reports_its_click_accuracy(tmp_path):
    landsat = sample_dir() / "landsat"
    out = tmp_path / "map"
    assert main(["map", "--fast", "--raster", f"{landsat}/RGB.byte.tif", "--points", f"{landsat}/clicks.gpkg",
                 "--class-field", "class", "--classes", f"{landsat}/classes.csv", "--out", str(out),
                 *sets(["model.encoder_weights=" + str(shared_path("weights", "mobilenet_v2-b0353104.pth")),
                        "train.amp=false"])]) == 0
    report = (out / "REPORT.md").read_text()
    assert "click accuracy" in report and "5\\-fold cross\\-validation over 40 clicks" in report
    assert (out / "map.tif").exists() and (out / "run" / "fast.json").exists()


def test_clicks_on_a_sentinel2_raster_uniform_then_where_the_fast_map_is_wrong(tmp_path):
    import rasterio

    s2 = shared_path("data", "geo", "sentinel2-strzegom")
    raster, mask_path = s2 / "images" / "strzegom_20220719_33u.tif", s2 / "masks" / "strzegom_20220719_33u.tif"
    table = tmp_path / "classes.csv"
    table.write_text("value,name,r,g,b\n" + "".join(f"{v},class {v},0,0,0\n" for v in range(1, 11)))
    first, more = tmp_path / "first.json", tmp_path / "more.json"
    assert main(["points", "simulate", "--raster", str(raster), "--mask", str(mask_path), "--classes", str(table),
                 "--per-image", "60", "--out", str(first)]) == 0
    with rasterio.open(mask_path) as ds:
        mask = ds.read(1)
    pts = next(iter(load_points(first).images.values()))
    assert len(pts) == 60 and (mask[pts[:, 0], pts[:, 1]] > 0).all()  # never on the unlabelled 0
    assert (mask[pts[:, 0], pts[:, 1]] == pts[:, 2] + 1).all()  # class index = value - 1 in the table's order
    run = tmp_path / "fast"
    assert main(["train", "--fast", "--raster", str(raster), "--points", str(first), "--out", str(run),
                 *sets(["model.encoder_weights=null", "data.scale=1.0", "train.amp=false", f"data.classes={table}",
                        "fast.folds=0"])]) == 0
    assert main(["points", "simulate", "--raster", str(raster), "--mask", str(mask_path), "--strategy", "corrective",
                 "--run", str(run), "--points", str(first), "--per-image", "10", "--out", str(more)]) == 0
    new = next(iter(load_points(more).images.values()))[60:]
    trained = runs.load_run(run)
    source = trained.predictor().raster_source([raster], [mask_path])
    dataset = runs.build.build_eval_dataset(trained.head_cfg, source, trained.scaling)
    (_, predicted), = list(trained.predictor().iter_predictions(dataset))
    assert len(new) == 10 and (mask[new[:, 0], new[:, 1]] > 0).all()
    assert (predicted[new[:, 0], new[:, 1]] != new[:, 2]).all()


def test_simulating_on_a_raster_needs_its_mask_and_table(tmp_path, capsys):
    raster = shared_path("data", "geo", "sentinel2-strzegom", "images", "strzegom_20220719_33u.tif")
    assert main(["points", "simulate", "--raster", str(raster), "--per-image", "5", "--out",
                 str(tmp_path / "p.json")]) == 2
    assert "--raster R --mask M" in capsys.readouterr().err
    assert main(["points", "simulate", "--strategy", "corrective", "--data-root", str(tmp_path), "--per-image", "5",
                 "--out", str(tmp_path / "p.json")]) == 2
    assert "needs --run RUN" in capsys.readouterr().err


def test_one_round_of_the_loop_and_the_full_recipe_in_the_background(tmp_path, tiny_loveda, tiny_overrides):
    from pointseg import build, fastloop
    from pointseg.config import load_settings

    points = tmp_path / "points.json"
    assert main(["points", "simulate", "--data-root", str(tiny_loveda), "--per-image", "12", "--out",
                 str(points)]) == 0
    plain = [o for o in tiny_overrides if not o.startswith("model.name")]
    inputs = build.TrainInputs(data_root=tiny_loveda, points=points)
    result = fastloop.fast_round(load_settings(None, [*plain, *FAST]), tmp_path / "round1", inputs, suggest=3)
    assert sorted(result.maps) == [f"Rural/{i}" for i in range(4)] and result.maps["Rural/0"].shape == (64, 64)
    assert result.fast.accuracy is not None and result.fast.seconds["fit"] < 30
    suggested = result.suggestions
    assert suggested is not None and all(len(p) == 15 for p in suggested.images.values())
    assert all((p[12:, 2] == -1).all() for p in suggested.images.values())  # the suggestions are unclassified
    assert result.fast.probabilities(build.build_source(result.fast.trained.cfg, tiny_loveda, "Val")).keys() == {
        "Rural/4", "Rural/5"}
    assert result.fast.choice is not None and result.fast.choice.auto and result.fast.head == result.fast.choice.name
    later = fastloop.fast_train(load_settings(None, [*plain, *FAST, "fast.head=softmax"]), tmp_path / "later", inputs,
                                accuracy_now=False)
    assert later.accuracy is None and later.compute_accuracy(stop=lambda: True) is None  # given up: left for later
    assert later.later is not None and later.compute_accuracy() is not None and later.later is None
    assert {k: v for k, v in later.accuracy.items() if k != "seconds"} == {  # the same as scored by auto
        k: v for k, v in result.fast.choice.scores["softmax"].items() if k != "seconds"}
    process = fastloop.full_recipe(tmp_path / "round1", tmp_path / "full", inputs,
                                   [*plain, "model.encoder_weights=null", "train.steps=2"])
    assert process.wait(timeout=300) == 0
    assert runs.load_run(tmp_path / "full").cfg["model"]["name"] == "unet-hypercolumn-mobilenetv2"
