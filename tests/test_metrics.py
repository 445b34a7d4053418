import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

from pointseg.metrics import confusion_matrix, format_table, iou_per_class, summarize

IGNORE = 255


def case(seed: int = 0, classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, classes, (3, 16, 16), generator=g)
    pred = torch.where(torch.rand(3, 16, 16, generator=g) < 0.6, target, torch.randint(0, classes, (3, 16, 16),
                                                                                       generator=g))
    target[torch.rand(3, 16, 16, generator=g) < 0.1] = IGNORE
    return pred, target


def test_confusion_matrix_matches_torchmetrics():
    pred, target = case()
    expected = MulticlassConfusionMatrix(4, ignore_index=IGNORE)(pred, target)
    assert torch.equal(confusion_matrix(pred, target, 4, IGNORE), expected)


def test_iou_matches_torchmetrics():
    pred, target = case(1)
    cm = confusion_matrix(pred, target, 4, IGNORE).numpy()
    expected = MulticlassJaccardIndex(4, average="none", ignore_index=IGNORE)(pred, target).numpy()
    np.testing.assert_allclose(iou_per_class(cm), expected, rtol=1e-6)
    macro = MulticlassJaccardIndex(4, average="macro", ignore_index=IGNORE)(pred, target).item()
    assert summarize(cm, list("abcd"))["miou"] == pytest.approx(macro, rel=1e-6)


def test_class_absent_from_truth_and_prediction_is_excluded_from_miou():
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 1, 1, 1])
    cm = confusion_matrix(pred, target, 3).numpy()
    # class 0: TP 1, FN 1 -> 1/2; class 1: TP 2, FP 1 -> 2/3; class 2 absent everywhere -> excluded
    m = summarize(cm, ["a", "b", "c"])
    assert m["per_class_iou"] == {"a": 0.5, "b": pytest.approx(2 / 3), "c": None}
    assert m["miou"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["pixel_accuracy"] == pytest.approx(3 / 4)


def test_class_in_truth_never_predicted_counts_as_zero():
    cm = confusion_matrix(torch.tensor([0, 0]), torch.tensor([0, 1]), 2).numpy()
    assert summarize(cm, ["a", "b"])["per_class_iou"]["b"] == 0.0


def test_table_lists_every_class():
    pred, target = case(2)
    table = format_table(summarize(confusion_matrix(pred, target, 4, IGNORE).numpy(), list("abcd")))
    assert all(f"\n{c} " in table for c in "abcd") and "mIoU" in table
