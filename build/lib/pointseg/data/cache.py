"""On-disk cache of decoded samples, so training never re-decodes full tiles.

``CachedSource`` wraps any source: each array of a decoded sample is stored at full resolution as ``.npy`` and
memory-mapped, so reading a window costs a slice. Resolution and filters are not the cache's business (the
datasets resample). Every file of a sample is named ``<key>.<array>.npy`` with a 40-hex-digit key; only files
named so are counted, evicted (least recently used first, beyond a size cap) or cleared (``pointseg cache info``
/ ``cache clear``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pointseg.data.sources import GeoRef, SampleRef, Source, Window, window_of
from pointseg.io import TMP_SUFFIX, atomic_path

log = logging.getLogger(__name__)
ENTRY = re.compile(r"^(?P<key>[0-9a-f]{40})\.[A-Za-z0-9.+-]+\.npy$")  # <key>.image.npy, <key>.mask.npy, ...
TEMPORARY = re.compile(r"^\.[0-9a-f]{40}\..*" + re.escape(TMP_SUFFIX) + r"\.npy$")  # left by a killed writer


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pointseg"


class CachedSource(Source):
    """``source`` with its decoded samples kept on disk; reads, sizes and georeferencing as ``source`` gives them.

    Entries are keyed on file paths, modification times and sizes and on the class table, so a changed file
    or table is never served stale. ``max_bytes``: after a new entry is stored, the least recently used samples
    of the cache directory are evicted until it fits (samples this cache has served are kept; ``None`` or 0: no
    cap). The memory maps of the last ``open_samples`` samples stay open.
    """

    def __init__(self, source: Source, cache_dir: str | Path | None = None, max_bytes: int | None = None,
                 open_samples: int = 64) -> None:
        super().__init__(source.refs, source.classes, source.description)
        self.source = source
        self.dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.max_bytes = max_bytes or None
        self.open_samples = open_samples
        self._open: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
        self._used: set[str] = set()  # file names served by this cache: recency marked once, never evicted by it

    def _key(self, ref: SampleRef) -> str:
        parts: list = [self.source.classes.to_dict()]
        for p in (ref.image, ref.mask):
            if p is not None:
                st = p.stat()
                parts.append([str(p.resolve()), st.st_mtime_ns, st.st_size])
        return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def _load(self, path: Path) -> np.ndarray | None:
        """The memory-mapped array at ``path``; ``None`` if it is missing or corrupt (the caller rebuilds it).

        Nothing is deleted here: another process may store the same entry at any moment, and a corrupt file is
        replaced atomically by the rebuild.
        """
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError):
            return None
        if path.name not in self._used:
            self._used.add(path.name)
            with contextlib.suppress(FileNotFoundError):  # evicted by another process: the map stays valid
                os.utime(path)  # recency for eviction (file systems mounted noatime keep no access times)
        return array

    def _store(self, path: Path, array: np.ndarray) -> np.ndarray:
        """Write ``array`` to ``path`` atomically; returns it memory-mapped from the written file itself, so it
        stays valid whatever other processes later do to ``path``."""
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(array))
            stored = np.load(tmp, mmap_mode="r")
        self._used.add(path.name)
        if self.max_bytes:
            evict(self.dir, self.max_bytes, keep={name.split(".", 1)[0] for name in self._used})
        return stored

    def full(self, ref: SampleRef) -> dict[str, np.ndarray]:
        """The whole sample, each array memory-mapped (decoded and stored on first use)."""
        key = self._key(ref)
        if key in self._open:
            self._open.move_to_end(key)
            return self._open[key]
        names = self.source.sample_keys(ref)
        arrays = {name: self._load(self.dir / f"{key}.{name}.npy") for name in names}
        if any(a is None for a in arrays.values()):
            sample = self.source.read(ref)
            arrays = {name: self._store(self.dir / f"{key}.{name}.npy", sample[name]) for name in names}
        self._open[key] = arrays  # type: ignore[assignment]
        if len(self._open) > self.open_samples:
            self._open.popitem(last=False)
        return self._open[key]

    def read(self, ref: SampleRef, window: Window | None = None) -> dict[str, np.ndarray]:
        """The sample or a window of it: memory-mapped slices (copy them before writing)."""
        return {name: window_of(array, window) for name, array in self.full(ref).items()}

    def read_mask(self, ref: SampleRef, image_size: tuple[int, int] | None = None) -> np.ndarray:
        return self.full(ref)["mask"] if ref.mask is not None else self.source.read_mask(ref, image_size)

    def size(self, ref: SampleRef) -> tuple[int, int]:
        return self.source.size(ref)

    def georef(self, ref: SampleRef) -> GeoRef | None:
        return self.source.georef(ref)

    def sample_keys(self, ref: SampleRef) -> tuple[str, ...]:
        return self.source.sample_keys(ref)

    def band_count(self, ref: SampleRef) -> int:
        return self.source.band_count(ref)

    def band_dtype(self, ref: SampleRef) -> str:
        return self.source.band_dtype(ref)


@dataclass
class CacheEntry:
    """The files of one cached sample, their total size and when any of them was last used."""

    key: str
    files: list[Path]
    bytes: int
    last_used: float


def cache_entries(directory: str | Path) -> list[CacheEntry]:
    """The cached samples in ``directory``, least recently used first."""
    groups: dict[str, list[Path]] = {}
    directory = Path(directory)
    for path in directory.iterdir() if directory.is_dir() else []:
        match = ENTRY.match(path.name)
        if match and path.is_file():
            groups.setdefault(match["key"], []).append(path)
    entries = []
    for key, found in groups.items():
        files, stats = [], []
        for f in found:
            with contextlib.suppress(FileNotFoundError):  # removed by another process meanwhile
                stats.append(f.stat())
                files.append(f)
        if files:
            entries.append(CacheEntry(key, files, sum(s.st_size for s in stats), max(s.st_mtime for s in stats)))
    return sorted(entries, key=lambda e: e.last_used)


def evict(directory: str | Path, max_bytes: int, keep: Collection[str] = ()) -> list[CacheEntry]:
    """Delete least recently used samples (not those in ``keep``) until ``directory`` holds at most ``max_bytes``."""
    entries = cache_entries(directory)
    total = sum(e.bytes for e in entries)
    evicted = []
    for entry in entries:
        if total <= max_bytes:
            break
        if entry.key in keep:
            continue
        for f in entry.files:
            f.unlink(missing_ok=True)  # a memory map of it elsewhere stays valid until closed
        total -= entry.bytes
        evicted.append(entry)
    if total > max_bytes:
        log.warning("sample cache %s holds %.1f GB, over its cap of %.1f GB, all of it in use by this run; raise "
                    "data.cache_max_gb", directory, total / 1e9, max_bytes / 1e9)
    return evicted


def cache_info(directory: str | Path) -> dict:
    """Where the cache is and what it holds: samples, files, bytes, temporaries, oldest and newest use."""
    entries = cache_entries(directory)
    temporaries = [p for p in Path(directory).glob(".*") if TEMPORARY.match(p.name)] if Path(directory).is_dir() else []
    return {"directory": str(directory), "samples": len(entries), "files": sum(len(e.files) for e in entries),
            "bytes": sum(e.bytes for e in entries), "temporary_files": len(temporaries),
            "oldest_use": min((e.last_used for e in entries), default=None),
            "newest_use": max((e.last_used for e in entries), default=None)}


def clear_cache(directory: str | Path, older_than_days: float | None = None) -> tuple[int, int]:
    """Delete cached samples (only those unused for ``older_than_days``, if given) and stray temporaries.

    Returns the number of samples and bytes deleted. Files not named like cache entries are never touched.
    """
    cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else float("inf")
    removed = [e for e in cache_entries(directory) if e.last_used < cutoff]
    for entry in removed:
        for f in entry.files:
            f.unlink(missing_ok=True)
    if Path(directory).is_dir():
        for tmp in Path(directory).glob(".*"):
            with contextlib.suppress(FileNotFoundError):  # finished (renamed) by its writer meanwhile
                if TEMPORARY.match(tmp.name) and tmp.stat().st_mtime < min(cutoff, time.time() - 3600):
                    tmp.unlink()  # an hour old at least: not one being written now
    return len(removed), sum(e.bytes for e in removed)
