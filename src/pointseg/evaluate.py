"""Evaluate a model on a labeled split at full label resolution; write metrics, table and plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pointseg.calibration import calibration_bins, reliability
from pointseg.data.classes import ClassTable
from pointseg.data.dataset import EvalDataset
from pointseg.inference import iter_logits, iter_predictions
from pointseg.io import atomic_path, write_json, write_text
from pointseg.metrics import confusion_matrix, format_table, summarize
from pointseg.report import plot_confusion, plot_overlays, plot_reliability


def thumbnail(array: np.ndarray, max_side: int = 512) -> np.ndarray:
    step = max(1, int(np.ceil(max(array.shape[:2]) / max_side)))
    return array[::step, ::step]


def evaluate(model: torch.nn.Module, dataset: EvalDataset, classes: ClassTable, out: str | Path,
             amp: bool = True, overlays: int = 4, progress: bool = True, n_bins: int = 15) -> dict:
    """Metrics over every labeled pixel of ``dataset`` at full resolution.

    Writes ``out`` (JSON with top-level ``miou`` and ``ece``), ``<out stem>.txt`` (table),
    ``<out stem>_confusion.png``, ``<out stem>_reliability.png`` and ``<out stem>_overlays.png`` (the first
    ``overlays`` images).
    """
    out = Path(out)
    n = classes.num_classes
    cm = torch.zeros(n, n, dtype=torch.int64)
    bins = torch.zeros(3, n_bins, dtype=torch.float64)
    shown: list[tuple[str, np.ndarray, np.ndarray | None, np.ndarray]] = []
    for sample, logits in iter_logits(model, dataset, amp, progress):
        pred = logits.argmax(0).to(torch.uint8).numpy()
        cm += confusion_matrix(torch.from_numpy(pred), sample["mask"], n, classes.ignore_index)
        bins += calibration_bins(logits.softmax(0)[None], sample["mask"][None], n_bins, classes.ignore_index)
        if len(shown) < overlays:
            image = (sample["image"].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            shown.append((sample["id"], thumbnail(image), thumbnail(sample["mask"].numpy().astype(np.uint8)),
                          thumbnail(pred)))
    metrics = summarize(cm.numpy(), list(classes.names))
    metrics["images"] = len(dataset)
    metrics["calibration"] = reliability(bins)
    metrics["ece"] = metrics["calibration"]["ece"]
    write_json(out, metrics)
    stem = out.with_suffix("")
    plot_reliability(metrics["calibration"], f"{stem}_reliability.png", "model")
    write_text(f"{stem}.txt", format_table(metrics) + "\n")
    plot_confusion(metrics, f"{stem}_confusion.png")
    if shown:
        plot_overlays(shown, classes, f"{stem}_overlays.png")
    return metrics


def write_predictions(model: torch.nn.Module, dataset: EvalDataset, classes: ClassTable, out_dir: str | Path,
                      amp: bool = True, limit: int | None = None, progress: bool = True,
                      unreadable: list[str] | None = None) -> list[Path]:
    """Write ``<id>.png`` (class indices) and ``<id>_color.png`` (class colours) for each image.

    ``unreadable``: collect the messages of unreadable images there and go on (default: stop at the first).
    """
    out_dir = Path(out_dir)
    written = []
    for i, (sample, pred) in enumerate(iter_predictions(model, dataset, amp, progress, unreadable)):
        if limit is not None and i >= limit:
            break
        stem = out_dir / sample["id"]
        for path, array in ((stem.with_name(stem.name + ".png"), pred),
                            (stem.with_name(stem.name + "_color.png"), classes.colorize(pred))):
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                Image.fromarray(array).save(tmp, format="PNG")
            written.append(path)
    return written
