import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pointseg.data.labels import axis_weights, hard_to_soft, points_to_soft, soft_downsample

IGNORE = 255


def dense_matrix(full: int, low: int, mode: str) -> np.ndarray:
    index, weight = axis_weights(full, low, mode)
    m = np.zeros((low, full))
    np.add.at(m, (index, np.broadcast_to(np.arange(full), index.shape)), weight)
    return m


@pytest.mark.parametrize("mode, pil_filter", [("area", Image.Resampling.BOX), ("bilinear", Image.Resampling.BILINEAR)])
@pytest.mark.parametrize("full, low", [(50, 19), (64, 16), (30, 45), (37, 11), (53, 20), (1024, 300)])
def test_axis_weights_reproduce_pils_resize(mode, pil_filter, full, low):
    x = np.random.default_rng(0).random((full, 7)).astype(np.float32)
    expected = np.asarray(Image.fromarray(x, mode="F").resize((7, low), pil_filter))
    assert np.abs(dense_matrix(full, low, mode) @ x - expected).max() < 1e-5


def test_area_integer_factor_is_the_block_mean():
    rng = np.random.default_rng(1)
    mask = rng.integers(0, 3, (8, 12)).astype(np.uint8)
    mask[0, 0] = mask[5, 7] = IGNORE
    soft, weight = soft_downsample(mask, 3, (4, 6), "area", IGNORE)
    one_hot = np.stack([mask == c for c in range(3)]).astype(np.float64)
    block = one_hot.reshape(3, 4, 2, 6, 2).mean((2, 4))  # (C, 4, 6): labeled share of each class
    np.testing.assert_allclose(soft * weight, block, atol=1e-6)
    np.testing.assert_allclose(weight, block.sum(0), atol=1e-6)
    assert weight[0, 0] == 0.75 and np.allclose(soft[:, 0, 0].sum(), 1)


@pytest.mark.parametrize("mode", ["area", "bilinear"])
def test_matches_one_hot_plus_ignore_channel_resized_like_the_image(mode):
    # The reference construction: one-hot stack with an extra ignore channel, each channel resized by PIL
    # with the image's filter; soft = class channels / labeled mass, weight = labeled mass / total mass.
    rng = np.random.default_rng(2)
    mask = rng.integers(0, 4, (37, 53)).astype(np.uint8)
    mask[rng.random(mask.shape) < 0.1] = IGNORE
    soft, weight = soft_downsample(mask, 4, (11, 20), mode, IGNORE)
    f = {"area": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR}[mode]
    chans = [np.asarray(Image.fromarray((mask == c).astype(np.float32), mode="F").resize((20, 11), f))
             for c in [0, 1, 2, 3, IGNORE]]
    stack = np.stack(chans).astype(np.float64)
    np.testing.assert_allclose(weight, stack[:4].sum(0) / stack.sum(0), atol=1e-5)
    np.testing.assert_allclose(soft, stack[:4] / stack[:4].sum(0), atol=1e-5)


def test_area_conserves_class_mass_for_integer_factors():
    mask = np.random.default_rng(3).integers(0, 5, (100, 70)).astype(np.uint8)
    soft, weight = soft_downsample(mask, 5, (25, 14), "area")
    mass = (soft * weight).sum((1, 2)) * (100 * 70) / (25 * 14)
    np.testing.assert_allclose(mass, np.bincount(mask.ravel(), minlength=5), rtol=1e-4)


def test_matches_torch_area_interpolation_of_the_one_hot_stack():
    mask = np.random.default_rng(4).integers(0, 6, (64, 96)).astype(np.uint8)
    soft, weight = soft_downsample(mask, 6, (16, 24), "area")
    one_hot = F.one_hot(torch.from_numpy(mask).long(), 6).permute(2, 0, 1)[None].float()
    expected = F.interpolate(one_hot, size=(16, 24), mode="area")[0].numpy()
    np.testing.assert_allclose(soft, expected, atol=1e-6)
    assert np.all(weight == 1)


def test_thin_structures_survive_soft_but_not_nearest():
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[:, 30] = 1  # a one-pixel road
    soft, _ = soft_downsample(mask, 2, (8, 8), "area")
    nearest = np.asarray(Image.fromarray(mask).resize((8, 8), Image.Resampling.NEAREST))
    assert (nearest == 1).sum() == 0
    assert np.allclose(soft[1, :, 3], 1 / 8)


def test_out_of_range_class_is_an_error():
    with pytest.raises(ValueError, match="num_classes"):
        soft_downsample(np.full((4, 4), 7, dtype=np.uint8), 3, (2, 2))


def test_hard_to_soft_is_one_hot_with_labeled_weight():
    soft, weight = hard_to_soft(np.array([[0, 2], [IGNORE, 1]], dtype=np.uint8), 3, IGNORE)
    assert soft[:, 0, 1].tolist() == [0, 0, 1] and weight.tolist() == [[1, 1], [0, 1]]
    assert soft[:, 1, 0].tolist() == [0, 0, 0]


def test_points_give_proportions_and_counts_per_cell():
    pts = np.array([[0, 0, 1], [1, 1, 2], [1, 0, 2], [99, 99, 0]])
    soft, weight = points_to_soft(pts, (100, 100), (10, 10), 3)
    assert weight[0, 0] == 3 and weight[9, 9] == 1 and weight.sum() == 4
    np.testing.assert_allclose(soft[:, 0, 0], [0, 1 / 3, 2 / 3])
    assert soft[0, 9, 9] == 1


def test_points_weighted_soft_ce_equals_partial_ce_over_the_points():
    from pointseg.losses import partial_cross_entropy, soft_cross_entropy

    logits = torch.randn(1, 3, 10, 10)
    pts = np.array([[5, 5, 1], [15, 25, 2], [90, 10, 0]])
    soft, weight = points_to_soft(pts, (100, 100), (10, 10), 3)
    target = torch.full((1, 10, 10), IGNORE)
    target[0, 0, 0], target[0, 1, 2], target[0, 9, 1] = 1, 2, 0
    ours = soft_cross_entropy(logits, torch.from_numpy(soft)[None], torch.from_numpy(weight)[None])
    assert torch.allclose(ours, partial_cross_entropy(logits, target, IGNORE))


def test_information_kept_counts_a_thin_road_lost_by_nearest(tmp_path):
    from pointseg.data.classes import ClassTable
    from pointseg.data.sources import ImageMaskFolder
    from pointseg.label_report import format_kept_table, information_kept

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[:, 30] = 1  # a one-pixel road, between the centres of the 8x8 cells
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(mask).save(tmp_path / "masks" / "a.png")
    source = ImageMaskFolder(tmp_path, ClassTable(("land", "road"), ((0, 0, 0), (255, 255, 255))))
    report = information_kept(source, 0.125, progress=False)
    assert report["kept_nearest"] == [1.0, 0.0] and report["kept_soft"] == [1.0, 1.0]
    assert report["images_lost_nearest"] == [0, 1]
    assert "| road | 1.6% | 0.0% | 100.0% | 1 |" in format_kept_table(report)
