"""The map products analysts expect: a minimum mapping unit (sieve) applied while the map is written by bands of
rows, equal to sieving the whole map; the map's polygons, covering each class's pixels exactly."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.features import sieve

from pointseg.data.classes import LOVEDA_CLASSES, ClassTable
from pointseg.data.sources import GeoRef
from pointseg.maps import window_starts
from pointseg.mapwriter import NODATA, MapWriter

TABLE = ClassTable(("a", "b", "c", "d"), ((200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0)))


def speckled(size: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Classes in 6 x 6 blocks with 4% speckle (small regions), and a nodata corner."""
    rng = np.random.default_rng(seed)
    classes = np.kron(rng.integers(0, 4, (size // 6, size // 6)), np.ones((6, 6), np.int64)).astype(np.uint8)
    noise = rng.random(classes.shape) < 0.04
    classes[noise] = rng.integers(0, 4, int(noise.sum()))
    valid = np.ones(classes.shape, bool)
    valid[:20, :30] = False
    return classes, valid


@pytest.mark.parametrize("band, minimum", [(25, 20), (7, 20), (40, 5), (150, 20)])
def test_sieving_by_bands_of_rows_equals_sieving_the_whole_map(tmp_path, band, minimum):
    classes, valid = speckled()
    writer = MapWriter(tmp_path / "map.tif", TABLE, sieve=minimum)
    height, width = classes.shape
    with writer.open(height, width, GeoRef("EPSG:32633", (1.0, 0.0, 500000.0, 0.0, -1.0, 5600000.0))) as out:
        for top in range(0, height, band):
            rows = slice(top, top + band)
            out.write(top, classes[rows], np.zeros_like(classes[rows]), valid[rows])
    with rasterio.open(tmp_path / "map.tif") as ds:
        got = ds.read(1)
    want = np.where(valid, sieve(classes, minimum, mask=valid, connectivity=4), NODATA)
    assert (got != classes)[valid].sum() > 100  # the speckle was sieved away
    assert np.array_equal(got, want)


def test_predict_sieve_and_vector_on_a_real_raster(tmp_path, tiny_run):
    import pyogrio
    import shapely

    from pointseg.cli import main
    from tests.conftest import shared_path

    landsat = shared_path("data", "geo", "landsat-rgb", "RGB.byte.tif")
    base = ["predict", "--run", str(tiny_run), "--input", str(landsat), "--tile", "128", "--backend", "torch"]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    assert main([*base, "--out", str(tmp_path / "products"), "--sieve", "30", "--vector"]) == 0
    with rasterio.open(tmp_path / "plain" / "RGB.byte.tif") as ds:
        plain, valid, transform = ds.read(1), ds.read_masks(1) > 0, ds.transform
    with rasterio.open(tmp_path / "products" / "RGB.byte.tif") as ds:
        sieved = ds.read(1)
    assert np.array_equal(sieved, np.where(valid, sieve(plain, 30, mask=valid, connectivity=4), NODATA))
    assert (sieved != plain).sum() > 0
    meta, _, geometry, fields = pyogrio.raw.read(tmp_path / "products" / "RGB.byte.gpkg")
    assert meta["fields"].tolist() == ["class", "name", "area"] and "32618" in meta["crs"]
    polygons = shapely.from_wkb(geometry)
    pixel = abs(transform.a * transform.e)
    for value in np.unique(sieved[valid]):  # the polygons of a class cover exactly its pixels
        mine = fields[0] == value
        assert fields[2][mine].sum() == pytest.approx((sieved == value).sum() * pixel, rel=1e-9)
        assert set(fields[1][mine]) == {LOVEDA_CLASSES.names[value]}
    assert np.allclose(fields[2], shapely.area(polygons))
    assert len(polygons) == len(list(rasterio.features.shapes(sieved, mask=valid, connectivity=4)))



def test_predict_on_an_area_of_interest_computes_only_its_windows(tmp_path, tiny_run, caplog):
    import json
    import logging

    from rasterio.warp import transform_geom

    from pointseg.cli import main
    from tests.conftest import shared_path

    landsat = shared_path("data", "geo", "landsat-rgb", "RGB.byte.tif")
    base = ["predict", "--run", str(tiny_run), "--input", str(landsat), "--tile", "128", "--backend", "torch"]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    with rasterio.open(tmp_path / "plain" / "RGB.byte.tif") as ds:
        plain, transform, crs = ds.read(1), ds.transform, ds.crs
    left, top = transform @ (200, 150)
    right, bottom = transform @ (420, 380)
    with caplog.at_level(logging.INFO, logger="pointseg.maps"):
        assert main([*base, "--out", str(tmp_path / "box"), "--aoi", f"{left},{bottom},{right},{top}"]) == 0
    with rasterio.open(tmp_path / "box" / "RGB.byte.tif") as ds:
        boxed = ds.read(1)
    inside = np.zeros(plain.shape, bool)
    inside[150:380, 200:420] = True
    assert (boxed[~inside] == NODATA).all() and np.array_equal(boxed[inside], plain[inside])
    windows = [int(m.split(" windows")[0].split()[-1]) for m in caplog.messages if " windows in " in m]
    every = len(window_starts(plain.shape[0], 128, 64)) * len(window_starts(plain.shape[1], 128, 64))
    assert windows == [25] and every == 132  # only the windows touching the area were computed
    polygon = {"type": "Polygon", "coordinates": [[(left, bottom), (right, bottom), (right, top), (left, top),
                                                   (left, bottom)]]}
    layer = tmp_path / "aoi.geojson"  # the same area as a layer in another CRS
    layer.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": transform_geom(crs, "EPSG:4326", polygon)}]}))
    assert main([*base, "--out", str(tmp_path / "layer"), "--aoi", str(layer)]) == 0
    with rasterio.open(tmp_path / "layer" / "RGB.byte.tif") as ds:
        layered = ds.read(1)
    assert (layered != boxed).mean() < 0.001  # the reprojected box's edges differ by a pixel at most here
    assert main([*base, "--out", str(tmp_path / "bad"), "--aoi", "1,2,0,4"]) == 2


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_a_killed_prediction_resumed_equals_an_uninterrupted_one(tmp_path, tiny_loveda, tiny_overrides, monkeypatch,
                                                                  scale):
    """``predict --resume`` keeps the finished bands of rows; run again after a crash it recomputes only the windows
    that reach below the last of them and writes the same map (sieved, with its confidence) as a run never cut."""
    import json

    from pointseg.cli import main
    from pointseg.maps import PartialMap
    from pointseg.predictor import Predictor
    from tests.conftest import shared_path

    run = tmp_path / "run"
    assert main(["train", "--data-root", str(tiny_loveda), "--out", str(run),
                 *[a for o in [*tiny_overrides, f"data.scale={scale}"] for a in ("--set", o)]]) == 0
    landsat = shared_path("data", "geo", "landsat-rgb", "RGB.byte.tif")
    base = ["predict", "--run", str(run), "--input", str(landsat), "--tile", "128", "--backend", "torch",
            "--sieve", "30", "--confidence"]
    windows: list[int] = []
    original_forward, original_add = Predictor.input_probabilities, PartialMap.add
    monkeypatch.setattr(Predictor, "input_probabilities",
                        lambda self, images, *a: windows.append(len(images)) or original_forward(self, images, *a))
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    full = sum(windows)

    def killed_after_three_bands(self, *args):
        if self.windows_done == 3:
            raise OSError("killed")
        original_add(self, *args)

    out = tmp_path / "resumed"
    monkeypatch.setattr(PartialMap, "add", killed_after_three_bands)
    windows.clear()
    assert main([*base, "--out", str(out), "--resume"]) != 0
    partial = out / ".RGB.byte.tif.partial"
    assert json.loads((partial / "progress.json").read_text())["windows_done"] == 3
    assert not (out / "RGB.byte.tif").exists()
    monkeypatch.setattr(PartialMap, "add", original_add)
    windows.clear()
    assert main([*base, "--out", str(out), "--resume"]) == 0
    assert 0 < sum(windows) < full  # only what was not finished, and the windows reaching into it
    for name in ("RGB.byte.tif", "RGB.byte_confidence.tif"):
        with rasterio.open(tmp_path / "plain" / name) as want, rasterio.open(out / name) as got:
            assert np.array_equal(got.read(1), want.read(1)) and got.transform == want.transform
    assert not partial.exists()
    # a partial map of other inputs (here another tiling) is not continued: started afresh, the same map
    monkeypatch.setattr(PartialMap, "add", killed_after_three_bands)
    assert main([*base, "--out", str(tmp_path / "other"), "--resume", "--overlap", "0.25"]) != 0
    monkeypatch.setattr(PartialMap, "add", original_add)
    assert main([*base, "--out", str(tmp_path / "other"), "--resume"]) == 0
    with rasterio.open(tmp_path / "plain" / "RGB.byte.tif") as want, \
            rasterio.open(tmp_path / "other" / "RGB.byte.tif") as got:
        assert np.array_equal(got.read(1), want.read(1))
