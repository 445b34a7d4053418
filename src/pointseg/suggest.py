"""Where should the analyst click next? Uncertain pixels, spread out, on classes with few clicks so far.

For each image a trained model gives class probabilities (optionally averaged over flips). A pixel's score is its
uncertainty times the rarity of the class the model gives it::

    uncertainty = 1 - certainty,  certainty: margin p1 - p2 | entropy 1 - H(p) / log C | max p1
    rarity_c = ((1 + min_k n_k) / (1 + n_c)) ** class_weight        (n_c: clicks of class c so far)
    score = uncertainty * rarity_{argmax p}

The next clicks are picked greedily, highest score first, each at least ``min_distance`` full-resolution pixels
from every click made or picked before (pixels without data are never picked). They are written as clicks without
a class in a point file that also holds the clicks made so far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def auto_distance(size: tuple[int, int], clicks: int) -> float:
    """Half the spacing of ``clicks`` points on a square grid over an image of ``size``: the default distance
    between clicks, so suggestions spread over the image rather than crowd one uncertain patch."""
    return 0.5 * math.sqrt(size[0] * size[1] / max(clicks, 1))


def class_rarity(counts: np.ndarray, class_weight: float = 1.0) -> np.ndarray:
    """``((1 + min n) / (1 + n_c)) ** class_weight`` per class: 1 for the least-clicked class, less for others."""
    counts = np.asarray(counts, dtype=np.float64)
    return ((1 + counts.min()) / (1 + counts)) ** class_weight


@dataclass(frozen=True)
class Suggestion:
    row: int
    col: int
    score: float
    predicted: int


def disc(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets of the pixels strictly closer than ``radius`` to the centre."""
    r = max(0, math.ceil(radius) - 1)
    dr, dc = np.mgrid[-r:r + 1, -r:r + 1]
    inside = dr**2 + dc**2 < radius**2
    return dr[inside], dc[inside]


def pick(score: np.ndarray, k: int, min_distance: float, taken: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Up to ``k`` pixels of ``score`` (h, w; NaN where nothing may be picked), highest first, each at least
    ``min_distance`` pixels from the others and from ``taken`` (N, 2) rows and columns."""
    h, w = score.shape
    blocked = np.zeros((h, w), dtype=bool)
    offsets = disc(min_distance)

    def block(row: int, col: int) -> None:
        rows, cols = row + offsets[0], col + offsets[1]
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        blocked[rows[inside], cols[inside]] = True

    for row, col in taken if taken is not None else []:
        block(int(row), int(col))
    flat = score.ravel()
    candidates = np.flatnonzero(~np.isnan(flat))
    order = candidates[np.argsort(-flat[candidates], kind="stable")]
    chosen: list[tuple[int, int]] = []
    for index in order:
        if len(chosen) == k:
            break
        row, col = divmod(int(index), w)
        if blocked[row, col]:
            continue
        chosen.append((row, col))
        block(row, col)
    return chosen


def suggest_clicks(uncertainty: np.ndarray, predicted: np.ndarray, valid: np.ndarray | None, existing: np.ndarray,
                   rarity: np.ndarray, k: int, min_distance: float | None, full_size: tuple[int, int], step: int = 1
                   ) -> list[Suggestion]:
    """The next ``k`` clicks of one image from its ``uncertainty`` and ``predicted`` classes (h, w), given at
    every ``step``-th full-resolution pixel (1: full resolution) of an image of ``full_size``; ``valid`` (h, w)
    where there is data; ``existing`` (N, 3) clicks at full resolution; ``min_distance`` ``None``:
    ``auto_distance`` for the clicks made and asked for. Returns full-resolution rows and columns (the centre of
    the scored cell)."""
    score = uncertainty.astype(np.float64) * rarity[predicted]
    if valid is not None:
        score[~valid] = np.nan
    available = int(np.isfinite(score).sum())
    if k > available:
        raise ValueError(f"asks for {k} clicks but the image has only {available} pixels with data"
                         + (f" (at 1/{step} of its resolution)" if step > 1 else ""))
    if min_distance is None:
        min_distance = auto_distance(full_size, len(existing) + k)
    taken = existing[:, :2] // step if len(existing) else None
    picked = pick(score, k, min_distance / step, taken)
    return [Suggestion(min(r * step + step // 2, full_size[0] - 1), min(c * step + step // 2, full_size[1] - 1),
                       float(score[r, c]), int(predicted[r, c])) for r, c in picked]
