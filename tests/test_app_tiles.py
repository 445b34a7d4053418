"""The app's imagery tiles: the raster's own pixel grid, a stretch from sampled windows, overviews built into the
project folder and used once they exist, a VRT mosaic of several rasters shown and mapped like one raster."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.enums import Resampling
from rasterio.transform import from_origin

from pointseg.app.tiles import TILE, ImageTiles, tile_window, zoom_levels


def write(path, size=2048, overviews=False):
    rng = np.random.default_rng(0)
    data = np.zeros((3, size, size), dtype=np.uint8)
    data[0, :, : size // 2] = 200
    data[1, :, size // 2:] = 150
    data = np.clip(data + rng.integers(0, 30, data.shape), 0, 255).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", tiled=True,
                       blockxsize=256, blockysize=256, crs="EPSG:32633", transform=from_origin(0, 0, 1, -1)) as ds:
        ds.write(data)
        if overviews:
            ds.build_overviews([2, 4, 8], Resampling.average)
    return path


def rgba(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


def test_tiles_cover_the_raster_in_its_own_grid():
    assert zoom_levels(256, 256) == 0 and zoom_levels(2048, 1000) == 3
    assert tile_window(3, 1, 0, (2048, 1000)) == ((0, 256, 256, 256), 1)
    assert tile_window(0, 0, 0, (2048, 1000)) == ((0, 0, 2048, 1000), 8)
    assert tile_window(3, 3, 0, (2048, 1000)) == ((0, 768, 256, 232), 1)  # clipped at the edge
    for z, x, y in ((4, 0, 0), (3, 4, 0), (1, 1, 0), (0, -1, 0)):
        with pytest.raises(ValueError):
            tile_window(z, x, y, (2048, 1000))


def test_overviews_are_built_into_the_project_and_used(tmp_path):
    raster = write(tmp_path / "scene.tif")
    tiles = ImageTiles(raster, tmp_path / "overviews" / "scene.vrt")
    before = rgba(tiles.tile(0, 0, 0))
    assert tiles.source == raster and before.shape == (TILE, TILE, 4) and (before[..., 3] == 255).all()
    assert before[128, 40, 0] > 200 and before[128, 215, 1] > 200  # red left, green right after the stretch
    t0 = time.monotonic()  # built once the page has had no tile for `quiet` seconds: the first view first
    with ThreadPoolExecutor(1) as thread:  # a thread of its own (it lowers its own priority)
        assert thread.submit(tiles.build_overviews_later, 0.5).result() == tmp_path / "overviews" / "scene.vrt"
    assert time.monotonic() - t0 >= 0.5 - (t0 - tiles.last_tile)
    assert (tmp_path / "overviews" / "scene.vrt.ovr").exists() and tiles.source.suffix == ".vrt"
    with rasterio.open(tiles.source) as ds:
        assert ds.overviews(1) == [2, 4, 8]
    after = rgba(tiles.tile(0, 0, 0))
    assert after[128, 40, 0] > 200 and after[128, 215, 1] > 200  # the same picture, from the overviews
    assert after[..., :3].std() < before[..., :3].std()  # averaged (the texture smooths), not sampled
    reopened = ImageTiles(raster, tmp_path / "overviews" / "scene.vrt")
    assert reopened.source.suffix == ".vrt"  # a reopened project uses them
    assert sorted(p.name for p in (tmp_path / "overviews").iterdir()) == ["scene.vrt", "scene.vrt.ovr"]


def test_a_raster_with_overviews_is_read_as_it_is(tmp_path):
    raster = write(tmp_path / "scene.tif", 1024, overviews=True)
    tiles = ImageTiles(raster, tmp_path / "overviews" / "scene.vrt")
    assert tiles.build_overviews() is None and tiles.source == raster


def mosaic(tmp_path, data: np.ndarray) -> tuple:
    """``data`` (3, H, W) as one GeoTIFF, and as a VRT over its left and right halves written as two GeoTIFFs."""
    height, width = data.shape[1:]
    profile = {"driver": "GTiff", "height": height, "count": 3, "dtype": "uint8", "crs": "EPSG:32633"}
    with rasterio.open(tmp_path / "whole.tif", "w", width=width, transform=from_origin(500000, 5600000, 10, 10),
                       **profile) as ds:
        ds.write(data)
    half = width // 2
    sources = []
    for name, left in (("left", 0), ("right", half)):
        with rasterio.open(tmp_path / f"{name}.tif", "w", width=half,
                           transform=from_origin(500000 + 10 * left, 5600000, 10, 10), **profile) as ds:
            ds.write(data[:, :, left:left + half])
        sources.append((name, left))
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}">' + "".join(
            f'<SimpleSource><SourceFilename relativeToVRT="1">{name}.tif</SourceFilename><SourceBand>{b}'
            f'</SourceBand><SrcRect xOff="0" yOff="0" xSize="{half}" ySize="{height}"/><DstRect xOff="{left}" '
            f'yOff="0" xSize="{half}" ySize="{height}"/></SimpleSource>' for name, left in sources)
        + "</VRTRasterBand>" for b in (1, 2, 3))
    with rasterio.open(tmp_path / "whole.tif") as ds:
        srs = ds.crs.to_wkt()
    (tmp_path / "mosaic.vrt").write_text(
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>{srs}</SRS>'
        f"<GeoTransform>500000, 10, 0, 5600000, 0, -10</GeoTransform>{bands}</VRTDataset>")
    return tmp_path / "whole.tif", tmp_path / "mosaic.vrt"


def test_a_vrt_mosaic_is_shown_and_mapped_like_one_raster(tmp_path):
    from fastapi.testclient import TestClient

    from pointseg.app.project import Project
    from pointseg.app.server import create_app
    from pointseg.app.session import Session

    rng = np.random.default_rng(0)
    data = rng.integers(0, 60, (3, 300, 512)).astype(np.uint8)
    data[0, :, :200] += 180  # red on the left, across the seam of the two halves at column 256
    data[1, :, 200:] += 160
    whole, vrt = mosaic(tmp_path, data)
    assert rgba(ImageTiles(vrt).tile(1, 1, 0)).tolist() == rgba(ImageTiles(whole).tile(1, 1, 0)).tolist()
    project = Project.create(tmp_path / "project", {"mosaic": {"height": 300, "width": 512}},
                             [{"name": "red"}, {"name": "green"}], {"rasters": [str(vrt)]},
                             {"model": {"encoder_weights": None}, "data": {"cache_dir": str(tmp_path / "cache"),
                                                                           "scale": 1.0}, "fast": {"folds": 0}})
    client = TestClient(create_app(project, "t", session=Session(project, project.info["settings"])),
                        base_url="http://127.0.0.1:8765", headers={"authorization": "Bearer t"})
    for row, col, cls in ((50, 20, 0), (250, 150, 0), (50, 300, 1), (250, 480, 1)):
        assert client.post("/api/clicks", json={"image": "mosaic", "row": row, "col": col, "class": cls}
                           ).status_code == 201
    assert client.post("/api/update").status_code == 200
    with rasterio.open(io.BytesIO(client.get("/api/export/map.tif").content)) as ds:
        classes = ds.read(1)
        assert ds.transform == from_origin(500000, 5600000, 10, 10) and ds.crs.to_epsg() == 32633
    assert (classes[:, 20:180] == 0).mean() > 0.95 and (classes[:, 220:] == 1).mean() > 0.95
