"""Forests of decision trees as plain arrays: fitted by scikit-learn, kept in a model's buffers
(``models.hypercolumn.ForestHead``), and evaluated by scikit-learn's compiled trees again after loading.

A tree is five arrays over its nodes (``TREE_ARRAYS``): the children (-1 at a leaf), the feature and threshold of
each split (a sample goes left when ``x[feature] <= threshold``), and each node's class probabilities. They are
what scikit-learn's ``Tree`` pickles, minus its bookkeeping, so a saved forest does not depend on pickle or on
scikit-learn's version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree._tree import NODE_DTYPE, Tree

CHUNK = 1 << 18  # pixels a tree predicts at once (bounded memory whatever the image's size)


def fit_forest(x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray, num_classes: int, trees: int,
               min_samples_leaf: int, max_features: float, seed: int) -> list[dict[str, np.ndarray]]:
    """A random forest (scikit-learn's) on samples ``x`` (M, D) of classes ``y`` weighed by ``sample_weight``;
    each tree's node probabilities over all ``num_classes`` (classes without samples: 0)."""
    forest = RandomForestClassifier(n_estimators=trees, min_samples_leaf=min_samples_leaf,
                                    max_features=max_features, random_state=seed,
                                    n_jobs=max(1, torch.get_num_threads()))
    forest.fit(x, y, sample_weight=sample_weight)
    out = []
    for estimator in forest.estimators_:
        tree = estimator.tree_
        value = np.zeros((tree.node_count, num_classes))
        value[:, forest.classes_] = tree.value[:, 0, :]
        value /= np.maximum(value.sum(1, keepdims=True), np.finfo(float).tiny)
        out.append({"left": tree.children_left.astype(np.int64), "right": tree.children_right.astype(np.int64),
                    "feature": np.maximum(tree.feature, 0).astype(np.int64), "threshold": tree.threshold,
                    "value": value.astype(np.float32)})
    return out


def sklearn_trees(arrays: Mapping[str, np.ndarray], num_classes: int) -> list[Tree]:
    """scikit-learn ``Tree`` objects of the forest held in ``arrays`` (``TREE_ARRAYS`` of all trees one after
    another, ``roots``: where each tree starts)."""
    ends = [*arrays["roots"][1:], len(arrays["left"])]
    n_features = int(arrays["feature"].max()) + 1 if len(arrays["feature"]) else 1
    out = []
    for start, end in zip(arrays["roots"], ends, strict=True):
        count = int(end - start)
        nodes = np.zeros(count, dtype=NODE_DTYPE)
        leaf = arrays["left"][start:end] < 0  # children are numbered within their tree
        nodes["left_child"] = arrays["left"][start:end]
        nodes["right_child"] = arrays["right"][start:end]
        nodes["feature"] = np.where(leaf, -2, arrays["feature"][start:end])
        nodes["threshold"] = np.where(leaf, -2.0, arrays["threshold"][start:end])
        nodes["n_node_samples"] = 1
        nodes["weighted_n_node_samples"] = 1.0
        tree = Tree(max(n_features, 1 + int(nodes["feature"].max(initial=0))), np.array([num_classes], np.intp), 1)
        depth = _depth(nodes["left_child"], nodes["right_child"])
        value = arrays["value"][start:end].astype(np.float64).reshape(count, 1, num_classes)
        tree.__setstate__({"max_depth": depth, "node_count": count, "nodes": nodes, "values": value})
        out.append(tree)
    return out


def _depth(left: np.ndarray, right: np.ndarray) -> int:
    depth, level, frontier = 0, 0, [0]
    while frontier:
        depth = level
        frontier = [c for n in frontier for c in (left[n], right[n]) if c >= 0]
        level += 1
    return depth


def forest_probabilities(trees: Sequence[Tree], x: np.ndarray) -> np.ndarray:
    """The mean over ``trees`` of their class probabilities for samples ``x`` (M, D) float32, in chunks, the trees
    shared out over this process's torch threads."""
    out = np.zeros((len(x), trees[0].n_classes[0] if trees else 0), dtype=np.float32)

    def predict(tree: Tree) -> np.ndarray:
        part = np.zeros_like(out)
        for start in range(0, len(x), CHUNK):
            part[start:start + CHUNK] = tree.predict(x[start:start + CHUNK]).reshape(-1, out.shape[1])
        return part

    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
        for part in pool.map(predict, trees):
            out += part
    return out / max(len(trees), 1)
