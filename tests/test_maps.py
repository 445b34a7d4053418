"""Raster maps: tiled, blended inference written as GeoTIFFs that GDAL and QGIS read with colours and names."""

import ctypes
import glob

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from affine import Affine
from torch import nn

from pointseg.cli import main
from pointseg.data.bands import BandScaling
from pointseg.data.classes import ClassTable
from pointseg.data.raster import RasterSource
from pointseg.inference import predict_logits
from pointseg.maps import Tiling, hann, predict_raster, shift_up, window_starts
from pointseg.mapwriter import MapWriter
from pointseg.predictor import Predictor, blend_grid, model_pixels
from tests.conftest import shared_path

CLASSES = ClassTable(("water", "forest", "urban \"core\""), ((0, 0, 255), (0, 255, 0), (255, 0, 0)))


class PixelModel(nn.Module):
    """A 1x1 convolution: each pixel's logits depend on that pixel only, so tiling must not change the map."""

    size_divisor = 8

    def __init__(self, bands: int = 3, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(bands, classes, 1)
        self.conv.weight.data *= 8

    def forward(self, x):
        assert x.shape[-1] % self.size_divisor == 0 and x.shape[-2] % self.size_divisor == 0
        return self.conv(x)


def write_raster(path, height, width, bands=3, dtype="uint8", nodata=None, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 255, (bands, height, width)).astype(dtype)
    profile = {"driver": "GTiff", "width": width, "height": height, "count": bands, "dtype": dtype,
               "crs": "EPSG:32633", "transform": Affine(10, 0, 500000, 0, -10, 5600000), "nodata": nodata}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def untiled_map(model, image, scaling):
    """The per-pixel model on the whole image at once: the reference the tiled map must equal."""
    probs = predict_logits(model, torch.from_numpy(scaling(image))[None], amp=False).softmax(1)[0]
    return probs.argmax(0).numpy(), probs.max(0).values.numpy()


@pytest.mark.parametrize("height, width, tile, overlap, spill_bytes", [
    (101, 77, 32, 0.5, 2**30), (64, 64, 32, 0.25, 2**30), (50, 203, 16, 0.0, 2**30), (20, 30, 64, 0.5, 2**30),
    (101, 77, 32, 0.5, 0), (50, 203, 16, 0.25, 0)])  # spill_bytes 0: the band of sums is kept in a file
def test_a_tiled_map_of_a_per_pixel_model_equals_the_untiled_one(tmp_path, height, width, tile, overlap, spill_bytes,
                                                                   monkeypatch):
    monkeypatch.setattr("pointseg.maps.BAND_BLOCK", 40)  # windows across several column blocks
    raster = write_raster(tmp_path / "scene.tif", height, width)
    source = RasterSource([raster], CLASSES)
    model, scaling = PixelModel().eval(), BandScaling.full_range(3)
    out = tmp_path / "maps"  # not there yet
    result = predict_raster(Predictor(model, CLASSES, scaling), source, source.refs[0],
                            MapWriter(out / "map.tif", CLASSES, out / "conf.tif"), Tiling(tile, overlap, 3),
                            progress=False, spill_bytes=spill_bytes)
    assert sorted(p.name for p in out.iterdir()) == ["conf.tif", "map.qml", "map.tif", "map.tif.aux.xml"]
    expected, confidence = untiled_map(model, source.read(source.refs[0])["image"], scaling)
    with rasterio.open(result.map) as ds, rasterio.open(out / "conf.tif") as cs:
        assert np.array_equal(ds.read(1), expected)
        assert np.abs(cs.read(1).astype(int) - np.rint(confidence * 100)).max() <= 1


@pytest.mark.parametrize("height, width, tile, overlap, scale, spill_bytes", [
    (101, 77, 16, 0.5, 0.5, 2**30), (64, 64, 16, 0.25, 0.5, 2**30), (20, 30, 64, 0.5, 0.5, 2**30),
    (203, 50, 8, 0.5, 0.25, 2**30), (101, 77, 16, 0.5, 0.5, 0), (61, 95, 8, 0.5, 1 / 3, 2**30),
    (101, 77, 16, 0.75, 0.5, 0)])  # overlap 0.75: the rows kept move up by less than they are
def test_a_map_blended_at_the_model_resolution_equals_the_whole_raster_up_sampled_once(
        tmp_path, height, width, tile, overlap, scale, spill_bytes, monkeypatch):
    """At ``scale`` 1/k the windows are blended on the model's grid and each band of rows is up-sampled once: for a
    per-pixel model that is the whole raster reduced k-fold (padded with its edge pixels), the model on it, and its
    probabilities up-sampled k-fold (bilinear, pixel centres aligned) in one go: the same classes to the pixel."""
    monkeypatch.setattr("pointseg.maps.BAND_BLOCK", 8)
    monkeypatch.setattr("pointseg.maps.ROWS_AT_ONCE", 3)  # bands of rows up-sampled in pieces, each with context
    monkeypatch.setattr("pointseg.maps.READ_COLUMNS", 13)  # rows read in pieces of columns on the grid
    raster = write_raster(tmp_path / "scene.tif", height, width, seed=3)
    source = RasterSource([raster], CLASSES)
    model, scaling = PixelModel().eval(), BandScaling.full_range(3)
    predictor = Predictor(model, CLASSES, scaling, scale=scale, mode="area")
    out = tmp_path / "maps"
    result = predict_raster(predictor, source, source.refs[0], MapWriter(out / "map.tif", CLASSES, out / "conf.tif"),
                            Tiling(tile, overlap, 2), progress=False, spill_bytes=spill_bytes)
    k = round(1 / scale)
    whole = source.read(source.refs[0])
    reduced = torch.from_numpy(scaling(model_pixels(whole, scaling, scale, "area", k)))
    assert tuple(reduced.shape[-2:]) == (-(-height // k), -(-width // k))
    probs = predict_logits(model, reduced[None], amp=False).softmax(1)
    full = F.interpolate(probs, scale_factor=k, mode="bilinear", align_corners=False)[0, :, :height, :width]
    with rasterio.open(result.map) as ds, rasterio.open(out / "conf.tif") as cs:
        assert np.array_equal(ds.read(1), full.argmax(0).numpy())
        assert np.abs(cs.read(1).astype(int) - np.rint(full.max(0).values.numpy() * 100)).max() <= 1


def test_rows_move_up_in_place_as_numpy_would_move_them():
    a = np.arange(10)
    shift_up(a, 3)
    assert a.tolist() == [3, 4, 5, 6, 7, 8, 9, 7, 8, 9]  # the rows left behind keep their values
    a = np.arange(10)
    shift_up(a, 2, held=7)  # only rows 2..6 move: in pieces of 2 rows, which do not overlap
    assert a.tolist() == [2, 3, 4, 5, 6, 5, 6, 7, 8, 9]
    b = np.arange(24).reshape(6, 4)
    expected = b.copy()
    expected[:5] = b[1:].copy()
    shift_up(b, 1)
    assert np.array_equal(b, expected)


def test_the_windows_of_a_raster_fall_on_the_grid_of_model_pixels():
    window = {"image": np.arange(5 * 3).reshape(5, 3, 1).astype(np.float32), "valid": np.ones((5, 3), bool)}
    scaling = BandScaling((0.0,), (1.0,))
    reduced = model_pixels(window, scaling, 0.5, "area", 2)[..., 0]  # padded with the edge row and column
    rows = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11], [12, 13, 14], [12, 13, 14]]
    padded = np.array([r + [r[-1]] for r in rows], np.float32)
    assert np.allclose(reduced, padded.reshape(3, 2, 2, 2).mean((1, 3)))
    assert blend_grid(0.5) == 2 and blend_grid(0.25) == 4 and blend_grid(1.0) == 1 and blend_grid(0.3) == 1


def test_the_map_has_the_input_grid_colours_names_and_nodata_where_the_input_has_none(tmp_path):
    landsat = shared_path("data", "geo", "landsat-rgb", "RGB.byte.tif")
    source = RasterSource([landsat], CLASSES)
    out = tmp_path / "maps" / "landsat.tif"
    predict_raster(Predictor(PixelModel().eval(), CLASSES, BandScaling.full_range(3)), source, source.refs[0],
                   MapWriter(out, CLASSES), Tiling(256), progress=False)
    with rasterio.open(landsat) as src, rasterio.open(out) as ds:
        assert (ds.crs, ds.transform, ds.width, ds.height) == (src.crs, src.transform, src.width, src.height)
        assert ds.count == 1 and ds.dtypes == ("uint8",) and ds.nodata == 255 and ds.block_shapes == [(256, 256)]
        assert ds.compression.name.lower() == "deflate"
        assert ds.colormap(1)[1] == (0, 255, 0, 255) and ds.colormap(1)[255][3] == 0
        classes, collar = ds.read(1), src.read_masks().min(0) == 0  # no data in any band
    assert np.all(classes[collar] == 255) and np.all(classes[~collar] < 3), "nodata stays nodata, nothing else"
    assert gdal_category_names(out) == list(CLASSES.names)
    qml = out.with_suffix(".qml").read_text()
    assert 'value="2" color="#ff0000" alpha="255" label="urban &quot;core&quot;"' in qml
    assert not list(out.parent.glob(".*")), "no temporary files left"


def test_alpha_is_nodata_in_the_map(tmp_path):
    path = tmp_path / "rgba.tif"
    rgba = np.full((4, 40, 40), 200, dtype=np.uint8)
    rgba[3, :20] = 0
    with rasterio.open(path, "w", driver="GTiff", width=40, height=40, count=4, dtype="uint8", crs="EPSG:32633",
                       transform=Affine(0.02, 0, 0, 0, -0.02, 0), photometric="RGB", alpha="YES") as dst:
        dst.write(rgba)
    source = RasterSource([path], CLASSES)
    predict_raster(Predictor(PixelModel().eval(), CLASSES, BandScaling.full_range(3)), source, source.refs[0],
                   MapWriter(tmp_path / "m.tif", CLASSES), Tiling(16), progress=False)
    with rasterio.open(tmp_path / "m.tif") as ds:
        m = ds.read(1)
    assert np.all(m[:20] == 255) and np.all(m[20:] < 3)


def test_a_failed_map_leaves_nothing(tmp_path):
    raster = write_raster(tmp_path / "scene.tif", 64, 64)
    source = RasterSource([raster], CLASSES)

    class Broken(PixelModel):
        calls = 0

        def forward(self, x):
            Broken.calls += 1
            if Broken.calls == 3:
                raise RuntimeError("out of memory")
            return super().forward(x)

    with pytest.raises(RuntimeError, match="out of memory"):
        predict_raster(Predictor(Broken().eval(), CLASSES, BandScaling.full_range(3)), source, source.refs[0],
                       MapWriter(tmp_path / "out" / "m.tif", CLASSES), Tiling(16, batch_size=1), progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_window_starts_reach_every_edge_and_the_hann_window_is_positive():
    assert window_starts(100, 32, 16) == [0, 16, 32, 48, 64, 68]
    assert window_starts(20, 32, 16) == [0] and window_starts(32, 32, 16) == [0]
    w = hann(8)
    assert np.all(w > 0) and np.allclose(w, w[::-1]) and w.max() < 1


def test_predict_maps_rasters_from_a_list_and_skips_those_it_cannot_map(tmp_path, capsys):
    run = tmp_path / "run"
    points = tmp_path / "clicks.json"
    enmap = shared_path("data", "geo", "enmap-berlin")
    assert main(["points", "import", "--vector", str(enmap / "landcover_point_singlepart_3035.gpkg"), "--raster",
                 str(enmap / "landcover_map_l2.tif"), "--class-field", "level_2", "--out", str(points)]) == 0
    assert main(["train", "--raster", str(enmap / "landcover_map_l2.tif"), "--points", str(points), "--out", str(run),
                 *[a for s in ["model.name=unet-small", "data.crop=32", "train.batch_size=2", "train.steps=2",
                               "train.amp=false"] for a in ("--set", s)]]) == 0
    three_band = write_raster(tmp_path / "rgb.tif", 30, 30)
    listing = tmp_path / "rasters.txt"
    listing.write_text(f"{enmap / 'landcover_map_l2.tif'}\n{three_band.name}\n")
    out = tmp_path / "maps"
    assert main(["predict", "--run", str(run), "--input", str(listing), "--out", str(out), "--tile", "64",
                 "--confidence"]) == 2
    err = capsys.readouterr().err
    assert "rgb.tif: 3 bands, but the model takes 1 bands" in err and "1 of 2 inputs could not be read" in err
    assert sorted(p.name for p in out.glob("*.tif")) == ["landcover_map_l2.tif", "landcover_map_l2_confidence.tif"]
    first_class = (tmp_path / "clicks.classes.csv").read_text().splitlines()[1].split(",")
    with rasterio.open(out / "landcover_map_l2.tif") as ds:
        assert ds.colormap(1)[0][:3] == tuple(int(c) for c in first_class[2:]), "the class table's colours"


def gdal_category_names(path):
    """The class names GDAL itself reads for band 1 (what QGIS and gdalinfo show), through rasterio's libgdal."""
    import rasterio as rio

    gdal = ctypes.CDLL(glob.glob(rio.__path__[0] + ".libs/libgdal*")[0])
    gdal.GDALAllRegister()
    gdal.GDALOpen.restype, gdal.GDALOpen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
    gdal.GDALGetRasterBand.restype, gdal.GDALGetRasterBand.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_int]
    gdal.GDALGetProjectionRef.restype, gdal.GDALGetProjectionRef.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    gdal.GDALGetRasterCategoryNames.restype = ctypes.POINTER(ctypes.c_char_p)
    gdal.GDALGetRasterCategoryNames.argtypes = [ctypes.c_void_p]
    gdal.GDALClose.argtypes = [ctypes.c_void_p]
    dataset = gdal.GDALOpen(str(path).encode(), 0)
    gdal.GDALGetProjectionRef(dataset)  # GeoTIFFs load their .aux.xml lazily
    names = gdal.GDALGetRasterCategoryNames(gdal.GDALGetRasterBand(dataset, 1))
    out = []
    while names and names[len(out)]:
        out.append(names[len(out)].decode())
    gdal.GDALClose(dataset)
    return out


def test_a_map_cut_short_by_a_file_size_limit_is_an_error_and_leaves_nothing(tmp_path, tiny_run):
    """``ulimit -f``: GDAL's writes fail; the map must not appear under its name and the command must fail."""
    import resource
    import subprocess
    import sys

    landsat = shared_path("data", "geo", "landsat-rgb", "RGB.byte.tif")
    out = tmp_path / "maps"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    done = subprocess.run([sys.executable, "-m", "pointseg", "predict", "--run", str(tiny_run), "--input",
                           str(landsat), "--out", str(out)], capture_output=True, text=True, preexec_fn=limit)
    assert done.returncode == 2, done.stderr
    assert "RGB.byte.tif: could not be written completely" in done.stderr and "Traceback" not in done.stderr
    assert not (out / "RGB.byte.tif").exists() and not list(out.glob(".*")), "no map, no temporary file"


def test_rasters_of_the_same_name_in_different_folders_get_a_map_each(tmp_path, tiny_run, capsys):
    import shutil

    landsat = shared_path("data", "geo", "landsat-rgb", "RGB.byte.tif")
    for folder in ("a", "b"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        shutil.copy(landsat, tmp_path / "in" / folder / "scene.tif")
    listing = tmp_path / "in" / "list.txt"
    listing.write_text("a/scene.tif\nb/scene.tif\n")
    assert main(["predict", "--run", str(tiny_run), "--input", str(listing), "--out", str(tmp_path / "maps")]) == 0
    assert "wrote 2 GeoTIFF maps" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "maps").glob("*.tif")) == ["a_scene.tif", "b_scene.tif"]
    listing.write_text("a/scene.tif\na/../a/scene.tif\n")
    assert main(["predict", "--run", str(tiny_run), "--input", str(listing), "--out", str(tmp_path / "m2")]) == 2
    assert "the same raster is listed more than once" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--tile", "0"], "--tile must be at least 32 model pixels"),
    (["--tile", "7"], "--tile must be at least 32 model pixels"),
    (["--overlap", "1.0"], "--overlap must be in [0, 1), got 1.0"),
    (["--overlap", "-0.5"], "--overlap must be in [0, 1), got -0.5"),
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
])
def test_map_arguments_out_of_range_are_refused_up_front(tmp_path, tiny_run, capsys, flags, message):
    landsat = shared_path("data", "geo", "landsat-rgb", "RGB.byte.tif")
    out = tmp_path / "maps"
    assert main(["predict", "--run", str(tiny_run), "--input", str(landsat), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert f"pointseg: error: {message}" in err and "unreadable" not in err and "skipped" not in err
    assert not out.exists() or not list(out.iterdir())


def test_a_map_the_disk_cannot_hold_is_refused_before_it_is_written(tmp_path, tiny_run, capsys, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    landsat = shared_path("data", "geo", "landsat-rgb", "RGB.byte.tif")
    assert main(["predict", "--run", str(tiny_run), "--input", str(landsat), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "the map of" in err and "needs about 567.9 kB, but only 1.0 kB are free there" in err
    assert not list((tmp_path / "m").glob("*.tif"))


def test_the_temporary_files_of_a_killed_map_go_with_the_next_one(tmp_path, tiny_run):
    landsat = shared_path("data", "geo", "landsat-rgb", "RGB.byte.tif")
    out = tmp_path / "maps"
    out.mkdir()
    stale = [out / ".RGB.byte.tif.k1ll3d.tmp.tif", out / ".RGB.byte.tif.k1ll3d.tmp.tif.strips.tif",
             out / ".RGB.byte_confidence.tif.x.tmp.tif"]
    for path in stale:
        path.write_bytes(b"half a map")
    (out / ".keep-me").write_text("not ours")
    assert main(["predict", "--run", str(tiny_run), "--input", str(landsat), "--out", str(out), "--cog",
                 "--confidence"]) == 0
    assert sorted(p.name for p in out.glob(".*")) == [".keep-me"]
