import pytest
import torch
from torch import nn

from pointseg.config import load_config
from pointseg.inference import native_bf16, predict_logits, use_amp


class PointwiseModel(nn.Module):
    """A 1x1 conv: its output at a pixel depends on that pixel only, so padding must not change anything."""

    def __init__(self, size_divisor: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.size_divisor = size_divisor

    def forward(self, x):
        assert x.shape[-1] % self.size_divisor == 0 and x.shape[-2] % self.size_divisor == 0
        return self.conv(x)


def test_padding_to_the_size_divisor_does_not_change_logits():
    torch.manual_seed(0)
    model = PointwiseModel(32)
    x = torch.rand(1, 3, 45, 70)
    expected = model.conv(x)
    assert torch.allclose(predict_logits(model, x, amp=False), expected, atol=1e-6)


def test_logits_are_upsampled_to_label_size():
    model = PointwiseModel(8)
    out = predict_logits(model, torch.rand(2, 3, 16, 24), out_size=(32, 48), amp=False)
    assert out.shape == (2, 4, 32, 48) and out.dtype == torch.float32


@pytest.mark.parametrize("avx512_bf16, amx, native", [(False, False, False), (True, False, True), (False, True, True)])
def test_auto_amp_uses_bf16_only_where_the_cpu_has_it(monkeypatch, avx512_bf16, amx, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    cpu = torch.device("cpu")
    assert native_bf16(cpu) is native and use_amp("auto", cpu) is native
    assert use_amp(True, cpu) is True and use_amp(False, cpu) is False


def test_amp_setting_is_checked():
    with pytest.raises(ValueError, match="'train.amp' must be one of auto, true, false"):
        load_config(None, ["train.amp=sometimes"])


def test_flips_average_the_probabilities_of_four_flipped_views():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, 3, padding=1)
    image = torch.rand(2, 3, 8, 10)
    with torch.no_grad():
        views = [model(image).softmax(1), model(image.flip(-1)).softmax(1).flip(-1),
                 model(image.flip(-2)).softmax(1).flip(-2), model(image.flip(-2, -1)).softmax(1).flip(-2, -1)]
    want = torch.stack(views).mean(0)
    got = predict_logits(model, image, amp=False, flips=True)
    torch.testing.assert_close(got.softmax(1), want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(predict_logits(model, image, amp=False).softmax(1), want)  # the flips change it
    # a model that commutes with flips gives its own probabilities back
    symmetric = torch.nn.Conv2d(3, 4, 1)
    torch.testing.assert_close(predict_logits(symmetric, image, amp=False, flips=True).softmax(1),
                               predict_logits(symmetric, image, amp=False).softmax(1), rtol=1e-5, atol=1e-6)


def test_top_class_is_argmax_over_the_first_axis_ties_included():
    from pointseg.inference import top_class

    scores = torch.tensor([[[0.2, 0.5], [0.3, 0.1]], [[0.2, 0.4], [0.7, 0.1]], [[0.6, 0.5], [0.0, 0.1]]])
    assert top_class(scores).tolist() == [[2, 0], [1, 0]]  # ties go to the first class, as argmax
    rng = torch.Generator().manual_seed(0)
    many = torch.randint(0, 4, (7, 64, 48), generator=rng).float()  # many ties
    assert torch.equal(top_class(many), many.argmax(0))
