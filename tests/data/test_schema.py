import re

import numpy as np
import pytest
import torch

from pointseg.data import schema
from pointseg.data.cache import CachedSource
from pointseg.data.dataset import EvalDataset, TrainDataset, UnlabeledDataset, Windows
from pointseg.data.points import PointSet
from pointseg.data.sources import ImageFolder, LoveDA


@pytest.fixture
def source(tiny_loveda, tmp_path):
    return CachedSource(LoveDA(tiny_loveda, "Train", ("Rural",)), tmp_path / "cache")


def test_every_sample_a_dataset_makes_follows_its_schema(source, tiny_loveda):
    ref = source.refs[0]
    points = PointSet([str(i) for i in range(7)], {ref.id: np.array([[3, 4, 1]])}, {ref.id: (64, 64)}, {})
    tags = {r.id: np.eye(7, dtype=np.float32)[2] for r in source.refs}
    cases = [
        (source.read(ref), schema.SOURCE, {"H": 64, "W": 64}),
        (source.read(ref, (10, 20, 8, 100)), schema.SOURCE, {"H": 8, "W": 44}),
        (TrainDataset(source, 7, Windows(crop=16, scale=0.5))[0], schema.TRAIN, {"S": 16, "C": 7}),
        (TrainDataset(source, 7, Windows(crop=16), points=points)[0], schema.TRAIN, {"S": 16, "C": 7}),
        (UnlabeledDataset(source, crop=24, tags=tags)[1], schema.UNLABELED, {"S": 24, "C": 7}),
        (EvalDataset(source, scale=0.5)[0], schema.EVAL, {"h": 32, "w": 32, "H": 64, "W": 64}),
    ]
    images = ImageFolder(tiny_loveda / "Val" / "Rural" / "images_png", source.classes)
    cases += [(images.read(images.refs[0]), schema.SOURCE, {}), (EvalDataset(images)[0], schema.EVAL, {})]
    for sample, spec, dims in cases:
        schema.check(sample, spec, dims)


@pytest.mark.parametrize("sample, message", [
    ({"image": torch.zeros(3, 4, 4), "soft_mask": torch.zeros(7, 4, 4)}, "missing ['weight', 'valid']"),
    ({"image": torch.zeros(3, 4, 4), "soft_mask": torch.zeros(7, 4, 4), "weight": torch.zeros(4, 4),
      "valid": torch.zeros(4, 4), "extra": torch.zeros(1)}, "unknown ['extra']"),
    ({"image": torch.zeros(3, 4, 4, dtype=torch.float64), "soft_mask": torch.zeros(7, 4, 4),
      "weight": torch.zeros(4, 4), "valid": torch.zeros(4, 4)}, "image: dtype float64"),
    ({"image": torch.zeros(3, 4, 4), "soft_mask": torch.zeros(7, 4, 4), "weight": torch.zeros(4, 5),
      "valid": torch.zeros(4, 4)}, "weight: shape (4, 5)"),
    ({"image": torch.zeros(3, 4, 4), "soft_mask": torch.zeros(6, 4, 4), "weight": torch.zeros(4, 4),
      "valid": torch.zeros(4, 4)}, "soft_mask: shape (6, 4, 4)"),
])
def test_check_finds_what_does_not_fit(sample, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        schema.check(sample, schema.TRAIN, {"C": 7})
