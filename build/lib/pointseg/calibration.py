"""Calibration: expected calibration error (ECE) and reliability-diagram statistics.

Confidences ``max_c p_c`` are put in ``n_bins`` equal-width bins on [0, 1] (a confidence on a bin edge goes
to the bin that starts there, 1.0 to the last bin, as in torchmetrics). Per bin we keep the pixel count, the
sum of confidences and the number of correct predictions, so statistics add up over batches and images.
ECE = sum_b |B_b| / N * |accuracy_b - confidence_b|.
"""

from __future__ import annotations

import torch


def calibration_bins(probs: torch.Tensor, target: torch.Tensor, n_bins: int = 15, ignore_index: int = 255
                     ) -> torch.Tensor:
    """``(3, n_bins)`` float64: pixel count, confidence sum and correct count per confidence bin.

    Args:
        probs: ``(B, C, ...)`` class probabilities.
        target: ``(B, ...)`` true classes; ``ignore_index`` pixels are skipped.
    """
    confidence, prediction = probs.float().max(1)  # (B, ...)
    valid = target != ignore_index
    return confidence_bins(confidence[valid], prediction[valid] == target[valid], n_bins)


def confidence_bins(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = 15) -> torch.Tensor:
    """``(3, n_bins)`` bins (see ``calibration_bins``) of given ``confidence`` values and whether each was right
    (e.g. from a map's confidence raster)."""
    correct = correct.double()
    edges = torch.linspace(0, 1, n_bins + 1, device=confidence.device)
    index = (torch.bucketize(confidence, edges, right=True) - 1).clamp(0, n_bins - 1)  # (N,)
    bins = torch.zeros(3, n_bins, dtype=torch.float64, device=confidence.device)
    bins[0].index_add_(0, index, torch.ones_like(correct))
    bins[1].index_add_(0, index, confidence.double())
    bins[2].index_add_(0, index, correct)
    return bins.cpu()


def ece_from_bins(bins: torch.Tensor) -> float:
    """ECE from accumulated :func:`calibration_bins` (NaN when there is no pixel)."""
    count, confidence, correct = bins
    total = count.sum()
    if total == 0:
        return float("nan")
    return float((confidence - correct).abs().sum() / total)  # sum_b |B_b|/N * |conf_b - acc_b|


def expected_calibration_error(probs: torch.Tensor, target: torch.Tensor, n_bins: int = 15,
                               ignore_index: int = 255) -> float:
    return ece_from_bins(calibration_bins(probs, target, n_bins, ignore_index))


def reliability(bins: torch.Tensor) -> dict:
    """JSON-ready reliability statistics: per-bin count, mean confidence and accuracy, plus the ECE."""
    count, confidence, correct = bins
    safe = count.clamp(min=1)
    return {"ece": ece_from_bins(bins), "count": count.long().tolist(),
            "confidence": (confidence / safe).tolist(), "accuracy": (correct / safe).tolist()}


def label_quality(probs: torch.Tensor, target: torch.Tensor, ignore_index: int = 255, n_bins: int = 15
                  ) -> dict[str, float]:
    """Accuracy and ECE of (pseudo-)label probabilities ``(B, C, H, W)`` against true labels ``(B, H, W)``."""
    bins = calibration_bins(probs, target, n_bins, ignore_index)
    count = bins[0].sum()
    accuracy = float(bins[2].sum() / count) if count else float("nan")
    return {"acc": accuracy, "ece": ece_from_bins(bins)}
