"""How much of each class survives down-sampling: nearest neighbour vs soft labels (the paper's Fig. 3b)."""

from __future__ import annotations

import numpy as np
from PIL import Image
from tqdm import tqdm

from pointseg.data.labels import scaled_size, soft_downsample
from pointseg.data.sources import Source
from pointseg.report import md_text


def information_kept(source: Source, scale: float, mode: str = "area", progress: bool = True) -> dict:
    """Per class, the share of its full-resolution pixels whose low-resolution cell still carries the class.

    ``nearest``: the cell's nearest-neighbour label is the pixel's class. ``soft``: the cell's soft label gives
    the class a non-zero proportion. (Class *area* is no use here: nearest-neighbour sampling keeps it on
    average, while losing which pixels hold it.) ``images_lost_nearest``: images where the class exists at
    full resolution but no pixel of it survives nearest-neighbour down-sampling.
    """
    classes = source.classes
    n = classes.num_classes
    full, kept_near, kept_soft = np.zeros(n), np.zeros(n), np.zeros(n)
    lost = np.zeros(n, dtype=int)
    for ref in tqdm(source.refs, desc="labels", disable=not progress, leave=False):
        mask = source.read_mask(ref)
        size = scaled_size(mask.shape[0], mask.shape[1], scale)
        rows = np.arange(mask.shape[0]) * size[0] // mask.shape[0]  # cell holding each full-res row
        cols = np.arange(mask.shape[1]) * size[1] // mask.shape[1]
        labeled = mask != classes.ignore_index
        cls = mask[labeled].astype(np.int64)  # (L,) classes of labeled pixels
        r, c = np.nonzero(labeled)
        near = np.asarray(Image.fromarray(mask).resize(size[::-1], Image.Resampling.NEAREST))
        soft, _ = soft_downsample(mask, n, size, mode, classes.ignore_index)
        near_ok = near[rows[r], cols[c]] == cls
        soft_ok = soft[cls, rows[r], cols[c]] > 0
        counts = np.bincount(cls, minlength=n)
        near_counts = np.bincount(near[near != classes.ignore_index], minlength=n)[:n]
        full += counts
        kept_near += np.bincount(cls[near_ok], minlength=n)
        kept_soft += np.bincount(cls[soft_ok], minlength=n)
        lost += (counts > 0) & (near_counts == 0)
    share = lambda kept: [None if f == 0 else float(k / f) for k, f in zip(kept, full, strict=True)]  # noqa: E731
    return {
        "scale": scale, "mode": mode, "images": len(source), "classes": list(classes.names),
        "full_share": (full / full.sum()).tolist(), "kept_nearest": share(kept_near), "kept_soft": share(kept_soft),
        "images_lost_nearest": lost.tolist(),
    }


def format_kept_table(report: dict) -> str:
    """Markdown table of :func:`information_kept`."""
    title = f"Pixels whose class survives down-sampling to scale {report['scale']:g}"
    rows = [f"{title} ({report['mode']} soft labels), {report['images']} images", "",
            "| class | share of pixels | pixels kept, nearest | pixels kept, soft | images where nearest loses it |",
            "|---|---:|---:|---:|---:|"]
    fmt = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    for i, name in enumerate(report["classes"]):
        rows.append(f"| {md_text(name)} | {fmt(report['full_share'][i])} | {fmt(report['kept_nearest'][i])} | "
                    f"{fmt(report['kept_soft'][i])} | {report['images_lost_nearest'][i]} |")
    return "\n".join(rows)


def propagation_report(quality: dict[str, np.ndarray], clicks: np.ndarray, class_names: list[str], images: int,
                       settings: dict) -> dict:
    """What click propagation gives each class (from ``propagation.propagation_quality``): pixels labeled per
    click, and the share of them the dense masks agree with (precision)."""
    pixels, correct = quality["pixels"], quality["correct"]
    return {"classes": class_names, "images": images, "settings": settings, "clicks": clicks.tolist(),
            "pixels": pixels.tolist(), "correct": correct.tolist(),
            "pixels_per_click": [None if k == 0 else float(p / k) for p, k in zip(pixels, clicks, strict=True)],
            "precision": [None if p == 0 else float(c / p) for c, p in zip(correct, pixels, strict=True)],
            "overall_precision": float(correct.sum() / max(pixels.sum(), 1))}


def format_propagation_table(report: dict) -> str:
    """Markdown table of :func:`propagation_report`."""
    rows = [f"Clicks spread by `{report['settings']['method']}` on {report['images']} images "
            f"(overall {100 * report['overall_precision']:.1f}% right against the dense masks)", "",
            "| class | clicks | pixels labeled | pixels per click | right |", "|---|---:|---:|---:|---:|"]
    for i, name in enumerate(report["classes"]):
        per_click, right = report["pixels_per_click"][i], report["precision"][i]
        rows.append(f"| {md_text(name)} | {report['clicks'][i]} | {report['pixels'][i]} | "
                    f"{'n/a' if per_click is None else f'{per_click:.0f}'} | "
                    f"{'n/a' if right is None else f'{100 * right:.1f}%'} |")
    return "\n".join(rows)
