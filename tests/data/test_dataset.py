import numpy as np
import pytest
import torch
from PIL import Image

from pointseg.data.cache import CachedSource
from pointseg.data.dataset import EvalDataset, TrainDataset, Windows, dihedral
from pointseg.data.points import PointSet
from pointseg.data.sources import LoveDA


@pytest.fixture
def source(tiny_loveda):
    return LoveDA(tiny_loveda, "Train", ("Rural",))


@pytest.mark.parametrize("downsample", ["soft", "nearest"])
def test_train_samples_have_soft_targets_matching_the_image(source, tmp_path, downsample):
    ds = TrainDataset(CachedSource(source, tmp_path), 7, Windows(crop=16, scale=0.5, downsample=downsample))
    sample = ds[0]
    assert sample["image"].shape == (3, 16, 16) and sample["soft_mask"].shape == (7, 16, 16)
    assert sample["weight"].shape == (16, 16)
    labeled = sample["weight"] > 0
    assert np.allclose(sample["soft_mask"].sum(0)[labeled], 1, atol=1e-5)
    if downsample == "nearest":
        assert set(np.unique(sample["soft_mask"])) <= {0.0, 1.0}


def test_window_larger_than_the_image_is_padded_as_unlabeled(source, tmp_path):
    ds = TrainDataset(source, 7, Windows(crop=80))
    weight = ds[0]["weight"]
    assert (weight == 0).sum() >= 80 * 80 - 64 * 64


def test_points_become_counts_and_proportions_in_the_crop(source, tmp_path):
    ref = source.refs[0]
    pts = np.array([[10, 10, 1], [11, 11, 2], [40, 50, 3]])  # the first two fall into one cell at scale 1/4
    points = PointSet([str(i) for i in range(7)], {ref.id: pts}, {ref.id: (64, 64)}, {})
    ds = TrainDataset(source, 7, Windows(crop=16, scale=0.25), points=points)
    sample = ds[0]
    assert sample["weight"].sum() == 3 and sorted(sample["weight"][sample["weight"] > 0].tolist()) == [1, 2]
    shared = sample["weight"] == 2
    assert sample["soft_mask"][1][shared].item() == 0.5 and sample["soft_mask"][2][shared].item() == 0.5


def test_random_rescale_keeps_labels_aligned(tmp_path):
    # A left/right split image: whatever the window and scale, label proportions follow the image colour.
    from pointseg.data.classes import ClassTable
    from pointseg.data.sources import ImageMaskFolder

    (tmp_path / "d" / "images").mkdir(parents=True)
    (tmp_path / "d" / "masks").mkdir()
    mask = np.zeros((96, 96), dtype=np.uint8)
    mask[:, 41:] = 1
    Image.fromarray(np.stack([mask * 255] * 3, -1)).save(tmp_path / "d" / "images" / "a.png")
    Image.fromarray(mask).save(tmp_path / "d" / "masks" / "a.png")
    table = ClassTable(("dark", "bright"), ((0, 0, 0), (255, 255, 255)))
    source = ImageMaskFolder(tmp_path / "d", table)
    ds = TrainDataset(CachedSource(source, tmp_path / "c"), 2, Windows(crop=24, scale=0.5, mode="area",
                                                                      rescale=(0.7, 1.4)))
    for _ in range(5):
        s = ds[0]
        assert np.allclose(s["image"].mean(0).numpy(), s["soft_mask"][1].numpy(), atol=2 / 255)


def test_dihedral_moves_all_arrays_together():
    a = np.arange(12).reshape(3, 4)
    c = np.stack([a, -a])
    out_a, out_c = dihedral([a, c], 1, True)
    assert np.array_equal(out_c[0], out_a) and np.array_equal(out_c[1], -out_a)


def test_unlabeled_windows_mark_padding_invalid_and_carry_monitoring_masks(source, tmp_path):
    from pointseg.data.dataset import UnlabeledDataset

    tags = {r.id: np.eye(7, dtype=np.float32)[1] for r in source.refs}
    ds = UnlabeledDataset(CachedSource(source, tmp_path), crop=80, tags=tags)
    sample = ds[0]
    assert set(sample) == {"image", "valid", "mask", "tags"}
    assert sample["valid"].sum() == 64 * 64
    assert torch.all(sample["mask"][sample["valid"] == 0] == 255)
    assert sample["tags"].tolist() == [0, 1, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="tags missing"):
        UnlabeledDataset(source, crop=8, tags={})


def test_unlabeled_images_without_masks_get_ignored_monitoring_masks(tmp_path):
    from pointseg.data.classes import LOVEDA_CLASSES
    from pointseg.data.dataset import UnlabeledDataset
    from pointseg.data.sources import ImageFolder

    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.full((30, 40, 3), 90, dtype=np.uint8)).save(tmp_path / "imgs" / "a.png")
    source = ImageFolder(tmp_path / "imgs", LOVEDA_CLASSES)
    cache = CachedSource(source, tmp_path / "c")
    assert set(UnlabeledDataset(cache, crop=16, with_mask=False)[0]) == {"image", "valid"}
    sample = UnlabeledDataset(cache, crop=16, with_mask=True)[0]  # batched with images that have masks
    assert torch.all(sample["mask"] == 255)




def test_eval_images_are_resized_with_the_mode_filter_and_masks_stay_full_resolution(source, tmp_path):
    sample = EvalDataset(CachedSource(source, tmp_path), scale=0.5, mode="area")[0]
    full = source.read(source.refs[0])
    box = full["image"].astype(np.float64).reshape(32, 2, 32, 2, 3).mean((1, 3)).transpose(2, 0, 1) / 255
    assert sample["image"].shape == (3, 32, 32) and np.abs(sample["image"].numpy() - box).max() <= 1 / 255 + 1e-6
    assert np.array_equal(sample["mask"].numpy(), full["mask"]) and sample["id"] == "Rural/0"


def test_cached_and_uncached_sources_give_the_same_training_samples(source, tmp_path):
    plain = TrainDataset(source, 7, Windows(crop=16, scale=0.5, rescale=(0.8, 1.2)))
    cached = TrainDataset(CachedSource(source, tmp_path), 7, Windows(crop=16, scale=0.5, rescale=(0.8, 1.2)))
    for item in [(0, (3, 1, 0)), (2, (3, 1, 1)), (3, (5, 2, 0))]:
        a, b = plain[item], cached[item]
        assert all(torch.equal(a[k], b[k]) for k in a)
