"""Input bands: how raw band values become the [0, 1] inputs the models see, and where those ranges come from.

Every source has a band count and dtype (``Source.band_count``/``band_dtype``). ``BandScaling`` maps each band's
``low..high`` to 0..1, ``(x - low) / (high - low)`` clipped: for uint8 bands 0..255 (exactly the classic division
by 255), for other dtypes (e.g. Sentinel-2 uint16 reflectances) the 2nd and 98th percentiles of the valid pixels of
a seeded sample of windows. The scaling is stored with the model, so another raster is scaled as the training
data were.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pointseg.data.sources import Source
from pointseg.io import atomic_path

PERCENTILES = (2.0, 98.0)


@dataclass(frozen=True)
class BandScaling:
    """Per band, raw ``low`` -> 0 and ``high`` -> 1 (values outside are clipped)."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.low) != len(self.high) or any(h <= lo for lo, h in zip(self.low, self.high, strict=True)):
            raise ValueError(f"band scaling needs low < high per band, got {self.low} and {self.high}")

    @property
    def bands(self) -> int:
        return len(self.low)

    @classmethod
    def full_range(cls, bands: int, dtype: str | np.dtype = "uint8") -> BandScaling:
        """The dtype's whole range (0..255 for uint8)."""
        info = np.iinfo(np.dtype(dtype))
        return cls((float(info.min),) * bands, (float(info.max),) * bands)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, B)`` raw values -> ``(B, H, W)`` float32 in [0, 1]."""
        if image.shape[-1] != self.bands:
            raise ValueError(f"an image of {image.shape[-1]} bands for a model of {self.bands} bands")
        low = np.asarray(self.low, dtype=np.float32)
        span = np.asarray(self.high, dtype=np.float32) - low
        x = np.moveaxis(image, -1, 0).astype(np.float32)
        return np.clip((x - low[:, None, None]) / span[:, None, None], 0, 1)

    def to_dict(self) -> dict:
        return {"low": list(self.low), "high": list(self.high)}

    @classmethod
    def from_dict(cls, d: dict) -> BandScaling:
        return cls(tuple(d["low"]), tuple(d["high"]))


WINDOWS, SIDE = 64, 256  # the bands' statistics sample WINDOWS windows of SIDE x SIDE pixels
STATISTICS_VERSION = 1  # of the statistics' computation: a change of it invalidates stored statistics


def statistics_key(source: Source, windows: int, side: int, seed: int, percentiles: tuple[float, float]) -> str:
    """What ``band_statistics`` depends on: every sample file (path, modification time, size), the bands read,
    the sampling and the percentiles."""
    files = []
    for ref in source.refs:
        st = ref.image.stat()
        files.append([str(ref.image.resolve()), st.st_mtime_ns, st.st_size])
    read = getattr(source, "bands", None)
    parts = [STATISTICS_VERSION, files, repr(read), windows, side, seed, list(percentiles)]
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def stored_band_statistics(source: Source, directory: str | Path, seed: int = 0) -> BandScaling:
    """``band_statistics`` of ``source``, computed once and kept in ``directory`` (the sample cache:
    ``<key>.band-statistics.npy``, the low and high of each band, float64, so a stored scaling is the computed one
    exactly). A click loop that refits every few seconds reads them back instead of sampling the raster again."""
    ref = source.refs[0]
    if np.dtype(source.band_dtype(ref)) == np.uint8:
        return band_statistics(source, seed=seed)
    path = Path(directory) / f"{statistics_key(source, WINDOWS, SIDE, seed, PERCENTILES)}.band-statistics.npy"
    try:
        low, high = np.load(path)
        return BandScaling(tuple(map(float, low)), tuple(map(float, high)))
    except (OSError, ValueError, EOFError):
        pass
    scaling = band_statistics(source, seed=seed)
    with atomic_path(path) as tmp:
        np.save(tmp, np.array([scaling.low, scaling.high], dtype=np.float64))
    return scaling


def band_statistics(source: Source, windows: int = WINDOWS, side: int = SIDE, seed: int = 0,
                    percentiles: tuple[float, float] = PERCENTILES) -> BandScaling:
    """The scaling of ``source``'s bands: the full range for uint8, else percentiles of valid pixels in
    ``windows`` random ``side x side`` windows (seeded), spread over its samples."""
    ref = source.refs[0]
    bands, dtype = source.band_count(ref), np.dtype(source.band_dtype(ref))
    if dtype == np.uint8:
        return BandScaling.full_range(bands, dtype)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(windows):
        ref = source.refs[int(rng.integers(len(source.refs)))]
        height, width = source.size(ref)
        row, col = int(rng.integers(max(height - side, 0) + 1)), int(rng.integers(max(width - side, 0) + 1))
        sample = source.read(ref, (row, col, side, side))
        valid = sample.get("valid", np.ones(sample["image"].shape[:2], dtype=bool))
        values.append(sample["image"][valid].astype(np.float64))  # (N, B)
    pixels = np.concatenate(values)
    if len(pixels) == 0:
        raise ValueError(f"{source.description}: no valid pixels in {windows} sampled windows to scale the bands by")
    low, high = np.percentile(pixels, percentiles, axis=0)
    high = np.maximum(high, low + 1e-6)  # a constant band still maps somewhere
    return BandScaling(tuple(map(float, low)), tuple(map(float, high)))
