"""Curation of an unlabeled pool for semi-supervised pre-training (S5's data selection, Lv et al.).

A trained segmentation model scores every pool image by the mean entropy of its pixel predictions, leaving out the
pixels it assigns to the background class. K-Means clusters the labeled images' pooled encoder features; each pool
image joins the cluster whose centre is most cosine-similar to its features. Each cluster receives a quota of the
budget proportional to its share of the labeled images and is filled with its lowest-entropy images first (the
model's most confident ones; ``highest`` reverses it). A cluster with too few images passes its shortfall on to
the others, in proportion to their quotas.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
from sklearn.cluster import KMeans
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pointseg.data.bands import BandScaling
from pointseg.data.labels import resize_image
from pointseg.data.sources import Source
from pointseg.models import SegmentationModel
from pointseg.predictor import Predictor

DIRECTIONS = ("lowest", "highest")


@torch.no_grad()
def describe_images(model: SegmentationModel, images: torch.Tensor, background: int | None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, C)`` pooled features of the deepest encoder map, and ``(B,)`` mean pixel entropy (nats) over the
    pixels not predicted as ``background`` (NaN for an image that is all background)."""
    features = model.encode(images)
    logits = model.decode(features).float()  # (B, K, H, W)
    probs = logits.softmax(1)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(1)  # (B, H, W)
    keep = torch.ones_like(entropy, dtype=torch.bool) if background is None else probs.argmax(1) != background
    score = (entropy * keep).sum((1, 2)) / keep.sum((1, 2))  # NaN where nothing is kept
    return features[-1].float().mean((2, 3)), score


def cluster_labeled(features: np.ndarray, clusters: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """K-Means on the L2-normalised labeled features: the ``(K, C)`` unit centres and each image's cluster."""
    if not 1 <= clusters <= len(features):
        raise ValueError(f"--clusters must be between 1 and the number of labeled images ({len(features)}), "
                         f"got {clusters}")
    unit = features / np.linalg.norm(features, axis=1, keepdims=True).clip(1e-12)
    kmeans = KMeans(clusters, n_init=10, random_state=seed).fit(unit)
    centres = kmeans.cluster_centers_ / np.linalg.norm(kmeans.cluster_centers_, axis=1, keepdims=True).clip(1e-12)
    return centres, kmeans.labels_


def nearest_cluster(features: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The cluster of each ``(N, C)`` feature: the centre of highest cosine similarity."""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True).clip(1e-12)
    return (unit @ centres.T).argmax(1)


def quotas(labeled_per_cluster: Sequence[int] | np.ndarray, available: Sequence[int] | np.ndarray, budget: int
           ) -> np.ndarray:
    """Images to take from each cluster: ``budget`` shared in proportion to the labeled images per cluster (largest
    remainders), no cluster above what it has; a shortfall goes to the clusters with room, in proportion again.
    The quotas add up to ``min(budget, sum(available))``."""
    labeled, room = np.asarray(labeled_per_cluster, float), np.asarray(available, int)
    take = np.zeros(len(room), int)
    left = min(budget, int(room.sum()))
    while left > 0:
        open_ = room - take > 0
        weights = np.where(open_, labeled, 0.0)
        if weights.sum() == 0:  # clusters with room but no labeled share: by their room
            weights = np.where(open_, room - take, 0).astype(float)
        share = weights / weights.sum() * left
        extra = np.floor(share).astype(int)
        for i in np.argsort(-(share - extra), kind="stable")[: left - extra.sum()]:
            extra[i] += 1
        extra = np.minimum(extra, room - take)
        take += extra
        left -= int(extra.sum())
    return take


def select(cluster: np.ndarray, entropy: np.ndarray, quota: np.ndarray, direction: str = "lowest") -> np.ndarray:
    """Indices of the chosen pool images: each cluster's ``quota`` of lowest (or highest) entropy; an image without
    a score (all background) comes last."""
    if direction not in DIRECTIONS:
        raise KeyError(f"unknown entropy direction {direction!r}; valid: {list(DIRECTIONS)}")
    order_key = np.where(np.isnan(entropy), math.inf, entropy if direction == "lowest" else -entropy)
    chosen = []
    for c, n in enumerate(quota):
        members = np.flatnonzero(cluster == c)
        chosen += list(members[np.argsort(order_key[members], kind="stable")[:n]])
    return np.sort(np.asarray(chosen, dtype=int))


class SquareImages(Dataset):
    """Every image of ``sources`` resized to ``size`` x ``size`` (``mode`` filter) and scaled by ``scaling``: one
    batchable view of images of any size."""

    def __init__(self, sources: Sequence[Source], size: int, scaling: BandScaling, mode: str = "area") -> None:
        self.items = [(source, ref) for source in sources for ref in source.refs]
        self.size, self.scaling, self.mode = size, scaling, mode

    def __len__(self) -> int:
        return len(self.items)

    def path(self, index: int) -> Path:
        return Path(self.items[index][1].image)

    def __getitem__(self, index: int) -> dict:
        source, ref = self.items[index]
        image = resize_image(np.asarray(source.read(ref)["image"]), (self.size, self.size), self.mode)
        return {"index": index, "image": torch.from_numpy(self.scaling(image))}


@dataclass
class Scores:
    """Pooled features and entropy of each image of a stream, and its throughput."""

    features: np.ndarray  # (N, C)
    entropy: np.ndarray  # (N,)
    images_per_s: float


def score_images(predictor: Predictor, dataset: SquareImages, background: int | None, batch_size: int = 16,
                 desc: str = "score") -> Scores:
    """Stream ``dataset`` through the predictor's model in batches, keeping only a feature vector and a score per
    image."""
    device = predictor.device
    features, entropy = [], []
    start = time.perf_counter()
    for batch in tqdm(DataLoader(dataset, batch_size=batch_size), desc=desc, unit="batch"):
        with predictor.autocast():
            f, e = describe_images(cast(SegmentationModel, predictor.model), batch["image"].to(device), background)
        features.append(f.cpu().numpy())
        entropy.append(e.cpu().numpy())
    seconds = time.perf_counter() - start
    return Scores(np.concatenate(features), np.concatenate(entropy), len(dataset) / max(seconds, 1e-9))


def background_index(names: Sequence[str], background: str | None) -> int | None:
    """The class left out of the entropy: ``background`` by name; ``auto``: a class named background, if any."""
    if background is None or background == "none":
        return None
    if background == "auto":
        return list(names).index("background") if "background" in names else None
    if background not in names:
        raise ValueError(f"--background {background!r} is not a class of the model; classes: {list(names)}")
    return list(names).index(background)


def report(budget: int, clusters: int, direction: str, counts: Sequence[np.ndarray], quota: np.ndarray,
           chosen: np.ndarray, cluster: np.ndarray, pool: Scores, pools: list[str], background: int | None) -> dict:
    """What was selected and why, JSON-ready: the table per cluster, the entropy of picked and rejected images and
    the throughput of scoring the pool."""
    picked = np.zeros(len(cluster), bool)
    picked[chosen] = True

    def stats(values: np.ndarray) -> dict:
        finite = values[np.isfinite(values)]
        return {"images": int(len(values)), "mean_entropy": float(finite.mean()) if len(finite) else None}

    table = [{"cluster": c, "labeled": int(counts[0][c]), "pool": int(counts[1][c]), "quota": int(quota[c]),
              "picked": int(picked[cluster == c].sum())} for c in range(clusters)]
    return {"budget": budget, "selected": int(picked.sum()), "clusters": table, "direction": direction,
            "background_class": background, "pools": pools, "picked": stats(pool.entropy[picked]),
            "rejected": stats(pool.entropy[~picked]), "pool_images_per_s": round(pool.images_per_s, 2)}


def contact_sheet(view: SquareImages, chosen: np.ndarray, entropy: np.ndarray, per_row: int = 8
                  ) -> tuple[list[tuple[str, np.ndarray]], list[tuple[str, np.ndarray]]]:
    """Thumbnails of picked and rejected images, each row spread evenly over its images in entropy order."""
    from pointseg.evaluate import display_rgb

    rejected = np.setdiff1d(np.arange(len(view)), chosen)
    rows = []
    for members in (chosen, rejected):
        ranked = members[np.argsort(np.nan_to_num(entropy[members], nan=np.inf), kind="stable")]
        shown = ranked[np.unique(np.linspace(0, len(ranked) - 1, min(per_row, len(ranked))).round().astype(int))] \
            if len(ranked) else ranked
        rows.append([(f"{view.path(i).stem} {entropy[i]:.3f}", display_rgb(view[i]["image"].numpy()))
                     for i in shown])
    return rows[0], rows[1]
