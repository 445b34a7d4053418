"""On-disk cache of decoded samples, so training never re-decodes full tiles.

Full-resolution arrays are stored as ``.npy`` and memory-mapped (training cuts windows out of them); the
whole image resized to the inference scale is stored beside them for evaluation and prediction.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from pointseg.data.sources import SampleRef, Source
from pointseg.io import atomic_path
from pointseg.labels import MODES, resize_image


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pointseg"


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """Size of a ``height x width`` image resized by ``scale`` (at least 1 pixel each side)."""
    return max(1, round(height * scale)), max(1, round(width * scale))


class SampleCache:
    """Decoded samples of ``source``: ``full(ref)`` at full resolution, ``resized(ref)`` at ``scale``.

    Entries are keyed on file paths, modification times and sizes and on the class table, so a changed file
    or table is never served stale. ``mode`` is the image filter (``area`` = box, ``bilinear`` = triangle).
    """

    def __init__(self, source: Source, scale: float, cache_dir: str | Path | None = None,
                 mode: str = "bilinear") -> None:
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        if mode not in MODES:
            raise KeyError(f"unknown resize mode {mode!r}; valid: {list(MODES)}")
        self.source = source
        self.scale = scale
        self.mode = mode
        self.dir = Path(cache_dir) if cache_dir else default_cache_dir()

    def _key(self, ref: SampleRef) -> str:
        parts: list = [self.source.classes.to_dict()]
        for p in (ref.image, ref.mask):
            if p is not None:
                st = p.stat()
                parts.append([str(p.resolve()), st.st_mtime_ns, st.st_size])
        return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def _load(self, path: Path) -> np.ndarray | None:
        try:
            return np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError):
            path.unlink(missing_ok=True)  # missing or corrupt: rebuilt by the caller
            return None

    def _store(self, path: Path, array: np.ndarray) -> np.ndarray:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(array))
        return np.load(path, mmap_mode="r")

    def full(self, ref: SampleRef) -> dict[str, np.ndarray]:
        """``image`` (H, W, 3) uint8 and, if the sample has one, ``mask`` (H, W) uint8, memory-mapped."""
        key = self._key(ref)
        image, mask = self._load(self.dir / f"{key}.image.npy"), None
        if ref.mask is not None:
            mask = self._load(self.dir / f"{key}.mask.npy")
        if image is None or (ref.mask is not None and mask is None):
            sample = self.source.read(ref)
            image = self._store(self.dir / f"{key}.image.npy", sample["image"])
            if ref.mask is not None:
                mask = self._store(self.dir / f"{key}.mask.npy", sample["mask"])
        return {"image": image} if mask is None else {"image": image, "mask": mask}

    def resized(self, ref: SampleRef) -> np.ndarray:
        """The whole image at ``scale``, ``(h, w, 3)`` uint8, resized with the ``mode`` filter."""
        path = self.dir / f"{self._key(ref)}.{self.mode}-{self.scale:g}.npy"
        cached = self._load(path)
        if cached is not None:
            return cached
        image = self.full(ref)["image"]
        size = scaled_size(image.shape[0], image.shape[1], self.scale)
        return self._store(path, resize_image(np.asarray(image), size, self.mode))
