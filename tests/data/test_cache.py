import os

import numpy as np
import pytest
from PIL import Image

from pointseg.data.cache import CachedSource, cache_entries, cache_info, clear_cache
from pointseg.data.sources import LoveDA
from pointseg.io import TMP_SUFFIX


@pytest.fixture
def source(tiny_loveda):
    return LoveDA(tiny_loveda, "Train", ("Rural",))


def test_a_cached_source_reads_what_its_source_reads_whole_and_by_window(source, tmp_path):
    cache = CachedSource(source, tmp_path)
    ref = source.refs[0]
    for window in (None, (5, 7, 20, 30), (50, 60, 30, 30)):  # the last reaches past the 64x64 image: clipped
        cached, direct = cache.read(ref, window), source.read(ref, window)
        assert cached.keys() == direct.keys() == {"image", "mask"}
        assert all(np.array_equal(cached[k], direct[k]) for k in cached)
    assert cache.read(ref, (50, 60, 30, 30))["image"].shape == (14, 4, 3)
    assert np.array_equal(cache.read_mask(ref), source.read_mask(ref))
    assert cache.size(ref) == (64, 64) and cache.georef(ref) is None
    assert sorted(p.name.split(".", 1)[1] for p in tmp_path.glob("*.npy")) == ["image.npy", "mask.npy"]


def test_changed_file_is_not_served_stale(source, tmp_path):
    cache = CachedSource(source, tmp_path)
    ref = source.refs[0]
    first = np.array(cache.full(ref)["image"])
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(ref.image)
    os.utime(ref.image, ns=(1, 10**18))
    assert cache.full(ref)["image"].sum() == 0 and first.sum() > 0


def test_corrupt_entry_is_rebuilt(source, tmp_path):
    cache = CachedSource(source, tmp_path)
    cache.full(source.refs[0])
    next(tmp_path.glob("*.image.npy")).write_bytes(b"truncated")
    assert cache.full(source.refs[0])["image"].shape == (64, 64, 3)


def test_a_size_cap_evicts_the_least_recently_used_samples_of_other_runs(source, tmp_path):
    old = CachedSource(source, tmp_path)
    for i, ref in enumerate(source.refs[:3]):
        old.full(ref)
        for f in tmp_path.glob(f"{old._key(ref)}.*"):
            os.utime(f, (1000 + i, 1000 + i))  # used long ago, sample 0 first
    per_sample = cache_entries(tmp_path)[0].bytes
    capped = CachedSource(source, tmp_path, max_bytes=3 * per_sample)
    capped.full(source.refs[1])  # use marks sample 1 as recent
    capped.full(source.refs[3])  # a fourth sample: over the cap, the least recently used one goes
    left = {e.key for e in cache_entries(tmp_path)}
    assert left == {capped._key(r) for r in (source.refs[1], source.refs[2], source.refs[3])}


def test_a_cap_never_evicts_what_the_run_itself_uses(source, tmp_path, caplog):
    cache = CachedSource(source, tmp_path, max_bytes=1)
    arrays = [cache.full(ref)["image"] for ref in source.refs]
    assert len(cache_entries(tmp_path)) == 4 and all(a.shape == (64, 64, 3) for a in arrays)
    assert "over its cap" in caplog.text


def test_clear_removes_only_cache_entries_and_old_temporaries(source, tmp_path):
    tmp_path = tmp_path / "cache"
    CachedSource(source, tmp_path).full(source.refs[0])
    key = cache_entries(tmp_path)[0].key
    stale = tmp_path / f".{key}.image.npy.x1{TMP_SUFFIX}.npy"
    stale.write_bytes(b"killed mid-write")
    os.utime(stale, (1, 1))
    (tmp_path / "mine.npy").write_bytes(b"")
    info = cache_info(tmp_path)
    assert (info["samples"], info["files"], info["temporary_files"]) == (1, 2, 1)
    assert clear_cache(tmp_path)[0] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["mine.npy"]


def test_a_miss_never_deletes_the_entry_another_process_stores_meanwhile(source, tmp_path, monkeypatch):
    writer, reader = CachedSource(source, tmp_path), CachedSource(source, tmp_path)
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
    image = CachedSource(source, tmp_path).full(source.refs[0])["image"]
    monkeypatch.undo()
    assert np.array_equal(image, source.read(source.refs[0])["image"])
