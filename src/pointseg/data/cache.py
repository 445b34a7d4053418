"""On-disk cache of samples resized to the training resolution, so an epoch never re-decodes full tiles."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from pointseg.data.sources import SampleRef, Source
from pointseg.io import atomic_path


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pointseg"


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """Size of a ``height x width`` image resized by ``scale`` (at least 1 pixel each side)."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Smooth (antialiased bilinear) resize of an ``(H, W, 3)`` uint8 image to ``size = (h, w)``."""
    if image.shape[:2] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def resize_mask_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an ``(H, W)`` uint8 class mask (labels are never interpolated)."""
    if mask.shape == size:
        return mask
    return np.asarray(Image.fromarray(mask).resize((size[1], size[0]), Image.NEAREST))


class ResizedCache:
    """Reads samples of ``source`` at ``scale`` through a cache of ``.npz`` files.

    Each entry holds ``image`` (h, w, 3) uint8 at training resolution, ``mask`` (H, W) uint8 at full
    resolution when the sample has one, and ``mask_lr`` (h, w) its nearest-neighbour resize. Entries are keyed
    on the file paths, their modification times and sizes, the scale and the class table, so a changed file or
    table is never served stale.
    """

    def __init__(self, source: Source, scale: float, cache_dir: str | Path | None = None) -> None:
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        self.source = source
        self.scale = scale
        self.dir = Path(cache_dir) if cache_dir else default_cache_dir()

    def _key(self, ref: SampleRef) -> str:
        parts = [self.scale, self.source.classes.to_dict()]
        for p in (ref.image, ref.mask):
            if p is not None:
                st = p.stat()
                parts.append([str(p.resolve()), st.st_mtime_ns, st.st_size])
        return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def get(self, ref: SampleRef) -> dict[str, np.ndarray]:
        path = self.dir / f"{self._key(ref)}.npz"
        if path.exists():
            try:
                with np.load(path) as z:
                    return {k: z[k] for k in z.files}
            except (OSError, ValueError, EOFError):
                path.unlink(missing_ok=True)  # corrupt entry: rebuild it below
        full = self.source.read(ref)
        size = scaled_size(*full["image"].shape[:2], self.scale)
        entry = {"image": resize_image(full["image"], size)}
        if "mask" in full:
            entry["mask"] = full["mask"]
            entry["mask_lr"] = resize_mask_nearest(full["mask"], size)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **entry)
        return entry
