"""``pointseg map``: a raster and a GIS point layer in another CRS -> a trained model, a GeoTIFF map, a report."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pyogrio.raw
import pyproj
import pytest
import rasterio
import shapely
import yaml

from pointseg.cli import main
from pointseg.data.raster import ground_sample_distance, picture_bands
from pointseg.workflows.map import raster_defaults
from tests.conftest import SHARED

pytestmark = pytest.mark.shared  # reads the rasters of ../shared/data/geo
GEO = SHARED / "data" / "geo"
S2 = GEO / "sentinel2-strzegom"
S2_DATE, S2_OTHER = "strzegom_20210619_33u.tif", "strzegom_20220619_33u.tif"
LANDSAT = GEO / "landsat-rgb" / "RGB.byte.tif"
DRONE = GEO / "drone-rgba" / "dummy_fotomap_small.tif"
S2_NAMES = ["conifer forest", "mixed forest", "urban", "crops", "bare soil", "grassland", "roads", "water",
            "crops in vegetation", "quarries"]
TINY = ["--set", "model.name=unet-small", "--set", "train.steps=3", "--set", "train.batch_size=2",
        "--set", "data.crop=64", "--tile", "128"]


def pixel_clicks(mask: np.ndarray, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and values of up to ``per_class`` pixels of every nonzero value of ``mask``."""
    rng = np.random.default_rng(seed)
    rows, cols, values = [], [], []
    for value in np.unique(mask[mask > 0]):
        r, c = np.nonzero(mask == value)
        pick = rng.choice(len(r), min(per_class, len(r)), replace=False)
        rows += list(r[pick])
        cols += list(c[pick])
        values += [int(value)] * len(pick)
    return np.array(rows), np.array(cols), np.array(values)


def map_coordinates(raster: Path, rows, cols, crs: str) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres of ``raster`` in ``crs``."""
    with rasterio.open(raster) as ds:
        x, y = ds.transform @ (np.asarray(cols) + 0.5, np.asarray(rows) + 0.5)
        return pyproj.Transformer.from_crs(ds.crs.to_wkt(), crs, always_xy=True).transform(x, y)


@pytest.fixture
def s2_clicks(tmp_path) -> Path:
    """Clicks on the Sentinel-2 mask's classes as a GeoPackage in EPSG:3035 (the raster is EPSG:32633)."""
    with rasterio.open(S2 / "masks" / S2_DATE) as ds:
        rows, cols, values = pixel_clicks(ds.read(1).astype(int), 6)
    x, y = map_coordinates(S2 / "images" / S2_DATE, rows, cols, "EPSG:3035")
    path = tmp_path / "clicks.gpkg"
    pyogrio.raw.write(path, geometry=np.array(shapely.to_wkb(shapely.points(x, y)), dtype=object),
                      field_data=[np.array([S2_NAMES[v - 1] for v in values], dtype=object)], fields=["landcover"],
                      crs="EPSG:3035", geometry_type="Point", driver="GPKG")
    return path


def test_sentinel2_and_a_point_layer_in_another_crs_give_a_map_a_model_and_a_report(tmp_path, s2_clicks, capsys):
    out = tmp_path / "out"
    raster = S2 / "images" / S2_DATE
    assert main(["map", "--raster", str(raster), "--points", str(s2_clicks), "--class-field", "landcover",
                 "--out", str(out), "--confidence", *TINY]) == 0
    assert "imported 54 of 54 points" in capsys.readouterr().out  # 9 classes present, 6 clicks each
    with rasterio.open(raster) as image, rasterio.open(out / "map.tif") as result:
        assert (result.crs, result.transform, result.shape) == (image.crs, image.transform, image.shape)
        classes = json.loads((out / "points.json").read_text())["classes"]
        assert set(np.unique(result.read(1))) <= set(range(len(classes)))
    assert (out / "confidence.tif").exists() and (out / "map.qml").exists() and (out / "map.png").exists()
    cfg = yaml.safe_load((out / "run" / "config.yaml").read_text())
    assert cfg["data"]["scale"] == 1.0  # 10 m pixels are used at their own resolution
    report = (out / "REPORT.md").read_text()
    assert "pixels of 10 m: trained and mapped at full resolution" in report and "![image and map](map.png)" in report
    assert re.search(r"training \d+ s \((bf16|float32) on .+\), mapping \d+ s \((onnxruntime|torch), float32\)", report)
    assert all(f"| {name} |" in report for name in classes)
    # the run maps another date of the same area
    assert main(["predict", "--run", str(out / "run"), "--input", str(S2 / "images" / S2_OTHER),
                 "--out", str(tmp_path / "other"), "--tile", "128"]) == 0
    with rasterio.open(tmp_path / "other" / S2_OTHER) as other:
        assert other.crs == image.crs


def test_rgb_uint8_with_csv_clicks_gives_a_cloud_optimised_map_with_nodata_kept(tmp_path, capsys):
    with rasterio.open(LANDSAT) as ds:
        valid = ds.read_masks().min(0) > 0  # a pixel with no data in any band has none
        bright = ds.read().mean(0) > np.median(ds.read().mean(0)[valid])
    label = np.where(valid, np.where(bright, 1, 2), 0)
    rows, cols, values = pixel_clicks(label, 10)
    lon, lat = map_coordinates(LANDSAT, rows, cols, "EPSG:4326")
    clicks = tmp_path / "clicks.csv"
    clicks.write_text("lon,lat,kind\n" + "".join(f"{float(x)!r},{float(y)!r},{'bright' if v == 1 else 'dark'}\n"
                                              for x, y, v in zip(lon, lat, values, strict=True)))
    out = tmp_path / "out"
    assert main(["map", "--raster", str(LANDSAT), "--points", str(clicks), "--class-field", "kind",
                 "--crs", "EPSG:4326", "--x-field", "lon", "--y-field", "lat", "--out", str(out), "--cog",
                 "--confidence", *TINY]) == 0
    for name in ("map.tif", "confidence.tif"):
        with rasterio.open(out / name) as result:
            assert result.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            assert result.overviews(1)  # 791 x 718 pixels: at least one overview level
            assert result.crs.to_epsg() == 32618 and result.nodata == 255
            values = result.read(1)
            assert (values[~valid] == 255).all() and (values[valid] != 255).all()
    with rasterio.open(out / "map.tif") as result:
        assert result.colormap(1)[255][3] == 0  # nodata transparent
    assert "pixels of 300 m" in (out / "REPORT.md").read_text()


def test_a_layer_without_the_class_field_is_an_error_and_nothing_is_written(tmp_path, s2_clicks, capsys):
    out = tmp_path / "out"
    assert main(["map", "--raster", str(S2 / "images" / S2_DATE), "--points", str(s2_clicks), "--class-field",
                 "label", "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert str(s2_clicks) in err and "landcover" in err  # names the file and lists the fields it has
    assert not (out / "run").exists() and not (out / "map.tif").exists()


def test_defaults_follow_the_pixel_size():
    assert raster_defaults(S2 / "images" / S2_DATE)[0] == {"data": {"scale": 1.0}}
    assert raster_defaults(DRONE)[0] == {}  # 2 cm pixels keep the default scale
    fast = raster_defaults(S2 / "images" / S2_DATE, fast=True)[0]  # the fast head also sees the bands there
    assert fast["model"] == {"hypercolumn_stages": [0, 1, 2, 3, 4, 5], "hypercolumn_scale": 0.25}
    assert fast["labels"] == {"propagate": "none"}  # the fast model learns from the clicks alone on 10 m pixels
    assert raster_defaults(DRONE, fast=True)[0] == {}
    assert ground_sample_distance(S2 / "images" / S2_DATE) == pytest.approx(10.0)


def test_ground_sample_distance_of_a_geographic_raster(tmp_path):
    path = tmp_path / "wgs84.tif"
    transform = rasterio.transform.from_origin(10.0, 60.5, 0.0002, 0.0001)  # 0.0002 deg wide, 0.0001 deg high
    with rasterio.open(path, "w", driver="GTiff", width=10, height=10000, count=1, dtype="uint8",
                       crs="EPSG:4326", transform=transform) as dst:
        dst.write(np.zeros((1, 10000, 10), dtype=np.uint8))
    # centre latitude 60 deg: 0.0002 * 111320 * cos(60 deg) = 11.132 m wide, 0.0001 * 111320 = 11.132 m high
    assert ground_sample_distance(path) == pytest.approx(11.132, rel=1e-3)


def test_pictures_show_true_colour_bands():
    assert picture_bands(S2 / "images" / S2_DATE, list(range(1, 11))) == (3, 2, 1)  # B04, B03, B02 by name
    assert picture_bands(DRONE, [1, 2, 3]) == (1, 2, 3)  # by colour interpretation


def test_the_pixel_size_of_a_rotated_raster_is_its_side(tmp_path):
    path = tmp_path / "rotated.tif"
    transform = rasterio.Affine.translation(500000, 5000000) @ rasterio.Affine.rotation(20) @ rasterio.Affine.scale(30)
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8", crs="EPSG:32633",
                       transform=transform) as dst:
        dst.write(np.zeros((1, 8, 8), dtype=np.uint8))
    assert ground_sample_distance(path) == pytest.approx(30.0)


def test_map_again_with_other_clicks_is_refused_and_replaces_nothing(tmp_path, s2_clicks, capsys):
    out = tmp_path / "out"
    raster = S2 / "images" / S2_DATE
    first = ["map", "--raster", str(raster), "--points", str(s2_clicks), "--out", str(out), *TINY]
    assert main([*first, "--class-field", "landcover"]) == 0
    info = json.loads((out / "run" / "run.json").read_text())
    assert info["invocations"][0]["argv"][:2] == ["pointseg", "map"], "the map command is recorded with its run"
    before = {p.name: p.read_bytes() for p in (out / "points.json", out / "points.classes.csv", out / "REPORT.md")}
    other = tmp_path / "other.gpkg"  # the same points, classes numbered instead of named
    meta, fids, wkb, values = pyogrio.raw.read(s2_clicks, return_fids=True)
    codes = np.array([str(S2_NAMES.index(v) + 1) for v in values[0]], dtype=object)
    pyogrio.raw.write(other, wkb, [codes], ["code"], crs="EPSG:3035", geometry_type="Point", driver="GPKG")
    assert main(["map", "--raster", str(raster), "--points", str(other), "--class-field", "code", "--out", str(out),
                 *TINY]) == 2
    assert "holds a map run trained on other clicks" in capsys.readouterr().err
    assert {name: (out / name).read_bytes() for name in before} == before, "its table still matches its map"
    assert not list(out.glob(".import-*"))


def test_a_map_whose_training_fails_at_once_leaves_nothing(tmp_path, s2_clicks, monkeypatch, capsys):
    import pointseg.engine.loop

    def fail(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(pointseg.engine.loop, "_optimise", fail)
    out = tmp_path / "out"
    assert main(["map", "--raster", str(S2 / "images" / S2_DATE), "--points", str(s2_clicks), "--class-field",
                 "landcover", "--out", str(out), *TINY]) == 2
    assert "out of memory" in capsys.readouterr().err
    assert not out.exists()


def test_class_names_and_paths_reach_the_report_as_text_only(tmp_path):
    """Names from a user's layer never become HTML, images, links or table cells in REPORT.md."""
    import re

    hostile = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "![t](http://example.com/y.png)|x"]
    with rasterio.open(LANDSAT) as ds:
        valid = ds.read_masks().min(0) > 0
        level = ds.read().mean(0)
    label = np.where(valid, np.digitize(level, np.quantile(level[valid], [1 / 3, 2 / 3])) + 1, 0)
    rows, cols, values = pixel_clicks(label, 6)
    x, y = map_coordinates(LANDSAT, rows, cols, "EPSG:32618")
    clicks = tmp_path / "clicks.csv"
    with open(clicks, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["x", "y", "name"])
        writer.writerows([float(a), float(b), hostile[v - 1]] for a, b, v in zip(x, y, values, strict=True))
    out = tmp_path / "out"
    assert main(["map", "--raster", str(LANDSAT), "--points", str(clicks), "--class-field", "name",
                 "--crs", "EPSG:32618", "--out", str(out), *TINY]) == 0
    report = (out / "REPORT.md").read_text()
    assert "<script" not in report and "<img" not in report and "](http" not in report
    table = [line for line in report.splitlines() if line.startswith("| ") and "pixels" not in line]
    assert len(table) == 3 and all(len(re.findall(r"(?<!\\)\|", line)) == 5 for line in table)
    assert "&lt;script&gt;alert\\(1\\)&lt;/script&gt;" in report
