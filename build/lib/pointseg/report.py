"""Pictures people would rather look at than read: confusion matrix, overlays, loss curve."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pointseg.data.classes import ClassTable  # noqa: E402
from pointseg.io import atomic_path  # noqa: E402

MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")


def md_text(text: object) -> str:
    """User text (a class name, a file name, a field) as literal Markdown: HTML's special characters escaped (no
    ``<script>`` or ``<img onerror>`` reaches a viewer), Markdown's punctuation backslash-escaped (no link, image,
    emphasis or table cell border), line breaks as spaces."""
    escaped = html.escape(" ".join(str(text).split()), quote=False)
    return MARKDOWN_PUNCTUATION.sub(r"\\\1", escaped)


def md_code_block(text: str) -> str:
    """``text`` as a fenced code block whose fence no run of backticks in it can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def _save(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def plot_confusion(metrics: dict, path: str | Path) -> Path:
    """Row-normalised confusion matrix (recall per true class) with per-class IoU in the row labels."""
    cm = np.asarray(metrics["confusion_matrix"], dtype=np.float64)
    rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    names = metrics["classes"]
    ious = metrics["per_class_iou"]
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(names), 0.8 + 0.7 * len(names)))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(rows):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if v > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    labels = [f"{n} (IoU {'n/a' if ious[n] is None else f'{ious[n]:.2f}'})" for n in names]
    ax.set_yticks(range(len(names)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"mIoU {metrics['miou']:.3f}, pixel accuracy {metrics['pixel_accuracy']:.3f}")
    return _save(fig, Path(path))


def plot_overlays(items: Sequence[tuple[str, np.ndarray | None, np.ndarray | None, np.ndarray]], classes: ClassTable,
                  path: str | Path, titles: tuple[str, str, str] = ("", "truth", "prediction")) -> Path:
    """One row per ``(id, image or None, truth or None, prediction)``: image | truth | prediction (``titles``;
    the image's is its id when empty), with a legend; a column no row has (no truth at all, say) is left out.
    Unlabeled pixels are black."""
    shown = [any(item[k] is not None for item in items) for k in (1, 2)] + [True]
    fig, axes = plt.subplots(len(items), sum(shown), figsize=(3.4 * sum(shown), 3.4 * len(items)), squeeze=False)
    for row, (name, image, truth, pred) in zip(axes, items, strict=True):
        panels = [(image, f"{titles[0]} {name}".strip()),
                  (None if truth is None else classes.colorize(truth), titles[1]),
                  (classes.colorize(pred), titles[2])]
        for ax, (picture, title) in zip(row, [p for p, keep in zip(panels, shown, strict=True) if keep], strict=True):
            ax.axis("off")
            if picture is not None:
                ax.imshow(picture, interpolation="nearest")
                ax.set_title(title, fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=np.asarray(c) / 255, edgecolor="black", linewidth=0.5)
               for c in classes.colors]  # edges keep white classes visible
    fig.legend(handles, classes.names, loc="lower center", ncol=min(len(handles), 7), frameon=False)
    return _save(fig, Path(path))


def plot_loss(metrics_jsonl: str | Path, path: str | Path) -> Path:
    """Training loss against step from a run's ``metrics.jsonl``."""
    records = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in records], [r["loss"] for r in records])
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    return _save(fig, Path(path))


def plot_information_kept(reports: list[dict], path: str | Path) -> Path:
    """Grouped bars per class: share of pixels whose class is lost by nearest vs soft down-sampling."""
    fig, axes = plt.subplots(1, len(reports), figsize=(5 * len(reports), 3.8), squeeze=False, sharey=True)
    for ax, rep in zip(axes[0], reports, strict=True):
        x = np.arange(len(rep["classes"]))
        for offset, key, label in ((-0.2, "kept_nearest", "nearest"), (0.2, "kept_soft", "soft")):
            values = [np.nan if v is None else 100 * (1 - v) for v in rep[key]]
            ax.bar(x + offset, values, width=0.4, label=label)
        ax.set_xticks(x, rep["classes"], rotation=45, ha="right")
        ax.set_title(f"scale {rep['scale']:g}")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("pixels whose class is lost (%)")
    axes[0][0].legend()
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_reliability(stats: dict, path: str | Path, title: str = "") -> Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal, with pixel counts below."""
    n = len(stats["count"])
    centers = (np.arange(n) + 0.5) / n
    used = np.asarray(stats["count"]) > 0
    fig, (ax, ax_count) = plt.subplots(2, 1, figsize=(4.5, 5.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.bar(centers[used], np.asarray(stats["accuracy"])[used], width=1 / n, edgecolor="black", label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title} ECE {stats['ece']:.3f}".strip())
    ax.legend(loc="upper left")
    ax_count.bar(centers, stats["count"], width=1 / n, color="grey")
    ax_count.set_xlabel("confidence")
    ax_count.set_ylabel("pixels")
    return _save(fig, Path(path))


def plot_suggestions(image: np.ndarray, uncertainty: np.ndarray, clicks: np.ndarray, suggested: np.ndarray,
                     classes: ClassTable, path: str | Path, title: str = "") -> Path:
    """Image beside the model's uncertainty, with the clicks so far (dots in their class colours) and the suggested
    clicks (white rings, numbered by rank) on both. Points are (row, col) in the pixels of ``image``."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4))
    axes[0].imshow(image, interpolation="nearest")
    heat = axes[1].imshow(uncertainty, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(heat, ax=axes[1], fraction=0.046, label="uncertainty")
    for ax in axes:
        ax.axis("off")
        if len(clicks):
            colours = np.asarray(classes.colors, dtype=float)[clicks[:, 2]] / 255
            ax.scatter(clicks[:, 1], clicks[:, 0], s=22, c=colours, edgecolors="black", linewidths=0.6)
        if len(suggested):
            ax.scatter(suggested[:, 1], suggested[:, 0], s=90, facecolors="none", edgecolors="white", linewidths=1.8)
            for rank, (r, c) in enumerate(suggested[:, :2], start=1):
                ax.annotate(str(rank), (c, r), xytext=(4, 4), textcoords="offset points", color="white", fontsize=8)
    axes[0].set_title(title or "clicks so far (dots) and suggested (rings)", fontsize=9)
    axes[1].set_title("model uncertainty", fontsize=9)
    return _save(fig, Path(path))


def plot_curation(prefix: Path, entropy: np.ndarray, chosen: np.ndarray, table: list[dict],
                  pictures: list[tuple[str, np.ndarray]], rejected: list[tuple[str, np.ndarray]]) -> list[Path]:
    """The entropy histogram (picked vs rejected), cluster sizes and a contact sheet of picked and rejected images."""
    picked = np.zeros(len(entropy), bool)
    picked[chosen] = True
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    bins = np.linspace(np.nanmin(entropy), np.nanmax(entropy), 30) if np.isfinite(entropy).any() else 10
    left.hist([entropy[picked & np.isfinite(entropy)], entropy[~picked & np.isfinite(entropy)]], bins=bins,
              stacked=True, label=["picked", "rejected"], color=["tab:green", "tab:grey"])
    left.set(xlabel="mean pixel entropy (nats, background excluded)", ylabel="images")
    left.legend()
    x = np.arange(len(table))
    right.bar(x - 0.2, [row["labeled"] for row in table], 0.4, label="labeled")
    right.bar(x + 0.2, [row["picked"] for row in table], 0.4, label="picked")
    right.set(xlabel="cluster", ylabel="images", xticks=x)
    right.legend()
    paths = [_save(fig, prefix.with_name(prefix.name + "_curation.png"))]
    rows = [("picked", pictures), ("rejected", rejected)]
    columns = max(1, max(len(p) for _, p in rows))
    fig, axes = plt.subplots(2, columns, figsize=(1.6 * columns, 3.6), squeeze=False)
    for r, (title, items) in enumerate(rows):
        for c in range(columns):
            axes[r][c].axis("off")
            if c < len(items):
                axes[r][c].imshow(items[c][1])
                axes[r][c].set_title(items[c][0], fontsize=6)
        axes[r][0].text(-0.1, 0.5, title, transform=axes[r][0].transAxes, ha="right", va="center", rotation=90)
    paths.append(_save(fig, prefix.with_name(prefix.name + "_contact_sheet.png")))
    return paths
