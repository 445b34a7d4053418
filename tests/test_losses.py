import math

import pytest
import torch
import torch.nn.functional as F

from pointseg.losses import (
    LOSSES,
    GatedCRFLoss,
    build_loss,
    gated_crf_loss,
    kl_divergence,
    one_hot_target,
    partial_cross_entropy,
    partial_focal_loss,
    soft_cross_entropy,
)

IGNORE = 255


def random_case(seed: int = 0, labeled_fraction: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 5, 8, 8, generator=g)
    target = torch.randint(0, 5, (2, 8, 8), generator=g)
    target[torch.rand(2, 8, 8, generator=g) > labeled_fraction] = IGNORE
    return logits, target


def test_pce_equals_cross_entropy_when_every_pixel_is_labeled():
    logits, _ = random_case()
    target = torch.randint(0, 5, (2, 8, 8))
    assert torch.allclose(partial_cross_entropy(logits, target, IGNORE), F.cross_entropy(logits, target))


def test_pce_matches_cross_entropy_with_ignore_index():
    logits, target = random_case(1)
    expected = F.cross_entropy(logits, target, ignore_index=IGNORE)
    assert torch.allclose(partial_cross_entropy(logits, target, IGNORE), expected)


def test_focal_with_gamma_zero_is_pce():
    logits, target = random_case(2)
    pce = partial_cross_entropy(logits, target, IGNORE)
    assert torch.allclose(partial_focal_loss(logits, target, 0.0, IGNORE), pce)


def test_hand_computed_case():
    # One image, 2 classes, 1x2 pixels: pixel 0 labeled class 0 with logits (0, 0) -> p = 1/2;
    # pixel 1 unlabeled. pCE = log 2; focal(gamma=2) = (1 - 1/2)^2 * log 2 = log(2) / 4.
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, :, 0, 1] = torch.tensor([5.0, -5.0])
    target = torch.tensor([[[0, IGNORE]]])
    assert partial_cross_entropy(logits, target, IGNORE).item() == pytest.approx(math.log(2))
    assert partial_focal_loss(logits, target, 2.0, IGNORE).item() == pytest.approx(math.log(2) / 4)


def test_focal_down_weights_confident_pixels():
    # p(true) = sigmoid(2) for 2 classes with logits (2, 0): focal = (1-p)^gamma * -log p
    logits = torch.tensor([2.0, 0.0]).view(1, 2, 1, 1)
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    p = torch.sigmoid(torch.tensor(2.0))
    assert partial_focal_loss(logits, target, 3.0, IGNORE).item() == pytest.approx(((1 - p) ** 3 * -p.log()).item())


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_unlabeled_pixels_get_exactly_zero_gradient(name):
    logits, target = random_case(3)
    logits.requires_grad_(True)
    build_loss(name)(logits, *one_hot_target(target, 5, IGNORE)).backward()
    unlabeled = (target == IGNORE).unsqueeze(1).expand_as(logits)
    assert torch.all(logits.grad[unlabeled] == 0)
    assert torch.all(logits.grad[~unlabeled].abs().sum() > 0)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_no_labeled_pixel_gives_zero_not_nan(name):
    logits = torch.randn(2, 5, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), IGNORE)
    loss = build_loss(name)(logits, *one_hot_target(target, 5, IGNORE))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.all(logits.grad == 0)


def test_mean_is_over_labeled_pixels_of_the_whole_batch():
    # Image 0 has 1 labeled pixel, image 1 has 3: the mean weights all 4 pixels equally (not per image).
    logits, _ = random_case(4)
    target = torch.full((2, 8, 8), IGNORE)
    target[0, 0, 0] = 1
    target[1, 0, :3] = 2
    per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")
    assert torch.allclose(partial_cross_entropy(logits, target, IGNORE), per_pixel.sum() / 4)


def test_bf16_logits_are_handled_in_float32():
    logits, target = random_case(5)
    loss = partial_cross_entropy(logits.bfloat16(), target, IGNORE)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(partial_cross_entropy(logits.bfloat16().float(), target, IGNORE).item())


def test_unknown_loss_lists_valid_names():
    with pytest.raises(KeyError, match="focal"):
        build_loss("dice")


def soft_case(seed: int = 6):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 6, 6, generator=g)
    soft = torch.rand(2, 4, 6, 6, generator=g).softmax(1)
    weight = torch.rand(2, 6, 6, generator=g)
    return logits, soft, weight


def test_soft_cross_entropy_matches_cross_entropy_with_probability_targets():
    logits, soft, _ = soft_case()
    expected = F.cross_entropy(logits, soft)
    assert torch.allclose(soft_cross_entropy(logits, soft, torch.ones(2, 6, 6)), expected)


def test_weights_are_a_weighted_mean():
    logits, soft, weight = soft_case()
    per_pixel = F.cross_entropy(logits, soft, reduction="none")  # (B, H, W)
    assert torch.allclose(soft_cross_entropy(logits, soft, weight), (per_pixel * weight).sum() / weight.sum())


def test_kl_matches_f_kl_div_and_is_zero_for_a_perfect_prediction():
    logits, soft, _ = soft_case()
    ones = torch.ones(2, 6, 6)
    expected = F.kl_div(F.log_softmax(logits, 1), soft, reduction="sum") / ones.sum()
    assert torch.allclose(kl_divergence(logits, soft, ones), expected, atol=1e-6)
    assert kl_divergence(soft.log(), soft, ones).abs().item() < 1e-6
    one_hot = F.one_hot(torch.randint(0, 4, (2, 6, 6)), 4).permute(0, 3, 1, 2).float()  # 0 log 0 = 0
    assert torch.isfinite(kl_divergence(logits, one_hot, ones))


def test_kl_and_soft_ce_differ_by_the_target_entropy():
    logits, soft, weight = soft_case()
    entropy = -(soft * soft.log()).sum(1)
    gap = soft_cross_entropy(logits, soft, weight) - kl_divergence(logits, soft, weight)
    assert torch.allclose(gap, (entropy * weight).sum() / weight.sum(), atol=1e-5)


def test_single_class_only_drops_mixed_pixels():
    logits = torch.randn(1, 2, 1, 2)
    soft = torch.tensor([[1.0, 0.5], [0.0, 0.5]]).view(1, 2, 1, 2)  # pixel 0 pure class 0, pixel 1 mixed
    weight = torch.ones(1, 1, 2)
    pure_only = build_loss("ce", multi_class=False)(logits, soft, weight)
    assert torch.allclose(pure_only, -F.log_softmax(logits, 1)[0, 0, 0, 0])
    assert not torch.allclose(build_loss("ce", multi_class=True)(logits, soft, weight), pure_only)


# --- Gated CRF -----------------------------------------------------------------------------------------------

def slow_gated_crf(probs, image, valid, sigma_xy, sigma_rgb, radius):
    """The Gated CRF loss by its definition, pixel pair by pixel pair (full resolution)."""
    b, _, h, w = probs.shape
    total = 0.0
    for n in range(b):
        for i in range(h):
            for j in range(w):
                for di in range(-radius, radius + 1):
                    for dj in range(-radius, radius + 1):
                        u, v = i + di, j + dj
                        if (di, dj) == (0, 0) or not (0 <= u < h and 0 <= v < w):
                            continue
                        k = math.exp(-(di * di + dj * dj) / (2 * sigma_xy**2)
                                     - float(((image[n, :, i, j] - image[n, :, u, v]) ** 2).sum()) / (2 * sigma_rgb**2))
                        gate = float(valid[n, i, j] * valid[n, u, v])
                        total += gate * k * (1 - float((probs[n, :, i, j] * probs[n, :, u, v]).sum()))
    return total / float(valid.sum())


def test_gated_crf_matches_the_pairwise_definition():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(2, 3, 6, 7, generator=g).softmax(1).double()
    image = torch.rand(2, 3, 6, 7, generator=g).double()
    valid = (torch.rand(2, 6, 7, generator=g) > 0.2).double()
    fast = gated_crf_loss(probs, image, valid, sigma_xy=2.0, sigma_rgb=0.3, radius=2, downsample=1)
    assert float(fast) == pytest.approx(slow_gated_crf(probs, image, valid, 2.0, 0.3, 2), rel=1e-9)


def test_gated_crf_downsampled_is_the_definition_on_block_means():
    g = torch.Generator().manual_seed(1)
    probs = torch.rand(1, 3, 8, 8, generator=g).softmax(1).double()
    image = torch.rand(1, 3, 8, 8, generator=g).double()
    valid = torch.ones(1, 8, 8, dtype=torch.float64)
    valid[0, 0, 0] = 0  # gates its whole 2x2 block
    fast = gated_crf_loss(probs, image, valid, sigma_xy=4.0, sigma_rgb=0.3, radius=1, downsample=2)
    low_valid = torch.ones(1, 4, 4, dtype=torch.float64)
    low_valid[0, 0, 0] = 0
    # sigma_xy is in full-resolution pixels: one low-resolution step is 2 of them
    slow = slow_gated_crf(F.avg_pool2d(probs, 2), F.avg_pool2d(image, 2), low_valid, 2.0, 0.3, 1)
    assert float(fast) == pytest.approx(slow, rel=1e-9)


def test_gated_crf_is_zero_for_a_prediction_constant_in_each_colour_region():
    image = torch.zeros(1, 3, 12, 12)
    image[..., 6:] = 1.0  # two colour regions, left and right
    probs = torch.zeros(1, 4, 12, 12)
    probs[0, 1, :, :6] = 1.0
    probs[0, 3, :, 6:] = 1.0
    valid = torch.ones(1, 12, 12)
    assert float(gated_crf_loss(probs, image, valid, sigma_xy=6, sigma_rgb=0.05, radius=3, downsample=1)) == 0.0
    # the same split across a uniform colour costs: the kernel links the two halves
    flat = torch.zeros_like(image)
    assert float(gated_crf_loss(probs, flat, valid, sigma_xy=6, sigma_rgb=0.05, radius=3, downsample=1)) > 0.1


def test_gated_crf_gradient_only_where_the_kernel_reaches():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 3, 16, 16, generator=g, requires_grad=True)
    image = torch.rand(1, 3, 16, 16, generator=g)
    valid = torch.zeros(1, 16, 16)
    valid[0, 4:8, 4:8] = 1  # a gated island
    GatedCRFLoss(sigma_xy=3, sigma_rgb=0.5, radius=2, downsample=1)(logits, image, valid).backward()
    grad = logits.grad.abs().sum(1)[0]
    assert (grad[4:8, 4:8] > 0).all()
    outside = torch.ones(16, 16, dtype=torch.bool)
    outside[4:8, 4:8] = False
    assert (grad[outside] == 0).all()


def test_gated_crf_rejects_a_bad_kernel():
    with pytest.raises(ValueError, match="radius"):
        GatedCRFLoss(radius=0)
