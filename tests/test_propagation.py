"""Click propagation: spread within the click's superpixel, capped, clashes unlabeled, cached, and trained on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pointseg.cli import main
from pointseg.data.bands import BandScaling
from pointseg.data.classes import ClassTable
from pointseg.data.dataset import TrainDataset, Windows, combine_targets
from pointseg.data.points import PointSet
from pointseg.data.sources import ImageMaskFolder
from pointseg.losses import soft_cross_entropy
from pointseg.propagation import (
    BLOCK,
    BlockMask,
    Propagation,
    click_region,
    propagate,
    propagated_labels,
    propagation_quality,
)

IGNORE = 255
CLASSES = ClassTable(("dark", "light", "red"), ((0, 0, 0), (255, 255, 255), (255, 0, 0)))


def halves(size: int = 48) -> np.ndarray:
    """An RGB image: black left half, white right half."""
    image = np.zeros((size, size, 3), dtype=np.uint8)
    image[:, size // 2:] = 255
    return image


def write_folder(root, image: np.ndarray, mask: np.ndarray):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(image).save(root / "images" / "a.png")
    Image.fromarray(mask).save(root / "masks" / "a.png")
    return ImageMaskFolder(root, CLASSES)


def test_a_click_spreads_within_its_colour_region_only():
    image = halves().astype(np.float32) / 255
    spread = Propagation(scale=1.0, superpixel_size=24, compactness=0.1, max_pixels=10**6)
    region = click_region(image, 20, 5, spread)
    assert region[20, 5]
    assert not region[:, 24:].any()  # never across the colour edge
    assert region.sum() >= 24 * 24 * 0.8  # a superpixel of about 24 x 24 pixels


def test_the_spread_is_capped_at_the_nearest_pixels():
    image = halves().astype(np.float32) / 255
    spread = Propagation(scale=1.0, superpixel_size=24, compactness=0.1, max_pixels=13)
    region = click_region(image, 20, 5, spread)
    assert region.sum() == 13
    rows, cols = np.nonzero(region)
    assert ((rows - 20) ** 2 + (cols - 5) ** 2).max() <= 4  # the 13 pixels within distance 2 of the click


def test_clashing_clicks_leave_their_overlap_unlabeled(tmp_path):
    source = write_folder(tmp_path / "d", halves(), np.zeros((48, 48), np.uint8))
    spread = Propagation(scale=1.0, superpixel_size=24, compactness=0.1, max_pixels=10**6, patch=48)
    points = np.array([[10, 5, 0], [12, 8, 2], [20, 40, 1]])  # two classes in one dark superpixel, one in the light
    out = np.asarray(propagate(source, source.refs[0], points, spread, BandScaling.full_range(3), 3, IGNORE))
    assert out[10, 5] == 0 and out[12, 8] == 2 and out[20, 40] == 1  # clicks keep their class
    dark = out[:, :24]
    assert set(np.unique(dark)) == {0, 2, IGNORE}  # the superpixel both reach: unlabeled but for the clicks
    assert (dark != IGNORE).sum() == 2
    assert (out[:, 24:] == 1).sum() > 400


def test_propagation_is_cached_and_scored_against_the_mask(tmp_path):
    mask = np.zeros((48, 48), np.uint8)
    mask[:, 24:] = 1
    mask[:4, :4] = 2  # a corner the dark click's spread reaches but whose truth is another class
    source = write_folder(tmp_path / "d", halves(), mask)
    points = PointSet(list(CLASSES.names), {"a": np.array([[20, 10, 0], [20, 40, 1]])}, {"a": (48, 48)}, {})
    spread = Propagation(scale=1.0, superpixel_size=24, compactness=0.1, max_pixels=10**6, patch=48)
    cache = tmp_path / "cache"
    masks = propagated_labels(source, points, spread, BandScaling.full_range(3), cache, progress=False)
    [stored] = list(cache.glob("*.propagated-blocks.npy"))
    first = stored.stat().st_mtime_ns
    again = propagated_labels(source, points, spread, BandScaling.full_range(3), cache, progress=False)
    assert stored.stat().st_mtime_ns == first and np.array_equal(np.asarray(masks["a"]), np.asarray(again["a"]))
    quality = propagation_quality(masks, source, 3)
    spread_dark = np.asarray(masks["a"]) == 0
    assert quality["pixels"][0] == spread_dark.sum()
    assert quality["correct"][0] == (spread_dark & (mask == 0)).sum()
    assert quality["correct"][0] < quality["pixels"][0]  # the red corner is counted wrong
    assert quality["pixels"][2] == 0


def test_combined_targets_keep_the_click_and_add_the_spread_at_its_weight():
    soft_click = np.zeros((3, 2, 2), np.float32)
    soft_click[1, 0, 0] = 1
    weight_click = np.array([[1, 0], [0, 0]], np.float32)
    soft_spread = np.zeros((3, 2, 2), np.float32)
    soft_spread[1, 0, 0] = soft_spread[1, 0, 1] = soft_spread[2, 1, 1] = 1
    weight_spread = 0.5 * np.array([[1, 1], [0, 1]], np.float32)
    soft, weight = combine_targets(soft_click, weight_click, soft_spread, weight_spread)
    assert weight.tolist() == [[1.5, 0.5], [0.0, 0.5]]
    assert soft[:, 0, 0].tolist() == [0, 1, 0] and soft[:, 0, 1].tolist() == [0, 1, 0]
    assert soft[:, 1, 1].tolist() == [0, 0, 1] and soft[:, 1, 0].tolist() == [0, 0, 0]


def test_training_targets_with_propagation_weigh_spread_pixels_below_clicks(tmp_path):
    source = write_folder(tmp_path / "d", halves(32), np.zeros((32, 32), np.uint8))
    points = PointSet(list(CLASSES.names), {"a": np.array([[16, 8, 0], [16, 24, 1]])}, {"a": (32, 32)}, {})
    spread = Propagation(scale=1.0, superpixel_size=16, compactness=0.1, max_pixels=10**6, patch=32)
    masks = propagated_labels(source, points, spread, BandScaling.full_range(3), tmp_path / "c", progress=False)
    plain = TrainDataset(source, 3, Windows(32, 1.0, "area"), points)
    spread_set = TrainDataset(source, 3, Windows(32, 1.0, "area", propagate_weight=0.25), points,
                               propagated=masks)
    a, b = plain[(0, (7,))], spread_set[(0, (7,))]  # the same window and turn
    assert torch.equal(a["image"], b["image"])
    assert a["weight"].sum() == 2
    clicks = a["weight"] > 0
    assert torch.equal(b["weight"][clicks], torch.full((2,), 1.25))  # a click plus its own spread pixel
    assert set(b["weight"][~clicks].unique().tolist()) == {0.0, 0.25}
    assert (b["weight"] == 0.25).sum() > 300
    # the loss is a weighted mean over clicks and spread pixels: with the spread's weight 0 it is the clicks' loss
    logits = torch.randn(1, 3, 32, 32)
    tiny = Windows(32, 1.0, "area", propagate_weight=1e-30)
    zero = TrainDataset(source, 3, tiny, points, propagated=masks)[(0, (7,))]
    assert soft_cross_entropy(logits, zero["soft_mask"][None], zero["weight"][None]).item() == pytest.approx(
        soft_cross_entropy(logits, a["soft_mask"][None], a["weight"][None]).item(), rel=1e-5)


def test_train_with_propagation_end_to_end(tmp_path, tiny_loveda, tiny_overrides):
    points = tmp_path / "p.json"
    assert main(["points", "simulate", "--data-root", str(tiny_loveda), "--split", "Train", "--per-image", "5",
                 "--out", str(points)]) == 0
    sets = [a for o in [*tiny_overrides, "labels.propagate=superpixel", "labels.superpixel_size=8",
                        "labels.propagate_patch=32", "loss.pairwise_weight=0.5", "loss.pairwise_warmup=2"]
            for a in ("--set", o)]
    assert main(["train", "--data-root", str(tiny_loveda), "--points", str(points), "--out", str(tmp_path / "r"),
                 *sets]) == 0
    assert len(list((tmp_path / "cache").glob("*.propagated-blocks.npy"))) == 4
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert all("loss_pairwise" in line for line in lines)


def test_clicks_on_a_raster_spread_by_windows_and_never_onto_nodata(tmp_path):
    from pointseg.data.raster import RasterSource
    from tests.conftest import shared_path

    landsat = shared_path("data", "geo", "landsat-rgb", "RGB.byte.tif")  # nodata 0 around the scene
    source = RasterSource([landsat], CLASSES)
    ref = source.refs[0]
    points = PointSet(list(CLASSES.names), {ref.id: np.array([[360, 400, 1], [5, 5, 0]])}, {ref.id: (718, 791)}, {})
    spread = Propagation(scale=1.0, superpixel_size=8, max_pixels=64, patch=32)
    masks = propagated_labels(source, points, spread, BandScaling.full_range(3), tmp_path / "c", progress=False)
    labels = np.asarray(masks[ref.id])
    valid = source.read(ref)["valid"]
    assert 1 < (labels == 1).sum() <= 64 and (labels == 0).sum() == 1  # the corner click is on nodata: no spread
    assert (labels[~valid] != IGNORE).sum() == 1  # outside the data: the corner click itself, nothing spread
    rows, cols = np.nonzero(labels == 1)
    assert max(abs(rows - 360).max(), abs(cols - 400).max()) <= 16  # within the click's window


def test_a_block_mask_reads_and_writes_like_the_dense_array():
    rng = np.random.default_rng(0)
    shape = (3 * BLOCK + 17, 2 * BLOCK + 5)
    dense, blocks = np.full(shape, IGNORE, np.uint8), BlockMask(shape, IGNORE)
    for _ in range(20):
        h, w = rng.integers(1, BLOCK + 40, 2)
        top, left = rng.integers(0, shape[0] - h), rng.integers(0, shape[1] - w)
        values = rng.choice([0, 1, IGNORE], size=(h, w)).astype(np.uint8)
        dense[top:top + h, left:left + w] = values
        blocks.put(int(top), int(left), values)
    assert np.array_equal(np.asarray(blocks), dense)
    for top, left, side in [(0, 0, 5), (BLOCK - 3, BLOCK - 3, 9), (shape[0] - 4, shape[1] - 4, 10), (400, 100, 300)]:
        assert np.array_equal(blocks[top:top + side, left:left + side], dense[top:top + side, left:left + side])
    empty = BlockMask(shape, IGNORE)
    empty.put(5, 5, np.full((300, 300), IGNORE, np.uint8))
    assert empty.nbytes == 0, "windows without labels allocate nothing"


def test_clicks_on_a_huge_sparse_raster_store_only_their_neighbourhoods(tmp_path):
    """A 20000 x 20000 GeoTIFF of a few kilobytes (sparse blocks): its clicks' propagation keeps a few blocks, not
    a 400 MB mask, and the cache stays under its cap."""
    import rasterio
    from affine import Affine

    from pointseg.data.raster import RasterSource

    path = tmp_path / "sparse.tif"
    with rasterio.open(path, "w", driver="GTiff", width=20000, height=20000, count=3, dtype="uint8", tiled=True,
                       compress="deflate", crs="EPSG:32633", transform=Affine(0.5, 0, 0, 0, -0.5, 0),
                       sparse_ok=True) as dst:
        dst.write(np.full((3, 256, 256), 200, np.uint8), window=rasterio.windows.Window(9984, 9984, 256, 256))
    assert path.stat().st_size < 100_000
    source = RasterSource([path], CLASSES)
    ref = source.refs[0]
    points = PointSet(list(CLASSES.names), {ref.id: np.array([[10000, 10000, 1], [15000, 300, 0]])},
                      {ref.id: (20000, 20000)}, {})
    cache = tmp_path / "cache"
    masks = propagated_labels(source, points, Propagation(scale=0.5), BandScaling.full_range(3), cache,
                              progress=False, max_bytes=10**6)
    mask = masks[ref.id]
    assert mask.shape == (20000, 20000) and mask[10000, 10000].item() == 1 and mask[15000, 300].item() == 0
    assert sum(f.stat().st_size for f in cache.iterdir()) < 10**6


def test_a_run_whose_cache_exceeds_its_cap_is_refused_before_anything_is_written(tmp_path, tiny_loveda,
                                                                                  tiny_overrides, capsys):
    # a cap of 10 kB; the run keeps 4 tiles of 64 x 64 x (3 bands + a mask)
    sets = [a for o in [*tiny_overrides, "data.cache_max_gb=0.00001"] for a in ("--set", o)]
    assert main(["train", "--data-root", str(tiny_loveda), "--out", str(tmp_path / "run"), *sets]) == 2
    err = capsys.readouterr().err
    assert "needs about 65.5 kB, over data.cache_max_gb=1e-05; raise it (--set data.cache_max_gb=N)" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_clicks_on_a_float_raster_with_nan_nodata_spread_without_error(tmp_path):
    import rasterio
    from affine import Affine

    from pointseg.data.raster import RasterSource

    path = tmp_path / "float.tif"
    image = np.zeros((3, 64, 64), np.float32)
    image[:, :, 32:] = 1.0
    image[:, :8, :] = np.nan  # nodata rows
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="float32", nodata=np.nan,
                       crs="EPSG:32633", transform=Affine(10, 0, 0, 0, -10, 0)) as dst:
        dst.write(image)
    source = RasterSource([path], CLASSES)
    ref = source.refs[0]
    points = PointSet(list(CLASSES.names), {ref.id: np.array([[20, 10, 0], [20, 50, 1], [2, 2, 2]])},
                      {ref.id: (64, 64)}, {})
    scaling = BandScaling((0.0,) * 3, (1.0,) * 3)
    masks = propagated_labels(source, points, Propagation(scale=1.0, superpixel_size=16, compactness=0.1, patch=48),
                              scaling, tmp_path / "c", progress=False)
    labels = np.asarray(masks[ref.id])
    assert (labels[8:, :32] == 0).sum() > 20 and (labels[8:, 32:] == 1).sum() > 20
    assert (labels[:8] != IGNORE).sum() == 1, "nothing spreads onto NaN nodata; the click itself keeps its class"


def test_each_clicks_region_is_computed_once_per_process_and_added_clicks_only_are_new(tmp_path):
    from pointseg import propagation
    from pointseg.data.raster import RasterSource
    from tests.conftest import shared_path

    landsat = shared_path("data", "geo", "landsat-rgb", "RGB.byte.tif")
    source = RasterSource([landsat], CLASSES)
    ref = source.refs[0]
    spread = Propagation(scale=1.0, superpixel_size=8, max_pixels=64, patch=32)
    points = np.array([[360, 400, 1], [370, 410, 0], [200, 300, 2], [500, 500, 1]])
    scaling = BandScaling.full_range(3)
    propagation.REGIONS.items.clear()
    fresh = np.asarray(propagate(source, ref, points, spread, scaling, 3, IGNORE))
    propagation.REGIONS.items.clear()
    first = np.asarray(propagate(source, ref, points[:3], spread, scaling, 3, IGNORE))
    assert len(propagation.REGIONS.items) == 3
    again = np.asarray(propagate(source, ref, points, spread, scaling, 3, IGNORE))  # three regions remembered
    assert len(propagation.REGIONS.items) == 4 and np.array_equal(again, fresh) and not np.array_equal(again, first)
    other_bands = RasterSource([landsat], CLASSES, bands=[3, 2, 1])  # other bands: other regions
    propagate(other_bands, other_bands.refs[0], points[:1], spread, scaling, 3, IGNORE)
    assert len(propagation.REGIONS.items) == 5
