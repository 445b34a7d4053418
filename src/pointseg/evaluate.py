"""Evaluate a model on a labeled split at full label resolution; write metrics, table and plots."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rasterio.windows import Window as RioWindow

from pointseg.calibration import calibration_bins, confidence_bins, reliability
from pointseg.data.classes import ClassTable
from pointseg.data.dataset import EvalDataset
from pointseg.data.raster import (
    display_thumbnail,
    open_raster,
    read_mask_raster,
    read_thumbnail,
    same_grid,
    thumbnail_shape,
)
from pointseg.inference import cpu_model, top_class
from pointseg.io import atomic_path, write_json, write_text
from pointseg.mapwriter import NODATA
from pointseg.metrics import confusion_matrix, format_table, summarize
from pointseg.predictor import Predictor
from pointseg.report import plot_confusion, plot_overlays, plot_reliability


def thumbnail(array: np.ndarray, max_side: int = 512) -> np.ndarray:
    step = max(1, int(np.ceil(max(array.shape[:2]) / max_side)))
    return array[::step, ::step]


def evaluate(predictor: Predictor, dataset: EvalDataset, out: str | Path, overlays: int = 4, progress: bool = True,
             n_bins: int = 15) -> dict:
    """Metrics of ``predictor`` over every labeled pixel of ``dataset`` at full resolution.

    Writes ``out`` (JSON with top-level ``miou``, ``ece`` and ``predicted_by``: the backend, precision and CPU that
    made the predictions), ``<out stem>.txt`` (table),
    ``<out stem>_confusion.png``, ``<out stem>_reliability.png`` and ``<out stem>_overlays.png`` (the first
    ``overlays`` images).
    """
    out, classes = Path(out), predictor.classes
    n = classes.num_classes
    cm = torch.zeros(n, n, dtype=torch.int64)
    bins = torch.zeros(3, n_bins, dtype=torch.float64)
    shown: list[tuple[str, np.ndarray | None, np.ndarray | None, np.ndarray]] = []
    for sample, logits in predictor.iter_logits(dataset, progress):
        pred = top_class(logits).to(torch.uint8).numpy()
        cm += confusion_matrix(torch.from_numpy(pred), sample["mask"], n, classes.ignore_index)
        bins += calibration_bins(logits.softmax(0)[None], sample["mask"][None], n_bins, classes.ignore_index)
        if len(shown) < overlays:
            image = display_rgb(sample["image"].numpy())
            shown.append((sample["id"], thumbnail(image), thumbnail(sample["mask"].numpy().astype(np.uint8)),
                          thumbnail(pred)))
    return write_metrics(cm, bins, classes, out, len(dataset), shown, predicted_by(predictor))


def predicted_by(predictor: Predictor) -> dict[str, str]:
    """Which backend and precision made a prediction, on which device (and CPU model): numbers from machines that
    differ (native or emulated bf16) stay comparable."""
    return {"backend": predictor.backend, "precision": predictor.precision, "device": str(predictor.device),
            "cpu": cpu_model()}


def write_metrics(cm: torch.Tensor, bins: torch.Tensor | None, classes: ClassTable, out: str | Path, images: int,
                  shown: Sequence[tuple[str, np.ndarray | None, np.ndarray | None, np.ndarray]],
                  predicted: dict[str, str] | None = None) -> dict:
    """Write ``out`` (JSON metrics), ``<stem>.txt`` (table) and the confusion, reliability (with ``bins``) and
    overlay (``shown``) plots; returns the metrics (``predicted``: ``predicted_by`` of the predictor)."""
    out = Path(out)
    metrics = summarize(cm.numpy(), list(classes.names))
    metrics["images"] = images
    if predicted is not None:
        metrics["predicted_by"] = predicted
    metrics["calibration"] = reliability(bins) if bins is not None else None
    metrics["ece"] = metrics["calibration"]["ece"] if bins is not None else None
    write_json(out, metrics)
    stem = out.with_suffix("")
    if bins is not None:
        plot_reliability(metrics["calibration"], f"{stem}_reliability.png", "model")
    write_text(f"{stem}.txt", format_table(metrics) + "\n")
    plot_confusion(metrics, f"{stem}_confusion.png")
    if shown:
        plot_overlays(shown, classes, f"{stem}_overlays.png")
    return metrics


def display_rgb(image: np.ndarray) -> np.ndarray:
    """``(B, h, w)`` bands in [0, 1] -> ``(h, w, 3)`` uint8 for a picture: the first three bands (one band: grey)."""
    bands = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    return (np.clip(bands.transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)


def write_predictions(predictor: Predictor, dataset: EvalDataset, out_dir: str | Path, limit: int | None = None,
                      progress: bool = True, unreadable: list[str] | None = None) -> list[Path]:
    """Write ``<id>.png`` (class indices) and ``<id>_color.png`` (class colours) for each image.

    ``unreadable``: collect the messages of unreadable images there and go on (default: stop at the first).
    """
    out_dir = Path(out_dir)
    written = []
    for i, (sample, pred) in enumerate(predictor.iter_predictions(dataset, progress, unreadable)):
        if limit is not None and i >= limit:
            break
        stem = out_dir / sample["id"]
        for path, array in ((stem.with_name(stem.name + ".png"), pred),
                            (stem.with_name(stem.name + "_color.png"), predictor.classes.colorize(pred))):
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                Image.fromarray(array).save(tmp, format="PNG")
            written.append(path)
    return written


def evaluate_map(map_path: str | Path, mask: str | Path, classes: ClassTable, out: str | Path,
                 confidence: str | Path | None = None, image: str | Path | None = None,
                 image_bands: tuple[int, ...] = (1, 2, 3), rows: int = 512, n_bins: int = 15) -> dict:
    """Metrics of a class map (GeoTIFF) against a reference ``mask`` raster on the same grid, read in bands of
    ``rows`` rows (bounded memory). Pixels the map has no data for are not scored; with the map's ``confidence``
    raster (percent) the calibration is measured too. Writes what ``evaluate`` writes; the overlay shows the
    ``image`` raster (bands ``image_bands``) if given, the truth and the map."""
    same_grid(mask, map_path)
    if confidence is not None:
        same_grid(map_path, confidence)
    n, ignore = classes.num_classes, classes.ignore_index
    cm = torch.zeros(n, n, dtype=torch.int64)
    bins = torch.zeros(3, n_bins, dtype=torch.float64) if confidence is not None else None
    with ExitStack() as stack:
        prediction = stack.enter_context(open_raster(map_path))
        conf = stack.enter_context(open_raster(confidence)) if confidence is not None else None
        for top in range(0, prediction.height, rows):
            window = RioWindow(0, top, prediction.width, min(rows, prediction.height - top))
            pred = prediction.read(1, window=window)
            truth = read_mask_raster(mask, classes, window)
            truth[pred == NODATA] = ignore  # no map there: nothing to score
            scored = truth != ignore
            if scored.any() and pred[scored].max() >= n:
                raise ValueError(f"{map_path}: map values {sorted(set(pred[scored][pred[scored] >= n].tolist()))[:5]} "
                                 f"are not classes of the table {list(classes.names)}")
            cm += confusion_matrix(torch.from_numpy(pred), torch.from_numpy(truth), n, ignore)
            if conf is not None and bins is not None:
                percent = torch.from_numpy(conf.read(1, window=window)[scored].astype(np.float64) / 100)
                bins += confidence_bins(percent, torch.from_numpy(pred[scored] == truth[scored]), n_bins)
    shape = thumbnail_shape(map_path)
    picture = display_thumbnail(image, image_bands) if image is not None else None
    shown = [(Path(image or map_path).stem, picture, read_mask_raster(mask, classes, out_shape=shape),
              read_thumbnail(map_path)[..., 0])]
    return write_metrics(cm, bins, classes, out, 1, shown)
