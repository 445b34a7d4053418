"""Training on georeferenced rasters: clicks imported from a GIS layer, or reference mask rasters."""

import json

import numpy as np
import pytest
import torch

from pointseg.cli import main
from pointseg.data.classes import ClassTable
from pointseg.data.dataset import TrainDataset, Windows, window_around
from pointseg.data.points import PointSet
from pointseg.data.raster import RasterSource
from tests.conftest import shared_path

TINY = ["model.name=unet-small", "data.crop=32", "train.batch_size=2", "train.steps=4", "train.log_every=2",
        "train.checkpoint_every=2", "train.amp=false", "optim.warmup_steps=1"]


def sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def enmap(*parts):
    return shared_path("data", "geo", "enmap-berlin", *parts)


@pytest.fixture
def enmap_points(tmp_path):
    out = tmp_path / "clicks.json"
    assert main(["points", "import", "--vector", str(enmap("landcover_point_singlepart_3035.gpkg")),
                 "--raster", str(enmap("landcover_map_l2.tif")), "--class-field", "level_2", "--out", str(out)]) == 0
    return out


def test_windows_lean_towards_clicks_on_a_large_raster():
    source = RasterSource([shared_path("data", "geo", "landsat-rgb", "RGB.byte.tif")], ClassTable(("a", "b"),
                                                                                                   ((0, 0, 0),) * 2))
    points = PointSet(["a", "b"], {"RGB.byte": np.array([[300, 400, 1]])}, {"RGB.byte": (718, 791)}, {})
    biased = TrainDataset(source, 2, Windows(crop=16, point_bias=1.0), points=points)
    uniform = TrainDataset(source, 2, Windows(crop=16, point_bias=0.0), points=points)
    hits = [float(ds[(0, (7, i, 0))]["weight"].sum()) for ds in (biased, uniform) for i in range(20)]
    assert all(h == 1 for h in hits[:20]), "every biased window holds the click"
    assert sum(hits[20:]) < 3, "a 16-pixel window of a 718x791 scene rarely does"


@pytest.mark.parametrize("position, length, side", [(0, 100, 10), (99, 100, 10), (50, 100, 10), (3, 5, 10)])
def test_a_window_around_a_position_contains_it(position, length, side):
    rng = np.random.default_rng(0)
    for _ in range(50):
        start = window_around(position, length, side, rng)
        assert 0 <= start and (start <= position < start + side or length < side)
        assert start + side <= length or start == 0


def test_clicks_imported_from_qgis_train_a_model_on_the_raster_and_resume_keeps_it(tmp_path, enmap_points):
    run = tmp_path / "run"
    args = ["train", "--raster", str(enmap("landcover_map_l2.tif")), "--points", str(enmap_points), "--out", str(run)]
    assert main([*args, *sets(TINY)]) == 0
    state = torch.load(run / "model.pt", weights_only=False)
    assert state["scaling"] == {"low": [0.0], "high": [255.0]}, "one uint8 band: the map itself"
    assert state["classes"]["names"] == sorted(["impervious", "low vegetation", "tree", "soil", "water"])
    info = json.loads((run / "run.json").read_text())
    assert info["inputs"]["rasters"] == [str(enmap("landcover_map_l2.tif").resolve())]
    assert main(["train", "--out", str(run), "--resume", "--set", "train.steps=6"]) == 0
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [2, 4, 6]


def sentinel2(tmp_path):
    """The Sentinel-2 scene, its mask raster and a class table of the mask's 10 values."""
    root = shared_path("data", "geo", "sentinel2-strzegom")
    table = tmp_path / "s2.csv"
    table.write_text("value,name,r,g,b\n" + "".join(f"{v},class {v},{v * 20},0,0\n" for v in range(1, 11)))
    return root, table, "strzegom_20210619_33u.tif"


def test_sentinel2_with_a_mask_raster_trains_a_ten_band_model(tmp_path):
    root, table, name = sentinel2(tmp_path)
    run = tmp_path / "run"
    assert main(["train", "--raster", str(root / "images" / name), "--mask", str(root / "masks" / name),
                 "--out", str(run), *sets([*TINY, f"data.classes={table}", "data.scale=1.0"])]) == 0
    state = torch.load(run / "model.pt", weights_only=False)
    low, high = state["scaling"]["low"], state["scaling"]["high"]
    assert len(low) == 10 and all(0 <= lo < hi < 20000 for lo, hi in zip(low, high, strict=True))
    assert state["model"]["encoder.down.0.0.weight"].shape[1] == 10


@pytest.mark.parametrize("extra, message", [
    (["--data-root", "x"], "--raster trains on rasters: leave out --data-root"),
    ([], "training on rasters needs --points, or a --mask raster"),
    (["--mask", "m1.tif"], "training on --mask rasters needs their class table: --set data.classes"),
    (["--mask", "m1.tif", "--mask", "m2.tif", "--set", "data.classes=TABLE"], "2 mask rasters for 1 rasters"),
])
def test_bad_raster_training_input_is_an_error(tmp_path, capsys, extra, message):
    (tmp_path / "table.csv").write_text("value,name,r,g,b\n1,a,0,0,0\n")
    extra = [e.replace("TABLE", str(tmp_path / "table.csv")) for e in extra]
    assert main(["train", "--raster", str(enmap("landcover_map_l2.tif")), "--out", str(tmp_path / "r"),
                 *extra, *sets(TINY)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("method", ["fixmatch", "pseudoseg"])
def test_semi_supervised_methods_train_on_a_ten_band_raster(tmp_path, method):
    """Their strong views work on any band count (no RGB greyscale or hue on 10 Sentinel-2 bands)."""
    root, table, name = sentinel2(tmp_path)
    run = tmp_path / "run"
    assert main(["train", "--raster", str(root / "images" / name), "--mask", str(root / "masks" / name),
                 "--out", str(run), *sets([*TINY, f"data.classes={table}", "data.scale=1.0", f"method.name={method}",
                                           "method.pseudoseg.grid_stride=8", "train.log_every=1"])]) == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(line["loss_unsup"]) for line in lines)


def test_strong_views_of_ten_bands_jitter_every_band_and_leave_out_colour_operations():
    from pointseg.methods.augment import StrongAugment, colour_jitter, random_grayscale

    torch.manual_seed(0)
    x = torch.rand(4, 10, 16, 16)
    y = StrongAugment(jitter_p=1.0, blur_p=0.0)(x)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    assert all(not torch.allclose(x[:, b], y[:, b]) for b in range(10)), "every band is jittered"
    assert torch.equal(random_grayscale(x, p=1.0), x), "no greyscale for 10 bands"
    same = colour_jitter(x, 0.0, 0.0, 0.0, 0.5, p=1.0)
    assert torch.allclose(same, x), "no hue shift for 10 bands"
