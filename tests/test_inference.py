import torch
from torch import nn

from pointseg.inference import predict_logits


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
