import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pointseg.build import build_method
from pointseg.config import load_config
from pointseg.losses import SoftCrossEntropy, one_hot_target
from pointseg.methods import METHODS, FixMatch, FixMatchOptions
from pointseg.methods.augment import StrongAugment, random_boxes
from pointseg.methods.pseudoseg import SelfAttentionRefinement, calibrated_fusion, grad_cam, insert_background, sharpen
from pointseg.models import build_model

C = 4


def batches(b=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, C, (b, size, size), generator=g)
    target[:, :, : size // 2] = 255  # half the pixels unlabeled
    soft, weight = one_hot_target(target, C)
    labeled = {"image": torch.rand(b, 3, size, size, generator=g), "soft_mask": soft.float(), "weight": weight}
    unlabeled = {"image": torch.rand(b, 3, size, size, generator=g), "valid": torch.ones(b, size, size),
                 "mask": torch.randint(0, C, (b, size, size), generator=g)}
    return labeled, unlabeled


EXPECTED_LOGS = {"supervised": {"loss_sup"},
                 "fixmatch": {"loss_sup", "loss_unsup", "mask_ratio", "pseudo_acc", "pseudo_ece"},
                 "pseudoseg": {"loss_sup", "loss_unsup", "loss_cls", "loss_sgc"} | {
                     f"pseudo_{s}_{m}" for s in ("fused", "decoder", "sgc", "target") for m in ("acc", "ece")}}


@pytest.mark.parametrize("model_name", ["unet-small", "unet-mobilenetv2"])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_one_step_gives_finite_loss_and_the_expected_logs(name, model_name):
    torch.manual_seed(0)
    cfg = load_config(None, [f"method.name={name}", "method.fixmatch.threshold=0.0",
                             "method.fixmatch.feature_dropout=0.5", "method.fixmatch.ema_decay=0.9",
                             "method.pseudoseg.grid_stride=8"])
    model = build_model(model_name, C)
    method = build_method(cfg, model, C)
    labeled, unlabeled = batches()
    loss, logs = method(model, labeled, unlabeled if method.uses_unlabeled else None)
    assert torch.isfinite(loss) and loss.item() > 0
    assert EXPECTED_LOGS[name] <= set(logs), set(logs)
    assert all(math.isfinite(v) for v in logs.values())
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    method.after_step(model)


def test_grad_cam_equals_class_activation_map_for_a_pooled_linear_head():
    torch.manual_seed(1)
    features = torch.rand(2, 5, 4, 6)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3))
    tags = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    cam = grad_cam(features, head, tags)
    assert cam.shape == (2, 3, 4, 6) and not cam.requires_grad
    expected = F.relu(torch.einsum("ck,bkhw->bchw", head[2].weight, features))
    expected = expected / expected.amax((2, 3), keepdim=True).clamp_min(1e-12) * tags[..., None, None]
    assert torch.allclose(cam, expected, atol=1e-5)
    assert cam[0, 2].abs().sum() == 0 and cam.max() <= 1


def test_sgc_shapes_and_background_channel():
    sgc = SelfAttentionRefinement(in_channels=10, num_classes=4, attention_dim=8, background_class=0)
    out = sgc(torch.rand(2, 10, 5, 5), torch.rand(2, 3, 5, 5), torch.ones(2, 5, 5, dtype=torch.bool))
    assert out.shape == (2, 4, 5, 5)
    scores = torch.tensor([0.2, 1.5, 0.7]).view(1, 3, 1, 1)
    assert insert_background(scores, 1, top=2.0).flatten().tolist() == pytest.approx([0.2, 0.5, 1.5, 0.7])
    assert insert_background(scores, None, top=2.0) is scores


def test_attention_ignores_padded_keys():
    sgc = SelfAttentionRefinement(4, 2, 4, None)
    cam = torch.zeros(1, 2, 1, 4)
    cam[0, 1, 0, 3] = 1.0  # only a padded position scores class 1
    valid = torch.tensor([[[True, True, True, False]]])
    sgc.to_logits = nn.Identity()
    out = sgc(torch.rand(1, 4, 1, 4), cam, valid)
    assert torch.allclose(out[0, 1, 0, :3], torch.zeros(3)), "nothing propagates from padding"


@pytest.mark.parametrize("norm", ["batch", "pixel"])
def test_fusion_sums_to_one(norm):
    d, s = torch.randn(2, 5, 4, 4) * 3, torch.randn(2, 5, 4, 4)
    fused = calibrated_fusion(d, s, 0.5, norm)
    assert torch.allclose(fused.sum(1), torch.ones(2, 4, 4), atol=1e-6)
    rms = torch.cat([d, s]).square().mean().sqrt()
    if norm == "batch":
        assert torch.allclose(calibrated_fusion(d, s, 1.0, norm), (d / rms).softmax(1), atol=1e-6)


def test_sharpening_limits():
    p = torch.tensor([0.5, 0.3, 0.2]).view(1, 3, 1, 1)
    assert torch.allclose(sharpen(p, 1.0), p)
    assert torch.allclose(sharpen(p, 0.01), torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1), atol=1e-6)
    entropy = lambda q: -(q * q.log()).sum()  # noqa: E731
    assert entropy(sharpen(p, 0.5)) < entropy(p) < entropy(sharpen(p, 2.0))
    assert torch.allclose(sharpen(p, 0.5), p.square() / p.square().sum())
    flat = torch.full((1, 7, 1, 1), 1 / 7)
    flat[:, 3] += 0.05  # p^(1/T) underflows in float32 here for T = 0.01; the result must still be one-hot
    assert torch.allclose(sharpen(flat / flat.sum(), 0.01).squeeze(), F.one_hot(torch.tensor(3), 7).float(), atol=1e-6)


@pytest.mark.parametrize("source", ["decoder", "sgc", "fused"])
def test_pseudo_target_is_the_chosen_source_sharpened(source):
    cfg = load_config(None, ["method.name=pseudoseg", f"method.pseudoseg.pseudo_source={source}",
                             "method.pseudoseg.temperature=0.5"])
    method = build_method(cfg, build_model("unet-small", C), C)
    sources = {name: torch.randn(2, C, 4, 4).softmax(1) for name in ("decoder", "sgc", "fused")}
    p = sources[source]
    assert torch.allclose(method.pseudo_target(sources), p.square() / p.square().sum(1, keepdim=True), atol=1e-6)


class ZeroLoss(nn.Module):
    def forward(self, *args):
        return torch.zeros((), requires_grad=True)


def test_sgc_loss_sends_no_gradient_into_the_backbone():
    torch.manual_seed(2)
    cfg = load_config(None, ["method.name=pseudoseg", "method.pseudoseg.grid_stride=8",
                             "method.pseudoseg.classifier_weight=0", "method.unlabeled_weight=0"])
    model = build_model("unet-small", C)
    method = build_method(cfg, model, C)
    labeled, unlabeled = batches()
    labeled["weight"].zero_()  # no supervised signal: only L_sa (and L_x, weight 0) remain
    labeled["weight"][:, :, 20:] = 1
    method.loss = ZeroLoss()
    loss, _ = method(model, labeled, unlabeled)
    loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.parameters())
    assert method.sgc.query.weight.grad.abs().sum() > 0


def test_fixmatch_consistency_is_divided_by_valid_pixels():
    method = FixMatch(SoftCrossEntropy(), FixMatchOptions(threshold=0.9))
    logits = torch.zeros(1, 2, 1, 4)  # CE = log 2 everywhere
    pseudo = torch.zeros(1, 1, 4, dtype=torch.long)
    confidence = torch.tensor([[[0.95, 0.95, 0.5, 0.99]]])
    valid = torch.tensor([[[1.0, 1.0, 1.0, 0.0]]])
    # confident and valid: pixels 0 and 1 -> 2 log 2, divided by 3 valid pixels
    assert method.consistency(logits, pseudo, confidence, valid).item() == pytest.approx(2 * math.log(2) / 3)


def test_ema_teacher_update():
    model = nn.Linear(2, 1)
    method = FixMatch(SoftCrossEntropy(), FixMatchOptions(ema_decay=0.9), model=model)
    before = method.teacher.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    method.after_step(model)
    assert torch.allclose(method.teacher.weight, 0.9 * before + 0.1 * model.weight)
    assert not any(p.requires_grad for p in method.teacher.parameters())


def test_strong_augmentation_and_boxes():
    torch.manual_seed(3)
    x = torch.rand(4, 3, 16, 16)
    y = StrongAugment(jitter_p=1.0)(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1 and not torch.allclose(x, y)
    boxes = random_boxes(50, 40, 40, area=(0.1, 0.2))
    frac = boxes.float().mean((1, 2))
    assert torch.all(frac > 0.06) and torch.all(frac < 0.26)
    assert random_boxes(3, 8, 8, p=0.0).sum() == 0


def test_fixmatch_cutmix_partners_within_the_batch_or_from_a_second_batch():
    first, other = FixMatch(SoftCrossEntropy()).partners(4, torch.device("cpu"))
    assert first.tolist() == [0, 1, 2, 3] and other.tolist() == [3, 0, 1, 2]
    s4p = FixMatch(SoftCrossEntropy(), FixMatchOptions(cutmix_partner="second"))
    first, other = s4p.partners(4, torch.device("cpu"))
    assert first.tolist() == [0, 1] and other.tolist() == [2, 3]
    with pytest.raises(ValueError, match="even number"):
        s4p.partners(3, torch.device("cpu"))


def test_s4p_learns_on_the_first_half_mixed_with_the_second():
    torch.manual_seed(0)
    model = build_model("unet-small", 3)
    sizes = []
    model.register_forward_hook(lambda module, args, out: sizes.append(args[0].shape[0]))
    method = FixMatch(SoftCrossEntropy(), FixMatchOptions(threshold=0.0, cutmix_p=1.0, cutmix_partner="second"))
    labeled = {"image": torch.rand(2, 3, 32, 32), "soft_mask": torch.full((2, 3, 32, 32), 1 / 3),
               "weight": torch.ones(2, 32, 32), "valid": torch.ones(2, 32, 32)}
    unlabeled = {"image": torch.rand(4, 3, 32, 32), "valid": torch.ones(4, 32, 32)}
    loss, _ = method(model, labeled, unlabeled)
    assert sizes == [2, 4, 2] and torch.isfinite(loss)  # labeled, pseudo labels of both halves, one strong view


def test_image_level_tags_reach_the_grad_cams_of_unlabeled_images(monkeypatch):
    """With tags, the Grad-CAMs of an unlabeled image are those of its given classes, not of what the classifier
    predicts."""
    import pointseg.methods.pseudoseg as pseudoseg

    torch.manual_seed(0)
    cfg = load_config(None, ["method.name=pseudoseg", "method.pseudoseg.grid_stride=8",
                             "method.pseudoseg.background_class=0"])
    model = build_model("unet-small", C)
    method = build_method(cfg, model, C)
    labeled, unlabeled = batches()
    unlabeled["tags"] = torch.tensor([[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]])  # per class, background first
    seen = []

    def recording(features, classifier, tags):
        seen.append(tags.detach().clone())
        return grad_cam(features, classifier, tags)

    monkeypatch.setattr(pseudoseg, "grad_cam", recording)
    method(model, labeled, unlabeled)
    assert any(torch.equal(t, unlabeled["tags"][:, 1:]) for t in seen), "the unlabeled images' own tags"


@pytest.mark.parametrize("view", ["paper", "v1"])
def test_cutout_pixels_are_left_out_of_the_unsupervised_loss(monkeypatch, view):
    import pointseg.methods.pseudoseg as pseudoseg

    cfg = load_config(None, ["method.name=pseudoseg", "method.pseudoseg.grid_stride=8",
                             f"method.pseudoseg.strong_view={view}"])
    torch.manual_seed(0)
    model = build_model("unet-small", C)
    method = build_method(cfg, model, C)
    labeled, unlabeled = batches()
    box = torch.zeros(2, 32, 32, dtype=torch.bool)
    box[:, 4:20, 8:24] = True
    monkeypatch.setattr(pseudoseg, "random_boxes", lambda *args, **kwargs: box.clone())
    monkeypatch.setattr(pseudoseg, "cutout_boxes", lambda *args, **kwargs: box.clone())
    base = torch.full((2, C, 32, 32), 1.0 / C)

    def loss_with(target):
        monkeypatch.setattr(method, "pseudo_target", lambda sources: target)
        torch.manual_seed(1)  # the same colour jitter each time
        return method(model, labeled, unlabeled)[1]["loss_unsup"]

    inside = base.clone()
    inside[:, :, box[0]] = F.one_hot(torch.zeros(int(box[0].sum()), dtype=torch.long), C).T.float()
    outside = base.clone()
    outside[:, :, ~box[0]] = F.one_hot(torch.zeros(int((~box[0]).sum()), dtype=torch.long), C).T.float()
    assert loss_with(inside) == pytest.approx(loss_with(base), abs=1e-6), "targets under the box do not count"
    assert loss_with(outside) != pytest.approx(loss_with(base), abs=1e-3), "the rest does"


def test_cutout_is_one_box_of_the_given_side_clipped_at_the_edges():
    from pointseg.methods.augment import cutout_boxes

    torch.manual_seed(0)
    boxes = cutout_boxes(200, 64, 64, 10)
    rows, cols = boxes.any(2), boxes.any(1)
    assert torch.all(boxes.sum((1, 2)) == rows.sum(1) * cols.sum(1)), "one rectangle each"
    assert torch.all(rows.sum(1) <= 10) and torch.all(cols.sum(1) <= 10)
    inside = (rows.sum(1) == 10) & (cols.sum(1) == 10)
    assert 0.6 < inside.float().mean() < 0.8  # a centre within 5 pixels of an edge clips the box: (54 / 64)^2


def test_the_simclr_colour_distortion_scales_with_its_strength():
    from pointseg.methods.augment import simclr_colour

    x = torch.rand(200, 3, 8, 8)
    torch.manual_seed(0)
    none = simclr_colour(x, 0.0)  # no jitter at strength 0: only the random greyscale (p 0.2) changes images
    grey = (none - none.mean(1, keepdim=True)).abs().amax((1, 2, 3)) < 1e-6
    assert torch.allclose(none[~grey], x[~grey], atol=1e-6) and 0.1 < grey.float().mean() < 0.3
    torch.manual_seed(0)
    mild = simclr_colour(x, 0.25)
    torch.manual_seed(0)
    strong = simclr_colour(x, 1.0)
    assert (strong - x).abs().mean() > 2 * (mild - x).abs().mean()


def test_image_level_tags_of_unlabeled_images_train_the_classifier():
    torch.manual_seed(0)
    cfg = load_config(None, ["method.name=pseudoseg", "method.pseudoseg.grid_stride=8", "method.unlabeled_weight=0",
                             "method.pseudoseg.sgc_weight=0", "method.pseudoseg.background_class=0"])
    model = build_model("unet-small", C)
    method = build_method(cfg, model, C)
    method.loss = ZeroLoss()
    labeled, unlabeled = batches()
    grads = []
    for tags in ([[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]], [[0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]]):
        method.zero_grad()
        torch.manual_seed(1)
        loss, _ = method(model, labeled, {**unlabeled, "tags": torch.tensor(tags)})
        loss.backward()
        grads.append(method.classifier[-1].weight.grad.clone())
    assert not torch.allclose(grads[0], grads[1]), "L_x sees the unlabeled images' tags"
