import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from pointseg.calibration import calibration_bins, ece_from_bins, expected_calibration_error, reliability
from pointseg.report import plot_reliability


def case(seed=0):
    g = torch.Generator().manual_seed(seed)
    probs = (torch.randn(2, 5, 8, 8, generator=g) * 2).softmax(1)
    target = torch.randint(0, 5, (2, 8, 8), generator=g)
    target[0, :2] = 255
    return probs, target


@pytest.mark.parametrize("n_bins", [10, 15])
def test_ece_matches_torchmetrics(n_bins):
    probs, target = case()
    metric = MulticlassCalibrationError(num_classes=5, n_bins=n_bins, norm="l1", ignore_index=255)
    assert expected_calibration_error(probs, target, n_bins) == pytest.approx(metric(probs, target).item(), abs=1e-6)


def test_bins_add_up_over_batches():
    probs, target = case(1)
    whole = calibration_bins(probs, target)
    parts = calibration_bins(probs[:1], target[:1]) + calibration_bins(probs[1:], target[1:])
    assert torch.allclose(whole, parts) and ece_from_bins(whole) == pytest.approx(ece_from_bins(parts))


def test_hand_computed_ece():
    # Two pixels, both with confidence 0.8 (same bin); one right, one wrong: |0.8 - 0.5| = 0.3.
    probs = torch.tensor([[0.8, 0.2], [0.8, 0.2]]).T.reshape(1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    assert expected_calibration_error(probs, target, n_bins=10) == pytest.approx(0.3)
    perfect = torch.tensor([[1.0, 0.0]]).T.reshape(1, 2, 1, 1)
    assert expected_calibration_error(perfect, torch.tensor([[[0]]])) == 0.0


def test_reliability_diagram_draws_each_bins_accuracy_and_count(tmp_path, monkeypatch):
    import pointseg.report

    probs, target = case(2)
    stats = reliability(calibration_bins(probs, target, 10))
    assert sum(stats["count"]) == 2 * 64 - 16
    drawn = {}
    save = pointseg.report._save
    monkeypatch.setattr(pointseg.report, "_save", lambda fig, path: drawn.setdefault("fig", fig) and save(fig, path))
    assert plot_reliability(stats, tmp_path / "r.png", "model").stat().st_size > 1000
    top, bottom = drawn["fig"].axes
    used = [i for i, n in enumerate(stats["count"]) if n > 0]
    assert [b.get_height() for b in top.patches] == pytest.approx([stats["accuracy"][i] for i in used])
    assert [b.get_x() + b.get_width() / 2 for b in top.patches] == pytest.approx([(i + 0.5) / 10 for i in used])
    assert [b.get_height() for b in bottom.patches] == pytest.approx(stats["count"])
    assert top.get_title() == f"model ECE {stats['ece']:.3f}"
