import re
import shutil

import numpy as np
import pytest
import rasterio
from affine import Affine

from pointseg.data.classes import ClassTable
from pointseg.data.raster import RasterSource
from tests.conftest import shared_path

S2_CLASSES = ("conifer forest", "mixed forest", "urban", "crops", "bare soil", "grassland", "roads", "water",
              "crops (vegetation)", "quarries")


@pytest.fixture
def s2_table(tmp_path):
    path = tmp_path / "s2.csv"
    rows = [f"{v},{n},{v * 20},{255 - v * 20},{v * 7}" for v, n in enumerate(S2_CLASSES, start=1)]
    path.write_text("value,name,r,g,b\n" + "\n".join(rows) + "\n")
    return ClassTable.from_csv(path, color_coded=False)


def landsat():
    return shared_path("data", "geo", "landsat-rgb", "RGB.byte.tif")


def test_windows_georeferencing_and_nodata_of_a_real_landsat_scene():
    source = RasterSource([landsat()], ClassTable(("a",), ((0, 0, 0),)))
    ref = source.refs[0]
    assert ref.id == "RGB.byte" and source.size(ref) == (718, 791) and source.bands[ref.image] == (1, 2, 3)
    geo = source.georef(ref)
    assert "32618" in geo.crs or "UTM zone 18N" in geo.crs
    with rasterio.open(landsat()) as ds:
        assert geo.transform == tuple(ds.transform)[:6] and geo.nodata == 0
        full, mask = ds.read(), ds.read_masks(1)
    sample = source.read(ref, (100, 200, 50, 60))
    assert sample["image"].shape == (50, 60, 3) and sample["image"].dtype == np.uint8
    assert np.array_equal(sample["image"], np.moveaxis(full[:, 100:150, 200:260], 0, -1))
    assert np.array_equal(sample["valid"], mask[100:150, 200:260] > 0)
    edge = source.read(ref, (700, 780, 50, 50))  # past the bottom-right corner: clipped like slicing
    assert edge["image"].shape == (18, 11, 3) and not edge["valid"].any(), "the nodata collar is invalid"


def test_sentinel2_bands_and_a_float_mask_raster_with_nodata(s2_table):
    root = shared_path("data", "geo", "sentinel2-strzegom")
    image, mask = root / "images" / "strzegom_20210619_33u.tif", root / "masks" / "strzegom_20210619_33u.tif"
    source = RasterSource([image], s2_table, bands=[4, 3, 2], masks=[mask])
    ref = source.refs[0]
    sample = source.read(ref)
    assert sample["image"].shape == (401, 401, 3) and sample["image"].dtype == np.uint16
    with rasterio.open(image) as ds, rasterio.open(mask) as ms:
        assert np.array_equal(sample["image"][..., 0], ds.read(4))
        raw = ms.read(1)
    assert np.array_equal(sample["mask"] == 255, raw == 0), "mask nodata (0 = unlabeled) is ignored"
    assert np.array_equal(sample["mask"][raw > 0], raw[raw > 0].astype(np.uint8) - 1), "values 1..10 -> classes 0..9"
    assert np.array_equal(source.read(ref, (10, 20, 5, 6))["mask"], sample["mask"][10:15, 20:26])
    assert source.sample_keys(ref) == ("image", "valid", "mask")
    assert RasterSource([image], s2_table).band_count(RasterSource([image], s2_table).refs[0]) == 10


def test_alpha_marks_invalid_pixels_and_is_not_a_band(tmp_path):
    path = tmp_path / "rgba.tif"
    rgba = np.full((4, 20, 30), 120, dtype=np.uint8)
    rgba[3, :, :10] = 0  # transparent left third
    profile = {"driver": "GTiff", "width": 30, "height": 20, "count": 4, "dtype": "uint8", "crs": "EPSG:32633",
               "transform": Affine(0.02, 0, 500000, 0, -0.02, 5600000), "photometric": "RGB", "alpha": "YES"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(rgba)
    source = RasterSource([path], ClassTable(("a",), ((0, 0, 0),)))
    sample = source.read(source.refs[0])
    assert source.bands[path] == (1, 2, 3) and sample["image"].shape == (20, 30, 3)
    assert not sample["valid"][:, :10].any() and sample["valid"][:, 10:].all()


@pytest.mark.parametrize("case, message", [
    ("bands", "bands [4] out of range; the raster has bands 1..3"),
    ("grid", "on another grid than"),
    ("truncated", "unreadable raster"),
    ("not a raster", "unreadable raster"),
    ("masks", "2 mask rasters for 1 rasters"),
])
def test_bad_rasters_are_errors_naming_the_file(tmp_path, s2_table, case, message):
    s2 = shared_path("data", "geo", "sentinel2-strzegom", "images", "strzegom_20210619_33u.tif")
    with pytest.raises(ValueError, match=re.escape(message)) as e:
        if case == "bands":
            RasterSource([landsat()], s2_table, bands=[4])
        elif case == "grid":
            RasterSource([s2], s2_table, masks=[landsat()])
        elif case == "truncated":
            cut = tmp_path / "cut.tif"
            cut.write_bytes(landsat().read_bytes()[: landsat().stat().st_size // 3])
            source = RasterSource([cut], s2_table)
            source.read(source.refs[0])
        elif case == "not a raster":
            (tmp_path / "x.tif").write_text("hello")
            RasterSource([tmp_path / "x.tif"], s2_table)
        else:
            RasterSource([landsat()], s2_table, masks=[landsat(), landsat()])
    if case in ("truncated", "not a raster"):
        assert str(e.value).startswith(str(tmp_path))


def test_a_raster_is_read_by_window_not_cached(tmp_path):
    from pointseg.build import build_cached
    from pointseg.config import load_config

    shutil.copy(landsat(), tmp_path / "scene.tif")
    source = RasterSource([tmp_path / "scene.tif"], ClassTable(("a",), ((0, 0, 0),)))
    assert build_cached(load_config(None, [f"data.cache_dir={tmp_path / 'cache'}"]), source) is source
