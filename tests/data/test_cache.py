import os

import numpy as np
from PIL import Image

from pointseg.data.cache import ResizedCache
from pointseg.data.dataset import TrainDataset
from pointseg.data.sources import LoveDA


def test_cache_resizes_and_keeps_full_resolution_mask(tiny_loveda, tmp_path):
    source = LoveDA(tiny_loveda, "Train", ("Rural",))
    entry = ResizedCache(source, 0.5, tmp_path).get(source.refs[0])
    assert entry["image"].shape == (32, 32, 3) and entry["mask_lr"].shape == (32, 32)
    assert np.array_equal(entry["mask"], source.read_mask(source.refs[0]))
    assert np.array_equal(entry["mask_lr"], entry["mask"][::2, ::2]), "nearest resize of 16-px blocks"
    assert len(list(tmp_path.glob("*.npz"))) == 1


def test_changed_file_is_not_served_stale(tiny_loveda, tmp_path):
    source = LoveDA(tiny_loveda, "Train", ("Rural",))
    cache = ResizedCache(source, 1.0, tmp_path)
    ref = source.refs[0]
    first = cache.get(ref)["image"].copy()
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(ref.image)
    os.utime(ref.image, ns=(1, 10**18))
    assert cache.get(ref)["image"].sum() == 0 and first.sum() > 0


def test_corrupt_entry_is_rebuilt(tiny_loveda, tmp_path):
    source = LoveDA(tiny_loveda, "Train", ("Rural",))
    cache = ResizedCache(source, 1.0, tmp_path)
    cache.get(source.refs[0])
    entry = next(tmp_path.glob("*.npz"))
    entry.write_bytes(b"truncated")
    assert cache.get(source.refs[0])["image"].shape == (64, 64, 3)


def test_train_samples_are_crops_with_matching_labels(tiny_loveda, tmp_path):
    source = LoveDA(tiny_loveda, "Train", ("Rural",))
    ds = TrainDataset(ResizedCache(source, 1.0, tmp_path), crop=80)  # larger than the image: padded
    sample = ds[0]
    assert sample["image"].shape == (3, 80, 80) and sample["mask"].shape == (80, 80)
    assert (sample["mask"] == 255).sum() >= 80 * 80 - 64 * 64
