import os

import numpy as np
import pytest
import torch
from PIL import Image

from pointseg.data.cache import SampleCache, cache_entries, cache_info, clear_cache
from pointseg.data.dataset import TrainDataset, dihedral
from pointseg.data.sources import LoveDA
from pointseg.io import TMP_SUFFIX
from pointseg.points import PointSet


@pytest.fixture
def source(tiny_loveda):
    return LoveDA(tiny_loveda, "Train", ("Rural",))


def test_cache_keeps_full_resolution_and_resizes_with_the_mode_filter(source, tmp_path):
    cache = SampleCache(source, 0.5, tmp_path, mode="area")
    full = cache.full(source.refs[0])
    assert np.array_equal(full["mask"], source.read_mask(source.refs[0]))
    image = np.asarray(full["image"], dtype=np.float64)
    box = image.reshape(32, 2, 32, 2, 3).mean((1, 3))
    assert np.abs(cache.resized(source.refs[0]).astype(np.float64) - box).max() <= 1  # PIL rounds in fixed point
    assert len(list(tmp_path.glob("*.npy"))) == 3


def test_changed_file_is_not_served_stale(source, tmp_path):
    cache = SampleCache(source, 1.0, tmp_path)
    ref = source.refs[0]
    first = np.array(cache.full(ref)["image"])
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(ref.image)
    os.utime(ref.image, ns=(1, 10**18))
    assert cache.full(ref)["image"].sum() == 0 and first.sum() > 0


def test_corrupt_entry_is_rebuilt(source, tmp_path):
    cache = SampleCache(source, 1.0, tmp_path)
    cache.full(source.refs[0])
    next(tmp_path.glob("*.image.npy")).write_bytes(b"truncated")
    assert cache.full(source.refs[0])["image"].shape == (64, 64, 3)


@pytest.mark.parametrize("downsample", ["soft", "nearest"])
def test_train_samples_have_soft_targets_matching_the_image(source, tmp_path, downsample):
    ds = TrainDataset(SampleCache(source, 0.5, tmp_path), crop=16, num_classes=7, downsample=downsample)
    sample = ds[0]
    assert sample["image"].shape == (3, 16, 16) and sample["soft_mask"].shape == (7, 16, 16)
    assert sample["weight"].shape == (16, 16)
    labeled = sample["weight"] > 0
    assert np.allclose(sample["soft_mask"].sum(0)[labeled], 1, atol=1e-5)
    if downsample == "nearest":
        assert set(np.unique(sample["soft_mask"])) <= {0.0, 1.0}


def test_window_larger_than_the_image_is_padded_as_unlabeled(source, tmp_path):
    ds = TrainDataset(SampleCache(source, 1.0, tmp_path), crop=80, num_classes=7)
    weight = ds[0]["weight"]
    assert (weight == 0).sum() >= 80 * 80 - 64 * 64


def test_points_become_counts_and_proportions_in_the_crop(source, tmp_path):
    ref = source.refs[0]
    pts = np.array([[10, 10, 1], [11, 11, 2], [40, 50, 3]])  # the first two fall into one cell at scale 1/4
    points = PointSet([str(i) for i in range(7)], {ref.id: pts}, {ref.id: (64, 64)}, {})
    ds = TrainDataset(SampleCache(source, 0.25, tmp_path), crop=16, num_classes=7, points=points)
    sample = ds[0]
    assert sample["weight"].sum() == 3 and sorted(sample["weight"][sample["weight"] > 0].tolist()) == [1, 2]
    shared = sample["weight"] == 2
    assert sample["soft_mask"][1][shared].item() == 0.5 and sample["soft_mask"][2][shared].item() == 0.5


def test_random_rescale_keeps_labels_aligned(tmp_path):
    # A left/right split image: whatever the window and scale, label proportions follow the image colour.
    from pointseg.data.classes import ClassTable
    from pointseg.data.sources import ImageMaskFolder

    (tmp_path / "d" / "images").mkdir(parents=True)
    (tmp_path / "d" / "masks").mkdir()
    mask = np.zeros((96, 96), dtype=np.uint8)
    mask[:, 41:] = 1
    Image.fromarray(np.stack([mask * 255] * 3, -1)).save(tmp_path / "d" / "images" / "a.png")
    Image.fromarray(mask).save(tmp_path / "d" / "masks" / "a.png")
    table = ClassTable(("dark", "bright"), ((0, 0, 0), (255, 255, 255)))
    source = ImageMaskFolder(tmp_path / "d", table)
    ds = TrainDataset(SampleCache(source, 0.5, tmp_path / "c", mode="area"), crop=24, num_classes=2,
                      rescale=(0.7, 1.4))
    for _ in range(5):
        s = ds[0]
        assert np.allclose(s["image"].mean(0).numpy(), s["soft_mask"][1].numpy(), atol=2 / 255)


def test_dihedral_moves_all_arrays_together():
    a = np.arange(12).reshape(3, 4)
    c = np.stack([a, -a])
    out_a, out_c = dihedral([a, c], 1, True)
    assert np.array_equal(out_c[0], out_a) and np.array_equal(out_c[1], -out_a)


def test_unlabeled_windows_mark_padding_invalid_and_carry_monitoring_masks(source, tmp_path):
    from pointseg.data.dataset import UnlabeledDataset

    tags = {r.id: np.eye(7, dtype=np.float32)[1] for r in source.refs}
    ds = UnlabeledDataset(SampleCache(source, 1.0, tmp_path), crop=80, tags=tags)
    sample = ds[0]
    assert set(sample) == {"image", "valid", "mask", "tags"}
    assert sample["valid"].sum() == 64 * 64
    assert torch.all(sample["mask"][sample["valid"] == 0] == 255)
    assert sample["tags"].tolist() == [0, 1, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="tags missing"):
        UnlabeledDataset(SampleCache(source, 1.0, tmp_path), crop=8, tags={})


def test_unlabeled_images_without_masks_get_ignored_monitoring_masks(tmp_path):
    from pointseg.data.classes import LOVEDA_CLASSES
    from pointseg.data.dataset import UnlabeledDataset
    from pointseg.data.sources import ImageFolder

    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.full((30, 40, 3), 90, dtype=np.uint8)).save(tmp_path / "imgs" / "a.png")
    source = ImageFolder(tmp_path / "imgs", LOVEDA_CLASSES)
    cache = SampleCache(source, 1.0, tmp_path / "c")
    assert set(UnlabeledDataset(cache, crop=16, with_mask=False)[0]) == {"image", "valid"}
    sample = UnlabeledDataset(cache, crop=16, with_mask=True)[0]  # batched with images that have masks
    assert torch.all(sample["mask"] == 255)


def test_a_size_cap_evicts_the_least_recently_used_samples_of_other_runs(source, tmp_path):
    old = SampleCache(source, 1.0, tmp_path)
    for i, ref in enumerate(source.refs[:3]):
        old.full(ref)
        for f in tmp_path.glob(f"{old._key(ref)}.*"):
            os.utime(f, (1000 + i, 1000 + i))  # used long ago, sample 0 first
    per_sample = cache_entries(tmp_path)[0].bytes
    capped = SampleCache(source, 1.0, tmp_path, max_bytes=3 * per_sample)
    capped.full(source.refs[1])  # use marks sample 1 as recent
    capped.full(source.refs[3])  # a fourth sample: over the cap, the least recently used one goes
    left = {e.key for e in cache_entries(tmp_path)}
    assert left == {capped._key(r) for r in (source.refs[1], source.refs[2], source.refs[3])}


def test_a_cap_never_evicts_what_the_run_itself_uses(source, tmp_path, caplog):
    cache = SampleCache(source, 1.0, tmp_path, max_bytes=1)
    arrays = [cache.full(ref)["image"] for ref in source.refs]
    assert len(cache_entries(tmp_path)) == 4 and all(a.shape == (64, 64, 3) for a in arrays)
    assert "over its cap" in caplog.text


def test_clear_removes_only_cache_entries_and_old_temporaries(source, tmp_path):
    tmp_path = tmp_path / "cache"
    SampleCache(source, 0.5, tmp_path).resized(source.refs[0])
    key = cache_entries(tmp_path)[0].key
    stale = tmp_path / f".{key}.image.npy.x1{TMP_SUFFIX}.npy"
    stale.write_bytes(b"killed mid-write")
    os.utime(stale, (1, 1))
    (tmp_path / "mine.npy").write_bytes(b"")
    info = cache_info(tmp_path)
    assert (info["samples"], info["files"], info["temporary_files"]) == (1, 3, 1)
    assert clear_cache(tmp_path)[0] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["mine.npy"]


def test_a_miss_never_deletes_the_entry_another_process_stores_meanwhile(source, tmp_path, monkeypatch):
    writer, reader = SampleCache(source, 1.0, tmp_path), SampleCache(source, 1.0, tmp_path)
    ref = source.refs[0]
    real_load = np.load

    def load_then_other_process_stores(path, *args, **kwargs):
        try:
            return real_load(path, *args, **kwargs)
        finally:  # between the reader's failed look-up and what it does next, the writer finishes the entry
            if str(path).endswith(".image.npy") and not os.path.exists(path):
                monkeypatch.setattr("pointseg.data.cache.np.load", real_load)
                writer.full(ref)

    monkeypatch.setattr("pointseg.data.cache.np.load", load_then_other_process_stores)
    assert reader._load(tmp_path / f"{reader._key(ref)}.image.npy") is None
    assert (tmp_path / f"{reader._key(ref)}.image.npy").exists(), "the writer's entry survives the reader's miss"


def test_a_stored_array_stays_readable_when_another_process_evicts_it_at_once(source, tmp_path, monkeypatch):
    real_replace = os.replace

    def replace_then_evicted(src, dst):
        real_replace(src, dst)
        if str(dst).endswith(".image.npy"):
            os.unlink(dst)  # another process's eviction (or cache clear) right after the rename

    monkeypatch.setattr("pointseg.io.os.replace", replace_then_evicted)
    image = SampleCache(source, 1.0, tmp_path).full(source.refs[0])["image"]
    monkeypatch.undo()
    assert np.array_equal(image, source.read(source.refs[0])["image"])
