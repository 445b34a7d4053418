"""The fast model: a softmax (multinomial logistic) regression over a frozen encoder's hypercolumns, fitted on
the clicks and their propagated pixels in seconds (PEARL's and the land-cover mapping tool's loop, on a CPU).

Samples are cells of the hypercolumn head's grid (``models.hypercolumn``): a click is a sample of weight 1 in the
cell it falls in; propagated pixels are grouped by cell and class, each group weighing ``labels.propagate_weight``
times the share of the cell it covers (a fully covered cell weighs as a propagated training pixel does). The fit
minimises, over standardised features ``z`` and with sample weights ``s`` (times the class weights)::

    sum_i s_i * CE(W z_i + b, y_i) + ||W||^2 / (2 C)

scikit-learn's ``LogisticRegression`` objective (multinomial, L2, unpenalised intercept), by L-BFGS in torch.
The standardisation is folded into the head's 1 x 1 convolution, so the result is a plain model. Classes without
clicks get the bias ``ABSENT_LOGIT`` (never predicted).

**Click accuracy** (no reference needed): the clicks are split into ``fast.folds`` folds; for each, the head is
refitted without that fold's clicks and without the propagated pixels within reach of them (the window their
propagation reads), and predicts them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, cast

import numpy as np
import torch
import torch.nn.functional as F

from pointseg.features import FeatureCache, Unit
from pointseg.metrics import iou_per_class
from pointseg.models.hypercolumn import HypercolumnHead, resample
from pointseg.models.segmentation import SegmentationModel
from pointseg.options import Options, option

ABSENT_LOGIT = -1e4  # the bias of a class without clicks
CLASS_WEIGHTS = ("balanced", "none")


@dataclass(frozen=True)
class FastOptions(Options):
    """The ``fast`` section: how the fast model (``train --fast``) is fitted and checked."""

    section: ClassVar[str] = "fast"
    c: float = option(0.1, "inverse strength of the L2 penalty on the head's weights over standardised features "
                           "(scikit-learn's C)", low=0, low_open=True)
    class_weight: str = option("balanced", "balanced: each class weighs the same in all (scikit-learn's, with sample "
                                           "weights) | none",
                               choices=CLASS_WEIGHTS)
    max_iter: int = option(100, "L-BFGS iterations of a fit", low=1)
    folds: int = option(5, "click accuracy: folds of the cross-validation over the clicks (0: none)", low=0)
    window: int = option(1024, "rasters: side, in full-resolution pixels, of the windows whose features are "
                               "computed and cached together", low=32)


@dataclass
class Samples:
    """Training samples of the head: hypercolumns ``x`` (M, D), classes ``y``, weights ``weight``, the unit each
    comes from, its full-resolution ``position`` (row, col) in its image, and the click it is (-1: propagated)."""

    x: torch.Tensor
    y: np.ndarray
    weight: np.ndarray
    unit: np.ndarray
    position: np.ndarray
    click: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, keep: np.ndarray) -> Samples:
        return Samples(self.x[torch.from_numpy(keep)], self.y[keep], self.weight[keep], self.unit[keep],
                       self.position[keep], self.click[keep])


def hypercolumn_head(model: SegmentationModel) -> HypercolumnHead:
    head = next(iter(model.heads.values()))
    if not isinstance(head, HypercolumnHead):
        raise ValueError("the fast model is a hypercolumn model (model.name=hypercolumn-mobilenetv2)")
    return head


def grid_of(model: SegmentationModel, cache: FeatureCache, unit: Unit) -> tuple[float, float]:
    """Head-grid cells per full-resolution pixel of ``unit``, down and across."""
    scale = hypercolumn_head(model).scale
    height, width = unit.window[2:] if unit.window else cache.source.size(unit.ref)
    mh, mw = cache.model_size(unit)
    return mh * scale / height, mw * scale / width


def unit_cells(rows: np.ndarray, cols: np.ndarray, per_pixel: tuple[float, float], grid: tuple[int, int]
               ) -> np.ndarray:
    """Flat head-grid cells of full-resolution pixels (``grid``: the padded grid's height and width)."""
    r = np.minimum(((rows + 0.5) * per_pixel[0]).astype(np.int64), grid[0] - 1)
    c = np.minimum(((cols + 0.5) * per_pixel[1]).astype(np.int64), grid[1] - 1)
    return r * grid[1] + c


@torch.no_grad()
def gather(model: SegmentationModel, features: list[torch.Tensor | None], cells: np.ndarray) -> torch.Tensor:
    """The hypercolumns ``(M, D)`` of flat head-grid ``cells`` from a unit's encoder features."""
    image, *parts = model.decoder(features)
    grid = hypercolumn_head(model).grid_size(image)
    index = torch.from_numpy(cells)
    return torch.cat([resample(p, grid).flatten(2)[0][:, index] for p in parts], 0).T.contiguous()


def collect(model: SegmentationModel, cache: FeatureCache, clicks: Mapping[str, np.ndarray],
            propagated: Mapping[str, object] | None, propagate_weight: float, ignore_index: int,
            units: Sequence[Unit]) -> Samples:
    """The samples of ``clicks`` ((N, 3) row, col, class per image id, full resolution) and of their
    ``propagated`` masks (sliced like arrays), over the feature ``units`` that hold clicks."""
    parts: list[tuple] = []
    offsets: dict[str, int] = {}  # a click's id: its place in its image's clicks, after the earlier images'
    for unit in units:
        if unit.ref.id in clicks and unit.ref.id not in offsets:
            offsets[unit.ref.id] = sum(len(clicks[k]) for k in offsets)
    for u, unit in enumerate(units):
        pts = clicks.get(unit.ref.id)
        if pts is None or not len(pts):
            continue
        top, left, height, width = unit.window or (0, 0, *cache.source.size(unit.ref))
        inside = (pts[:, 0] >= top) & (pts[:, 0] < top + height) & (pts[:, 1] >= left) & (pts[:, 1] < left + width)
        ids = offsets[unit.ref.id] + np.flatnonzero(inside)
        if not inside.any():
            continue
        features = cache.get(unit)
        padded = cache.padded_size(unit)
        scale = hypercolumn_head(model).scale
        grid = (max(1, round(padded[0] * scale)), max(1, round(padded[1] * scale)))
        per_pixel = grid_of(model, cache, unit)
        local = pts[inside] - np.array([top, left, 0])
        cells = [unit_cells(local[:, 0], local[:, 1], per_pixel, grid)]
        ys, weights, positions, click_ids = [local[:, 2]], [np.ones(len(local))], [pts[inside, :2]], [ids]
        if propagated is not None and unit.ref.id in propagated:
            spread = np.asarray(propagated[unit.ref.id][top:top + height, left:left + width])  # type: ignore[index]
            rows, cols = np.nonzero(spread != ignore_index)
            if len(rows):
                flat = unit_cells(rows, cols, per_pixel, grid) * 256 + spread[rows, cols]
                keys, counts = np.unique(flat, return_counts=True)
                cell, cls = keys // 256, keys % 256
                cells.append(cell)
                ys.append(cls)
                weights.append((counts * propagate_weight * per_pixel[0] * per_pixel[1]).astype(np.float64))
                centre = np.stack([(cell // grid[1] + 0.5) / per_pixel[0] + top,
                                   (cell % grid[1] + 0.5) / per_pixel[1] + left], 1)
                positions.append(centre)
                click_ids.append(np.full(len(cell), -1))
        all_cells = np.concatenate(cells)
        parts.append((gather(model, features, all_cells), np.concatenate(ys), np.concatenate(weights),
                      np.full(len(all_cells), u), np.concatenate(positions), np.concatenate(click_ids)))
    if not parts:
        raise ValueError("no click falls on the images the fast model is fitted on")
    x, y, w, unit_index, pos, click = zip(*parts, strict=True)
    return Samples(torch.cat(x), np.concatenate(y).astype(np.int64), np.concatenate(w).astype(np.float64),
                   np.concatenate(unit_index), np.concatenate(pos), np.concatenate(click))


def class_weights(y: np.ndarray, sample_weight: np.ndarray, num_classes: int, kind: str) -> np.ndarray:
    """Per class: ``balanced``, ``W / (k W_c)`` with ``W`` the samples' total weight, ``W_c`` that of class c's and
    k the classes present (scikit-learn's, with sample weights), so every class weighs the same in all; or 1."""
    if kind not in CLASS_WEIGHTS:
        raise KeyError(f"unknown class weighting {kind!r}; valid: {list(CLASS_WEIGHTS)}")
    if kind == "none":
        return np.ones(num_classes)
    totals = np.bincount(y, sample_weight, minlength=num_classes)
    present = totals > 0
    return np.where(present, sample_weight.sum() / (present.sum() * np.where(present, totals, 1)), 0.0)


def fit_softmax(x: torch.Tensor, y: np.ndarray, sample_weight: np.ndarray, num_classes: int, c: float,
                class_weight: str = "balanced", max_iter: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's weights ``(C, D)`` and bias ``(C,)`` over raw features ``x`` (see the module docstring)."""
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(torch.finfo(x.dtype).eps)
    z = (x - mean) / std
    present = np.unique(y)
    index = torch.from_numpy(np.searchsorted(present, y))
    s = torch.from_numpy(sample_weight * class_weights(y, sample_weight, num_classes, class_weight)[y]).to(x.dtype)
    total = s.sum()
    weight = torch.zeros(len(present), x.shape[1], dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(len(present), dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, history_size=20, tolerance_grad=1e-9,
                                  tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        ce = F.cross_entropy(z @ weight.T + bias, index, reduction="none")
        loss = ((s * ce).sum() + weight.square().sum() / (2 * c)) / total
        loss.backward()
        return loss

    if len(present) > 1:
        optimizer.step(objective)
    w_full = torch.zeros(num_classes, x.shape[1], dtype=x.dtype)
    b_full = torch.full((num_classes,), ABSENT_LOGIT, dtype=x.dtype)
    keep = torch.from_numpy(present)
    w_full[keep] = weight.detach() / std
    b_full[keep] = bias.detach() - (weight.detach() / std) @ mean
    return w_full, b_full


def set_head(model: SegmentationModel, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Put fitted raw-feature weights into the model's hypercolumn head."""
    conv = hypercolumn_head(model).conv
    with torch.no_grad():
        conv.weight.copy_(weight.view_as(conv.weight))
        cast(torch.Tensor, conv.bias).copy_(bias)


def predict_samples(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> np.ndarray:
    return (x @ weight.T + bias).argmax(1).numpy()


def click_accuracy(samples: Samples, num_classes: int, options: FastOptions, reach: float, seed: int,
                   stop: Callable[[], bool] | None = None) -> dict | None:
    """Cross-validated accuracy over the clicks (``options.folds`` folds, drawn with ``seed``): overall, per class
    (the share of each class's clicks predicted right), the mIoU of the held-out clicks' confusion matrix, and the
    matrix. ``reach``: full-resolution distance within which propagated pixels of a held-out click are left out.
    ``None`` with fewer clicks than folds, or when ``stop()`` turns true (asked before each fold)."""
    click_rows = np.flatnonzero(samples.click >= 0)
    if options.folds < 2 or len(click_rows) < options.folds:
        return None
    order = np.random.default_rng(seed).permutation(len(click_rows))
    fold_of = np.empty(len(click_rows), dtype=np.int64)
    fold_of[order] = np.arange(len(click_rows)) % options.folds
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    t0 = time.perf_counter()
    for fold in range(options.folds):
        if stop is not None and stop():
            return None
        held = click_rows[fold_of == fold]
        keep = np.ones(len(samples), dtype=bool)
        keep[held] = False
        for u in np.unique(samples.unit[held]):
            here = samples.unit == u
            for r, c in samples.position[held[samples.unit[held] == u]]:
                near = here & (samples.click < 0) & (np.abs(samples.position[:, 0] - r) <= reach) & (
                    np.abs(samples.position[:, 1] - c) <= reach)
                keep[near] = False
        train = samples.subset(keep)
        weight, bias = fit_softmax(train.x, train.y, train.weight, num_classes, options.c, options.class_weight,
                                   options.max_iter)
        predicted = predict_samples(samples.x[torch.from_numpy(held)], weight, bias)
        np.add.at(confusion, (samples.y[held], predicted), 1)
    per_class = np.diag(confusion) / np.maximum(confusion.sum(1), 1)
    clicked = confusion.sum(1) > 0
    return {"accuracy": float(np.trace(confusion) / max(confusion.sum(), 1)),
            "per_class": [float(v) if k else None for v, k in zip(per_class, clicked, strict=True)],
            "miou": float(np.nanmean(iou_per_class(confusion))), "clicks": int(confusion.sum()),
            "folds": options.folds, "seconds": time.perf_counter() - t0, "confusion_matrix": confusion.tolist()}


@torch.no_grad()
def unit_probabilities(model: SegmentationModel, cache: FeatureCache, unit: Unit) -> np.ndarray:
    """Class probabilities ``(C, h, w)`` of ``unit`` at full resolution, from its cached features (the encoder
    does not run)."""
    features = cache.get(unit)
    model.eval()
    logits = model.decode(features)  # type: ignore[arg-type]  # the stages the head reads are all there
    h, w = cache.model_size(unit)
    probs = logits[..., :h, :w].float().softmax(1)
    full = unit.window[2:] if unit.window else cache.source.size(unit.ref)
    return F.interpolate(probs, size=tuple(full), mode="bilinear", align_corners=False)[0].numpy()
