"""The app's imagery tiles: the raster's own pixel grid, a stretch from sampled windows, overviews built into the
project folder and used once they exist."""

from __future__ import annotations

import io

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
    tiles = ImageTiles(raster, tmp_path / "overviews")
    before = rgba(tiles.tile(0, 0, 0))
    assert tiles.source == raster and before.shape == (TILE, TILE, 4) and (before[..., 3] == 255).all()
    assert before[128, 40, 0] > 200 and before[128, 215, 1] > 200  # red left, green right after the stretch
    assert tiles.build_overviews() == tmp_path / "overviews" / "scene.vrt"
    assert (tmp_path / "overviews" / "scene.vrt.ovr").exists() and tiles.source.suffix == ".vrt"
    with rasterio.open(tiles.source) as ds:
        assert ds.overviews(1) == [2, 4, 8]
    after = rgba(tiles.tile(0, 0, 0))
    assert after[128, 40, 0] > 200 and after[128, 215, 1] > 200  # the same picture, from the overviews
    assert after[..., :3].std() < before[..., :3].std()  # averaged (the texture smooths), not sampled
    assert ImageTiles(raster, tmp_path / "overviews").source.suffix == ".vrt"  # a reopened project uses them
    assert sorted(p.name for p in (tmp_path / "overviews").iterdir()) == ["scene.vrt", "scene.vrt.ovr"]


def test_a_raster_with_overviews_is_read_as_it_is(tmp_path):
    raster = write(tmp_path / "scene.tif", 1024, overviews=True)
    tiles = ImageTiles(raster, tmp_path / "overviews")
    assert tiles.build_overviews() is None and tiles.source == raster
