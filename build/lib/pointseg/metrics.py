"""Segmentation metrics from a confusion matrix accumulated over a whole split.

IoU of class ``c`` is ``TP / (TP + FP + FN)``. A class absent from both truth and prediction over the whole
split has no defined IoU: it is reported as ``null`` (NaN) and left out of the macro mean (mIoU). A class
present in the truth but never predicted correctly counts with IoU 0.
"""

from __future__ import annotations

import numpy as np
import torch


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = 255) -> torch.Tensor:
    """``(C, C)`` int64 counts, rows = true class, columns = predicted class; ignored pixels are skipped."""
    valid = target != ignore_index
    idx = target[valid].long() * num_classes + pred[valid].long()
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU from a confusion matrix; NaN for classes absent from both truth and prediction."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def summarize(cm: np.ndarray, class_names: list[str]) -> dict:
    """mIoU (NaN-excluding macro mean), pixel accuracy, per-class IoU and the confusion matrix, JSON-ready."""
    cm = np.asarray(cm)
    iou = iou_per_class(cm)
    total = cm.sum()
    return {
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "pixel_accuracy": float(np.trace(cm) / total) if total else float("nan"),
        "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(class_names, iou, strict=True)},
        "classes": list(class_names),
        "confusion_matrix": cm.astype(int).tolist(),
        "pixels": int(total),
    }


def format_table(metrics: dict) -> str:
    """A plain-text table of per-class IoU plus mIoU and pixel accuracy."""
    width = max(len(n) for n in metrics["per_class_iou"]) + 2
    lines = [f"{'class':<{width}} IoU", "-" * (width + 6)]
    for name, v in metrics["per_class_iou"].items():
        lines.append(f"{name:<{width}} {'  n/a' if v is None else f'{v:.3f}'}")
    lines += ["-" * (width + 6), f"{'mIoU':<{width}} {metrics['miou']:.3f}",
              f"{'pixel acc':<{width}} {metrics['pixel_accuracy']:.3f}"]
    if "ece" in metrics:
        ece = metrics["ece"]
        lines.append(f"{'ECE':<{width}} {'  n/a' if ece is None else f'{ece:.3f}'}")
    return "\n".join(lines)
