"""Where should the analyst click next? Uncertain pixels, spread out, on classes with few clicks so far.

For each image a trained model gives class probabilities (optionally averaged over flips). A pixel's score is the
uncertainty of the region around it times the rarity of the class the model gives it::

    uncertainty = 1 - certainty,  certainty: margin p1 - p2 | entropy 1 - H(p) / log C | max p1
    region uncertainty = mean uncertainty over the square of side min_distance around the pixel (no data and the
                         outside of the image count as sure)
    rarity_c = ((1 + min_k n_k) / (1 + n_c)) ** class_weight        (n_c: clicks of class c so far)
    score = region uncertainty * rarity_{argmax p}

A pixel's own uncertainty saturates: every class boundary has pixels where the two top classes tie, and a map read
back at percent precision has thousands of pixels at exactly 1, so the picks fell to scan order (the top rows of the
image). The region's mean is 1 only where the model is unsure throughout, ranks a broad unsure area above a thin
boundary line, and keeps the clicks off the boundaries themselves. The next clicks are picked greedily, highest
score first (ties in a seeded random order, never in scan order), each at least ``min_distance`` full-resolution
pixels from every click made or picked before (pixels without data are never picked). They are written as clicks
without a class in a point file that also holds the clicks made so far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TIE_DIGITS = 9  # scores equal to this many decimals are ties (a running mean's rounding is no preference)


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


def region_uncertainty(uncertainty: np.ndarray, valid: np.ndarray | None, side: int) -> np.ndarray:
    """The mean of ``uncertainty`` (h, w) over the square of ``side`` pixels centred on each pixel, where pixels
    outside ``valid`` (no data) or outside the image count as sure (0): a square half off the image or on no data
    holds half the evidence, so a pick sits amid an unsure area rather than at an edge."""
    from scipy.ndimage import uniform_filter

    known = uncertainty.astype(np.float64) * (1.0 if valid is None else valid)
    return known if side <= 1 else uniform_filter(known, size=side, mode="constant")


def pick(score: np.ndarray, k: int, min_distance: float, taken: np.ndarray | None = None, seed: int = 0
         ) -> list[tuple[int, int]]:
    """Up to ``k`` pixels of ``score`` (h, w; NaN where nothing may be picked), highest first (equal scores in an
    order drawn with ``seed``), each at least ``min_distance`` pixels from the others and from ``taken`` (N, 2)
    rows and columns."""
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
    ties = np.random.default_rng(seed).permutation(len(candidates))
    order = candidates[np.lexsort((ties, -flat[candidates]))]
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
    the scored cell); their ``score`` is ``region_uncertainty`` over squares of ``min_distance`` times the rarity."""
    available = int(valid.sum()) if valid is not None else uncertainty.size
    if k > available:
        raise ValueError(f"asks for {k} clicks but the image has only {available} pixels with data"
                         + (f" (at 1/{step} of its resolution)" if step > 1 else ""))
    if min_distance is None:
        min_distance = auto_distance(full_size, len(existing) + k)
    side = max(1, round(min_distance / step))
    score = np.round(region_uncertainty(uncertainty, valid, side | 1) * rarity[predicted], TIE_DIGITS)
    if valid is not None:
        score[~valid] = np.nan
    taken = existing[:, :2] // step if len(existing) else None
    picked = pick(score, k, min_distance / step, taken)
    return [Suggestion(min(r * step + step // 2, full_size[0] - 1), min(c * step + step // 2, full_size[1] - 1),
                       float(score[r, c]), int(predicted[r, c])) for r, c in picked]
