import numpy as np
import pytest
from PIL import Image

from pointseg.data.bands import BandScaling, band_statistics
from pointseg.data.classes import ClassTable
from pointseg.data.dataset import TrainDataset, Windows
from pointseg.data.labels import resize_image
from pointseg.data.raster import RasterSource
from tests.conftest import shared_path

S2 = ("sentinel2-strzegom", "images", "strzegom_20210619_33u.tif")


def test_the_uint8_range_is_the_classic_division_by_255():
    image = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    out = BandScaling.full_range(3)(image)
    assert out.dtype == np.float32 and out.shape == (3, 5, 6)
    assert np.array_equal(out, image.transpose(2, 0, 1).astype(np.float32) / np.float32(255))


def test_scaling_maps_low_high_to_zero_one_and_clips():
    scaling = BandScaling((100.0, 0.0), (300.0, 10.0))
    out = scaling(np.array([[[100, 5], [200, 10], [400, -3]]], dtype=np.float32))  # (1, 3, 2)
    assert out[0].tolist() == [[0.0, 0.5, 1.0]] and out[1].tolist() == [[0.5, 1.0, 0.0]]
    assert BandScaling.from_dict(scaling.to_dict()) == scaling
    with pytest.raises(ValueError, match="2 bands"):
        scaling(np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="low < high"):
        BandScaling((1.0,), (1.0,))


def test_sentinel2_statistics_are_percentiles_of_sampled_windows():
    source = RasterSource([shared_path("data", "geo", *S2)], ClassTable(("a",), ((0, 0, 0),)))
    scaling = band_statistics(source, windows=4, side=401, seed=0)  # the whole 401x401 scene, 4 times
    full = source.read(source.refs[0])["image"].reshape(-1, 10).astype(np.float64)
    assert np.allclose(scaling.low, np.percentile(full, 2, axis=0)) and np.allclose(scaling.high,
                                                                                    np.percentile(full, 98, axis=0))
    assert band_statistics(source, windows=3, side=64, seed=1) == band_statistics(source, windows=3, side=64, seed=1)


def test_multiband_and_uint16_images_resize_band_by_band_in_float():
    image = np.random.default_rng(1).integers(0, 4000, (20, 30, 4), dtype=np.uint16)
    out = resize_image(image, (10, 15), "area")
    assert out.shape == (10, 15, 4) and out.dtype == np.float32
    band = np.asarray(Image.fromarray(image[..., 2].astype(np.float32), mode="F").resize((15, 10), Image.BOX))
    assert np.array_equal(out[..., 2], band)
    assert np.allclose(out.mean((0, 1)), image.mean((0, 1)), rtol=1e-4)  # a box filter keeps the mean


def test_raster_training_samples_have_every_band_scaled_and_nodata_unlabeled(tmp_path):
    root = shared_path("data", "geo", "sentinel2-strzegom")
    table = ClassTable.from_csv(_s2_table(tmp_path), color_coded=False)
    source = RasterSource([root / "images" / S2[2]], table, masks=[root / "masks" / S2[2]])
    scaling = band_statistics(source, windows=8, side=128)
    ds = TrainDataset(source, 10, Windows(crop=32, scale=1.0), scaling=scaling)
    sample = ds[(0, (1, 2, 3))]
    assert sample["image"].shape == (10, 32, 32) and 0 <= sample["image"].min() and sample["image"].max() <= 1
    window = source.read(source.refs[0])
    unlabeled_share = (window["mask"] == 255).mean()
    assert 0.5 < unlabeled_share < 0.9, "about 70% of the scene is unlabeled"
    shares = [float((ds[(0, (1, i, 0))]["weight"] == 0).float().mean()) for i in range(8)]
    assert 0.3 < np.mean(shares) < 0.95


def _s2_table(tmp_path):
    path = tmp_path / "s2.csv"
    path.write_text("value,name,r,g,b\n" + "\n".join(f"{v},c{v},{v * 20},0,0" for v in range(1, 11)) + "\n")
    return path


def test_band_statistics_are_stored_once_and_read_back_exactly(tmp_path, monkeypatch):
    from pointseg.data.bands import stored_band_statistics

    s2 = shared_path("data", "geo", "sentinel2-strzegom", "images", "strzegom_20220719_33u.tif")
    source = RasterSource([s2], ClassTable(("a",), ((0, 0, 0),)))
    computed = stored_band_statistics(source, tmp_path, seed=3)
    assert computed == band_statistics(source, seed=3)
    assert len(list(tmp_path.glob("*.band-statistics.npy"))) == 1
    monkeypatch.setattr(RasterSource, "read", lambda *a, **k: pytest.fail("the stored statistics are read back"))
    assert stored_band_statistics(source, tmp_path, seed=3) == computed  # exactly, float64 on disk
    other_bands = RasterSource([s2], ClassTable(("a",), ((0, 0, 0),)), [3, 2, 1])
    monkeypatch.undo()
    assert stored_band_statistics(other_bands, tmp_path, seed=3).bands == 3  # another key
    assert len(list(tmp_path.glob("*.band-statistics.npy"))) == 2
