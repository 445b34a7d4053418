"""The fast model: a light head over a frozen encoder's features, fitted on the clicks and their propagated pixels
in seconds (PEARL's and the land-cover mapping tool's loop, on a CPU). The heads (``HEADS``): a softmax
(multinomial logistic) regression over the hypercolumn, described below; a one-hidden-layer MLP over the same
(``fit_mlp``); a random forest over each pixel's bands and their local means and standard deviations
(``treemodel``). ``fast.head: auto`` keeps the one with the best click accuracy (``fastloop.choose_head``).

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
from torch import nn

from pointseg.features import FeatureCache, Unit
from pointseg.metrics import iou_per_class
from pointseg.models.hypercolumn import ForestHead, HypercolumnHead, MLPHypercolumnHead, pixel_features, resample
from pointseg.models.segmentation import SegmentationModel
from pointseg.options import Options, option

ABSENT_LOGIT = -1e4  # the bias of a class without clicks
CLASS_WEIGHTS = ("balanced", "none")


HEAD_NAMES = ("softmax", "mlp", "forest")  # the heads of ``HEADS``, cheapest first (ties go to the first)


@dataclass(frozen=True)
class FastOptions(Options):
    """The ``fast`` section: how the fast model (``train --fast``) is fitted and checked; each head's own options
    are in ``fast.<head>``."""

    section: ClassVar[str] = "fast"
    head: str = option("auto", "the head fitted on the clicks: auto (each of fast.candidates scored by click "
                                "accuracy, the best kept) | " + " | ".join(HEAD_NAMES),
                       choices=("auto", *HEAD_NAMES))
    candidates: list = option(["softmax", "forest"], "head auto: the heads it scores, in order of preference on a "
                                                      "tie (mlp left out: it never mapped better than these two in "
                                                      "BENCHMARKS 13 and took most of auto's time)",
                              check=lambda v: None if v and set(v) <= set(HEAD_NAMES) and len(set(v)) == len(v)
                              else f"must be distinct heads of {list(HEAD_NAMES)}")
    budget_s: float = option(60.0, "head auto: seconds for scoring the candidates; those not reached in time are "
                                   "not scored (the first is always)", low=0)
    class_weight: str = option("balanced", "balanced: each class weighs the same in all (scikit-learn's, with sample "
                                           "weights) | none",
                               choices=CLASS_WEIGHTS)
    folds: int = option(5, "click accuracy: folds of the cross-validation over the clicks (0: none)", low=0)
    fold_block: int = option(64, "click accuracy: clicks within the same square of this many full-resolution "
                                 "pixels share a fold (spatial cross-validation); 0: each click on its own", low=0)
    window: int = option(1024, "rasters: side, in full-resolution pixels, of the windows whose features are "
                               "computed and cached together", low=32)


@dataclass(frozen=True)
class SoftmaxOptions(Options):
    """``fast.softmax``: the linear head (see the module docstring)."""

    section: ClassVar[str] = "fast.softmax"
    c: float = option(0.1, "inverse strength of the L2 penalty on the head's weights over standardised features "
                           "(scikit-learn's C)", low=0, low_open=True)
    max_iter: int = option(100, "L-BFGS iterations of a fit", low=1)


@dataclass(frozen=True)
class MLPOptions(Options):
    """``fast.mlp``: one hidden layer of ReLU units over the hypercolumn (``MLPHypercolumnHead``)."""

    section: ClassVar[str] = "fast.mlp"
    hidden: int = option(64, "hidden units", low=1)
    c: float = option(1.0, "inverse strength of the L2 penalty on both layers' weights (over standardised features)",
                      low=0, low_open=True)
    max_iter: int = option(200, "L-BFGS iterations of a fit", low=1)


@dataclass(frozen=True)
class ForestOptions(Options):
    """``fast.forest``: a random forest on each pixel's bands and their local means and standard deviations
    (``ForestHead``), at full resolution."""

    section: ClassVar[str] = "fast.forest"
    trees: int = option(100, "trees of the forest", low=1)
    min_samples_leaf: int = option(1, "fewest samples in a leaf", low=1)
    max_features: float = option(0.33, "share of the features each split draws from", low=0, low_open=True, high=1)
    sizes: list = option([3, 7, 15], "window sides of the local means and standard deviations of the bands",
                         check=lambda v: None if v and all(isinstance(s, int) and s >= 1 and s % 2 for s in v)
                         else "must be odd window sides >= 1")


@dataclass
class Samples:
    """Training samples of the head: hypercolumns ``x`` (M, D), classes ``y``, weights ``weight``, the
    full-resolution ``position`` (row, col) of each in its image, the click it is (-1: propagated), the image it
    lies in, and its ``pixels`` features (``pixel_features`` at its position; (M, 0) when not asked)."""

    x: torch.Tensor
    y: np.ndarray
    weight: np.ndarray
    position: np.ndarray
    click: np.ndarray
    image: np.ndarray
    pixels: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, keep: np.ndarray) -> Samples:
        index = torch.from_numpy(keep)
        return Samples(self.x[index], self.y[keep], self.weight[keep], self.position[keep], self.click[keep],
                       self.image[keep], self.pixels[index])


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
            units: Sequence[Unit], pixel_sizes: Sequence[int] | None = None) -> Samples:
    """The samples of ``clicks`` ((N, 3) row, col, class per image id, full resolution) and of their
    ``propagated`` masks (sliced like arrays), over the feature ``units`` that hold clicks; with ``pixel_sizes``,
    also their ``pixel_features`` (at a propagated cell's centre)."""
    parts: list[tuple] = []
    images: dict[str, int] = {}  # image id -> its number
    offsets: dict[str, int] = {}  # a click's id: its place in its image's clicks, after the earlier images'
    for unit in units:
        if unit.ref.id in clicks and unit.ref.id not in offsets:
            offsets[unit.ref.id] = sum(len(clicks[k]) for k in offsets)
    for unit in units:
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
                keys, first, counts = np.unique(flat, return_index=True, return_counts=True)
                cell, cls = keys // 256, keys % 256
                cells.append(cell)
                ys.append(cls)
                weights.append((counts * propagate_weight * per_pixel[0] * per_pixel[1]).astype(np.float64))
                # where a group is: its first pixel (of its class, in its cell), not the cell's centre, which may
                # lie in another class
                positions.append(np.stack([rows[first] + top, cols[first] + left], 1).astype(np.float64))
                click_ids.append(np.full(len(cell), -1))
        all_cells, all_positions = np.concatenate(cells), np.concatenate(positions)
        pixels = (gather_pixels(cast(torch.Tensor, features[0]), all_positions - np.array([top, left]),
                                cache.model_size(unit), (height, width), pixel_sizes)
                  if pixel_sizes is not None else torch.zeros(len(all_cells), 0))
        parts.append((gather(model, features, all_cells), np.concatenate(ys), np.concatenate(weights),
                      all_positions, np.concatenate(click_ids),
                      np.full(len(all_cells), images.setdefault(unit.ref.id, len(images))), pixels))
    if not parts:
        raise ValueError("no click falls on the images the fast model is fitted on")
    x, y, w, pos, click, image, pixel_parts = zip(*parts, strict=True)
    return Samples(torch.cat(x), np.concatenate(y).astype(np.int64), np.concatenate(w).astype(np.float64),
                   np.concatenate(pos), np.concatenate(click), np.concatenate(image),
                   torch.cat(pixel_parts))


@torch.no_grad()
def gather_pixels(bands: torch.Tensor, positions: np.ndarray, model_size: tuple[int, int],
                  full_size: tuple[int, int], sizes: Sequence[int]) -> torch.Tensor:
    """``pixel_features`` (M, P) of a unit's normalised ``bands`` (stage 0, at the model's resolution) at
    full-resolution ``positions`` (row, col) within the unit."""
    features = pixel_features(bands.float(), sizes)[0]
    rows = np.clip(((positions[:, 0]) * model_size[0] / full_size[0]).astype(np.int64), 0, model_size[0] - 1)
    cols = np.clip(((positions[:, 1]) * model_size[1] / full_size[1]).astype(np.int64), 0, model_size[1] - 1)
    return features[:, torch.from_numpy(rows), torch.from_numpy(cols)].T.contiguous()


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


def fit_mlp(x: torch.Tensor, y: np.ndarray, sample_weight: np.ndarray, num_classes: int, hidden: int, c: float,
            class_weight: str, max_iter: int, seed: int) -> tuple[torch.Tensor, ...]:
    """A hidden layer of ``hidden`` ReLU units and a linear layer over raw features ``x``: ``(W1, b1, W2, b2)``,
    minimising the weighted cross-entropy plus ``(||W1||^2 + ||W2||^2) / (2 C)`` over standardised features (as
    ``fit_softmax``), by L-BFGS from a seeded start; the standardisation is folded into ``W1, b1``."""
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(torch.finfo(x.dtype).eps)
    z = (x - mean) / std
    s = torch.from_numpy(sample_weight * class_weights(y, sample_weight, num_classes, class_weight)[y]).to(x.dtype)
    target, total = torch.from_numpy(y), s.sum()
    generator = torch.Generator().manual_seed(seed)
    w1 = (torch.randn(hidden, x.shape[1], generator=generator, dtype=x.dtype) / x.shape[1] ** 0.5).requires_grad_()
    b1 = torch.zeros(hidden, dtype=x.dtype, requires_grad=True)
    w2 = (torch.randn(num_classes, hidden, generator=generator, dtype=x.dtype) / hidden ** 0.5).requires_grad_()
    absent = torch.from_numpy(np.bincount(y, minlength=num_classes) == 0)
    b2 = torch.zeros(num_classes, dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([w1, b1, w2, b2], max_iter=max_iter, history_size=20, tolerance_grad=1e-9,
                                  tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        logits = (F.relu(z @ w1.T + b1) @ w2.T + b2).masked_fill(absent, ABSENT_LOGIT)
        ce = F.cross_entropy(logits, target, reduction="none")
        loss = ((s * ce).sum() + (w1.square().sum() + w2.square().sum()) / (2 * c)) / total
        loss.backward()
        return loss

    if len(np.unique(y)) > 1:
        optimizer.step(objective)
    with torch.no_grad():
        b2_full = b2.detach().masked_fill(absent, ABSENT_LOGIT)
        return w1.detach() / std, b1.detach() - (w1.detach() / std) @ mean, w2.detach(), b2_full


class FastHead:
    """A head of the fast model: fitted on ``Samples`` (``fit``), it predicts their classes (``predict``, for the
    click accuracy) and becomes the model's head (``module``). A new head is one subclass, its ``Options`` (the
    config section ``fast.<name>``) and an entry in ``HEADS``."""

    name: ClassVar[str]
    options_class: ClassVar[type[Options]]

    def __init__(self, options: Options, num_classes: int, class_weight: str, seed: int) -> None:
        self.options, self.num_classes, self.class_weight, self.seed = options, num_classes, class_weight, seed

    def fit(self, samples: Samples) -> None:
        raise NotImplementedError

    def predict(self, samples: Samples) -> np.ndarray:
        raise NotImplementedError

    def module(self, model: SegmentationModel) -> nn.Module:
        raise NotImplementedError


class SoftmaxHead(FastHead):
    """The linear head (``fit_softmax``) over the hypercolumn on the head's grid."""

    name, options_class = "softmax", SoftmaxOptions

    def fit(self, samples: Samples) -> None:
        o = cast(SoftmaxOptions, self.options)
        self.weight, self.bias = fit_softmax(samples.x, samples.y, samples.weight, self.num_classes, o.c,
                                             self.class_weight, o.max_iter)

    def predict(self, samples: Samples) -> np.ndarray:
        return (samples.x @ self.weight.T + self.bias).argmax(1).numpy()

    def module(self, model: SegmentationModel) -> nn.Module:
        head = HypercolumnHead(hypercolumn_head(model).part_channels, self.num_classes, hypercolumn_head(model).scale)
        with torch.no_grad():
            head.conv.weight.copy_(self.weight.view_as(head.conv.weight))
            cast(torch.Tensor, head.conv.bias).copy_(self.bias)
        return head


class MLPHead(FastHead):
    """One hidden layer (``fit_mlp``) over the hypercolumn on the head's grid."""

    name, options_class = "mlp", MLPOptions

    def fit(self, samples: Samples) -> None:
        o = cast(MLPOptions, self.options)
        self.layers = fit_mlp(samples.x.float(), samples.y, samples.weight, self.num_classes, o.hidden, o.c,
                              self.class_weight, o.max_iter, self.seed)

    def predict(self, samples: Samples) -> np.ndarray:
        w1, b1, w2, b2 = self.layers
        return (F.relu(samples.x.float() @ w1.T + b1) @ w2.T + b2).argmax(1).numpy()

    def module(self, model: SegmentationModel) -> nn.Module:
        linear = hypercolumn_head(model)
        head = MLPHypercolumnHead(linear.part_channels, self.num_classes, linear.scale,
                                  cast(MLPOptions, self.options).hidden)
        w1, b1, w2, b2 = self.layers
        with torch.no_grad():
            head.hidden.conv.weight.copy_(w1.view_as(head.hidden.conv.weight))
            cast(torch.Tensor, head.hidden.conv.bias).copy_(b1)
            head.out.weight.copy_(w2.view_as(head.out.weight))
            cast(torch.Tensor, head.out.bias).copy_(b2)
        return head


class ForestFastHead(FastHead):
    """A random forest (``treemodel.fit_forest``) on the samples' pixel features, at full resolution."""

    name, options_class = "forest", ForestOptions

    def fit(self, samples: Samples) -> None:
        from pointseg.treemodel import fit_forest  # scikit-learn, only where a forest is fitted

        o = cast(ForestOptions, self.options)
        weight = samples.weight * class_weights(samples.y, samples.weight, self.num_classes,
                                                self.class_weight)[samples.y]
        self.trees = fit_forest(samples.pixels.float().numpy(), samples.y, weight, self.num_classes, o.trees,
                                o.min_samples_leaf, o.max_features, self.seed)
        self.head = ForestHead(self.num_classes, o.sizes)
        self.head.set_trees(self.trees)

    def predict(self, samples: Samples) -> np.ndarray:
        from pointseg.treemodel import forest_probabilities

        return forest_probabilities(self.head.trees(), samples.pixels.float().numpy()).argmax(1)

    def module(self, model: SegmentationModel) -> nn.Module:
        return self.head


HEADS: dict[str, type[FastHead]] = {"softmax": SoftmaxHead, "mlp": MLPHead, "forest": ForestFastHead}
assert tuple(HEADS) == HEAD_NAMES


def make_head(name: str, cfg: Mapping, num_classes: int) -> FastHead:
    """Head ``name`` with its options from ``cfg`` (a whole config)."""
    kind = HEADS[name]
    return kind(kind.options_class.from_config(cfg), num_classes, cfg["fast"]["class_weight"], cfg["seed"])


def set_head(model: SegmentationModel, head: FastHead) -> None:
    """Put the fitted ``head`` in the model (its only head)."""
    model.heads[model.head_names[0]] = head.module(model)


def near_held(samples: Samples, held: np.ndarray, reach: float) -> np.ndarray:
    """Propagated samples within ``reach`` full-resolution pixels (down and across) of a ``held`` click in the
    same image, whatever feature window (unit) either falls in."""
    near = np.zeros(len(samples), dtype=bool)
    propagated = samples.click < 0
    for image in np.unique(samples.image[held]):
        here = propagated & (samples.image == image)
        for r, c in samples.position[held[samples.image[held] == image]]:
            near |= here & (np.abs(samples.position[:, 0] - r) <= reach) & (np.abs(samples.position[:, 1] - c) <= reach)
    return near


def click_folds(samples: Samples, click_rows: np.ndarray, folds: int, block: int, seed: int) -> np.ndarray:
    """The fold of each click (``click_rows`` of ``samples``): blocks of ``block`` x ``block`` full-resolution
    pixels of an image go to the folds in a random order (drawn with ``seed``) and take their clicks with them, so
    no held-out click has a training click of its own block beside it (spatial cross-validation); ``block`` 0:
    each click on its own."""
    if block > 0:
        rows, cols = (samples.position[click_rows] // block).astype(np.int64).T
        _, group = np.unique(np.stack([samples.image[click_rows], rows, cols], 1), axis=0, return_inverse=True)
        group = group.reshape(-1)
    else:
        group = np.arange(len(click_rows))
    order = np.random.default_rng(seed).permutation(int(group.max()) + 1 if len(group) else 0)
    fold_of_group = np.empty(len(order), dtype=np.int64)
    fold_of_group[order] = np.arange(len(order)) % folds
    return fold_of_group[group]


def click_accuracy(samples: Samples, head: FastHead, folds: int, reach: float, seed: int,
                   stop: Callable[[], bool] | None = None, block: int = 0) -> dict | None:
    """Cross-validated accuracy of ``head`` over the clicks (``folds`` folds, drawn with ``seed``): overall, per
    class (the share of each class's clicks predicted right), the mIoU of the held-out clicks' confusion matrix,
    and the matrix. ``reach``: full-resolution distance within which propagated pixels of a held-out click are
    left out. ``None`` with fewer clicks than folds, or when ``stop()`` turns true (asked before each fold)."""
    num_classes = head.num_classes
    click_rows = np.flatnonzero(samples.click >= 0)
    if folds < 2 or len(click_rows) < folds:
        return None
    fold_of = click_folds(samples, click_rows, folds, block, seed)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    t0 = time.perf_counter()
    for fold in range(folds):
        if stop is not None and stop():
            return None
        held = click_rows[fold_of == fold]
        keep = ~near_held(samples, held, reach)
        keep[held] = False
        head.fit(samples.subset(keep))
        predicted = head.predict(samples.subset(held))
        np.add.at(confusion, (samples.y[held], predicted), 1)
    per_class = np.diag(confusion) / np.maximum(confusion.sum(1), 1)
    clicked = confusion.sum(1) > 0
    return {"accuracy": float(np.trace(confusion) / max(confusion.sum(), 1)),
            "per_class": [float(v) if k else None for v, k in zip(per_class, clicked, strict=True)],
            "miou": float(np.nanmean(iou_per_class(confusion))), "clicks": int(confusion.sum()),
            "folds": folds, "seconds": time.perf_counter() - t0, "confusion_matrix": confusion.tolist(),
            "head": head.name}


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
