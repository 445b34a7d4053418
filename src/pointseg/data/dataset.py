"""Torch datasets over a :class:`ResizedCache`: random crops/flips for training, whole images for evaluation."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from pointseg.data.cache import ResizedCache
from pointseg.points import PointSet, rasterize


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)


def random_crop_flip(image: np.ndarray, target: np.ndarray, crop: int, rng: np.random.Generator,
                     ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """A random ``crop x crop`` window (padded with ignore if the image is smaller), random flips and 90° turns.

    Aerial images have no "up", so all eight dihedral orientations are equally likely.
    """
    h, w = target.shape
    ph, pw = max(crop - h, 0), max(crop - w, 0)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
        target = np.pad(target, ((0, ph), (0, pw)), constant_values=ignore_index)
        h, w = target.shape
    top, left = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
    image, target = image[top:top + crop, left:left + crop], target[top:top + crop, left:left + crop]
    k = int(rng.integers(4))
    image, target = np.rot90(image, k), np.rot90(target, k)
    if rng.random() < 0.5:
        image, target = image[:, ::-1], target[:, ::-1]
    return image, target


class TrainDataset(Dataset):
    """Training samples: ``image`` (3, crop, crop) float, ``mask`` (crop, crop) long with ``ignore_index``.

    Labels are dense (nearest-neighbour resized masks) unless ``points`` is given, in which case each image's
    target is its rasterised points and every other pixel is ``ignore_index``.
    """

    def __init__(self, cache: ResizedCache, crop: int, points: PointSet | None = None,
                 ignore_index: int = 255) -> None:
        self.cache = cache
        self.refs = cache.source.refs
        if points is not None:
            self.refs = [r for r in self.refs if r.id in points.images]
            if not self.refs:
                raise ValueError("no image of the dataset has points")
        self.crop = crop
        self.points = points
        self.ignore_index = ignore_index

    def __len__(self) -> int:
        return len(self.refs)

    def target(self, index: int) -> np.ndarray:
        """The label map of sample ``index`` at training resolution."""
        ref = self.refs[index]
        entry = self.cache.get(ref)
        if self.points is None:
            return entry["mask_lr"]
        return rasterize(self.points.images[ref.id], self.points.sizes[ref.id], entry["image"].shape[:2],
                         self.ignore_index)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(int(torch.randint(2**62, ())))  # follows torch's seeding
        image = self.cache.get(self.refs[index])["image"]
        image, target = random_crop_flip(image, self.target(index), self.crop, rng, self.ignore_index)
        return {"image": to_tensor(image), "mask": torch.from_numpy(np.ascontiguousarray(target)).long()}


class EvalDataset(Dataset):
    """Whole images at training resolution with their masks at full resolution (``mask`` may be absent)."""

    def __init__(self, cache: ResizedCache) -> None:
        self.cache = cache
        self.refs = cache.source.refs

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> dict:
        ref = self.refs[index]
        entry = self.cache.get(ref)
        sample = {"id": ref.id, "image": to_tensor(entry["image"])}
        if "mask" in entry:
            sample["mask"] = torch.from_numpy(entry["mask"]).long()
        return sample
