"""Markdown tables (mean ± std over seeds, per-class IoU, wall time) from ``benchmarks/results/*.json``.

    python benchmarks/summarize.py points          # points-budget and loss tables
    python benchmarks/summarize.py soft --plot benchmarks/results/soft_labels.png   # soft vs nearest tables,
                                                   # the paper's claims as paired gains, mIoU against scale
    python benchmarks/summarize.py semi --plot benchmarks/results/semi_supervised.png  # semi-supervised tables,
                                                   # paired gains over supervised, PseudoSeg ablation
    python benchmarks/summarize.py clicks --plot benchmarks/results/label_budget.png  # click levers per phase,
                                                   # label-budget curve
    python benchmarks/summarize.py s5              # curation, multi-dataset and DDP tables (issue 13)
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np

import semi_supervised as semi
from click_levers import DEFAULT
from pointseg.metrics import summarize
from semi_supervised import ablation_name, cell_name

RESULTS = Path(__file__).parent / "results"


def load(prefix_filter: str = "") -> dict[str, list[dict]]:
    """Result records grouped by cell name (seeds together)."""
    cells: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(RESULTS.glob("*.json")):
        record = json.loads(path.read_text())
        if "cell" in record and record["cell"].startswith(prefix_filter):
            cells[record["cell"]].append(record)
    return cells


def mean_std(values: list[float], digits: int = 3) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (1 seed)"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def row(name: str, runs: list[dict], classes: list[str]) -> str:
    miou = mean_std([r["miou"] for r in runs])
    per_class = [statistics.mean(r["per_class_iou"][c] or 0.0 for r in runs) for c in classes]
    seconds = statistics.mean(r["total_seconds"] for r in runs)
    seeds = ",".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
    return f"| {name} | {miou} | " + " | ".join(f"{v:.3f}" for v in per_class) + f" | {seconds:.0f} | {seeds} |"


def table(cells: dict[str, list[dict]], names: list[tuple[str, str]]) -> str:
    classes = list(next(iter(cells.values()))[0]["per_class_iou"])
    lines = ["| cell | mIoU (mean ± std) | " + " | ".join(classes) + " | s/run | seeds |",
             "|---|---|" + "---:|" * len(classes) + "---:|---|"]
    lines += [row(label, cells[key], classes) for key, label in names if key in cells]
    return "\n".join(lines)


def points_tables(cells: dict[str, list[dict]]) -> str:
    budget, loss = [], []
    for model in ("unet-small", "unet-mobilenetv2"):
        budget += [(f"{model}_p{n}_ce", f"{model}, {n} pts/img, pCE") for n in (5, 20, 100)]
        budget.append((f"{model}_dense_ce", f"{model}, dense masks, CE"))
        loss += [(f"{model}_p20_ce", f"{model}, 20 pts/img, partial CE"),
                 (f"{model}_p20_focal", f"{model}, 20 pts/img, partial focal (γ=2)")]
    return "### Points budget\n\n" + table(cells, budget) + "\n\n### Loss at 20 points/image\n\n" + table(cells, loss)


SOFT_MODELS = ("unet-small", "unet-mobilenetv2")
SOFT_SCALES = (0.5, 0.25, 0.125)
SOFT_LABELS = ("nearest", "soft-mc", "soft-sc")


def soft_table(cells: dict[str, list[dict]]) -> str:
    """One row per model x scale x label path, with training time and peak memory."""
    names = []
    for model in SOFT_MODELS:
        for scale in SOFT_SCALES:
            names += [(f"soft_{model}_s{scale:g}_{labels}", f"{model}, 1/{round(1 / scale)}, {labels}")
                      for labels in SOFT_LABELS]
    present = {k: v for k, v in cells.items() if k.startswith("soft_")}
    if not present:
        return "(no soft-label results yet)"
    text = table(present, names)
    memory = [f"| {label} | {statistics.median(r['train_seconds'] for r in present[key]):.0f} | "
              f"{max(r['peak_memory_mb'] or 0 for r in present[key]):.0f} |" for key, label in names if key in present]
    return text + "\n\n| cell | train s (median) | peak memory MB (max) |\n|---|---:|---:|\n" + "\n".join(memory)


def paired_gains(cells: dict[str, list[dict]], key: str, baseline: str, metric) -> list[float]:
    """``metric(run) - metric(baseline run)`` for every seed both cells have."""
    base = {r["seed"]: metric(r) for r in cells.get(baseline, [])}
    return [metric(r) - base[r["seed"]] for r in cells.get(key, []) if r["seed"] in base]


def format_gains(gains: list[float]) -> str:
    """Mean ± std of paired gains and how many are positive."""
    if not gains:
        return "–"
    spread = f" ± {statistics.stdev(gains):.3f}" if len(gains) > 1 else ""
    return f"{statistics.mean(gains):+.3f}{spread} ({sum(g > 0 for g in gains)}/{len(gains)})"


SOFT_CLAIM_CLASSES = ("road", "building", "barren")


def soft_claims(cells: dict[str, list[dict]]) -> str:
    """The paper's claims as paired (same seed) differences: soft - nearest per scale, soft 1/4 - nearest 1/2."""
    models, scales = SOFT_MODELS, SOFT_SCALES
    lines = ["| model | comparison | mIoU gain (wins/seeds) | "
             + " | ".join(f"{c} IoU gain" for c in SOFT_CLAIM_CLASSES) + " |",
             "|---|---|---:|" + "---:|" * len(SOFT_CLAIM_CLASSES)]
    metrics = [lambda r: r["miou"]] + [lambda r, c=c: r["per_class_iou"][c] or 0.0 for c in SOFT_CLAIM_CLASSES]
    for model in models:
        comparisons = [(f"soft_{model}_s{s:g}_{labels}", f"soft_{model}_s{s:g}_nearest",
                        f"{labels} - nearest at 1/{round(1 / s)}")
                       for s in scales for labels in ("soft-mc", "soft-sc")]
        comparisons += [(f"soft_{model}_s0.25_{labels}", f"soft_{model}_s0.5_nearest", f"{labels} 1/4 - nearest 1/2")
                        for labels in ("soft-mc", "soft-sc", "nearest")]  # nearest: the resolution effect alone
        for key, baseline, label in comparisons:
            if key not in cells or baseline not in cells:
                continue
            lines.append(f"| {model} | {label} | "
                         + " | ".join(format_gains(paired_gains(cells, key, baseline, m)) for m in metrics) + " |")
    for labels in ("soft-mc", "soft-sc"):  # every model, scale and seed pooled
        pooled = [[g for model in models for s in scales
                   for g in paired_gains(cells, f"soft_{model}_s{s:g}_{labels}", f"soft_{model}_s{s:g}_nearest", m)]
                  for m in metrics]
        lines.append(f"| all | {labels} - nearest, all scales | " + " | ".join(map(format_gains, pooled)) + " |")
    return "\n".join(lines)


def soft_plot(cells: dict[str, list[dict]], path: Path) -> Path:
    """mIoU (mean ± std over seeds) against training scale, one panel per model, one line per label path."""
    import matplotlib.pyplot as plt

    from pointseg.report import _save

    fig, axes = plt.subplots(1, len(SOFT_MODELS), figsize=(5 * len(SOFT_MODELS), 3.6), sharey=True)
    for ax, model in zip(axes, SOFT_MODELS, strict=True):
        for offset, labels in zip((-0.08, 0.0, 0.08), SOFT_LABELS, strict=True):
            xs, means, stds = [], [], []
            for x, scale in enumerate(SOFT_SCALES):
                runs = cells.get(f"soft_{model}_s{scale:g}_{labels}", [])
                if runs:
                    values = [r["miou"] for r in runs]
                    xs.append(x + offset)
                    means.append(statistics.mean(values))
                    stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=labels)
        ax.set_xticks(range(3), ["1/2", "1/4", "1/8"])
        ax.set_xlabel("training scale (of 1024)")
        ax.set_title(model)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Val mIoU (mean ± std over seeds)")
    axes[0].legend()
    return _save(fig, path)


SEMI_PARTS = (("points", "20 points/image"), ("few", "dense masks on 2 images + 14 LoveDA and 63 Dubai unlabeled"))
ABLATION_BASELINE = cell_name("points", "unet-mobilenetv2", "supervised")  # same points, seeds and model
PSEUDO_SOURCES = ("decoder", "sgc", "fused", "target")


def last_log_mean(runs: list[dict], key: str) -> str:
    """Mean over seeds of a key of the last training log line (the mean over the last logging interval)."""
    values = [r["last_log"][key] for r in runs if r["last_log"].get(key) is not None]
    return f"{statistics.mean(values):.3f}" if values else "–"


def semi_cells(cells: dict[str, list[dict]], part: str) -> list[tuple[str, str, list[dict]]]:
    """``(model, method, runs)`` of one part's cells that have results."""
    return [(model, method, cells[cell_name(part, model, method)]) for model in semi.MODELS for method in semi.METHODS
            if cell_name(part, model, method) in cells]


def semi_tables(cells: dict[str, list[dict]]) -> str:
    """Per part: mIoU and per-class IoU per model x method, paired gains over supervised, training diagnostics."""
    sections = []
    for part, title in SEMI_PARTS:
        present = semi_cells(cells, part)
        if not present:
            continue
        lines = ["| cell | mIoU gain over supervised (wins/seeds) | model ECE | train s (median) | "
                 "last-interval loss_unsup | fixmatch mask_ratio | pseudo-label acc | pseudo-label ECE |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for model, method, runs in present:
            gain = "–" if method == "supervised" else format_gains(paired_gains(
                cells, cell_name(part, model, method), cell_name(part, model, "supervised"), lambda r: r["miou"]))
            prefix = "pseudo_target" if method == "pseudoseg" else "pseudo"
            lines.append(f"| {model}, {method} | {gain} | {statistics.mean(r['ece'] for r in runs):.3f} | "
                         f"{statistics.median(r['train_seconds'] for r in runs):.0f} | "
                         f"{last_log_mean(runs, 'loss_unsup')} | {last_log_mean(runs, 'mask_ratio')} | "
                         f"{last_log_mean(runs, prefix + '_acc')} | {last_log_mean(runs, prefix + '_ece')} |")
        names = [(cell_name(part, model, method), f"{model}, {method}") for model, method, _ in present]
        sections.append(f"### {title}\n\n" + table(cells, names) + "\n\n" + "\n".join(lines))
    return "\n\n".join(sections) or "(no semi-supervised results yet)"


def semi_class_shares(cells: dict[str, list[dict]]) -> str:
    """Share of Val pixels predicted as each class (mean over seeds) beside the true share: shows collapse."""
    rows = [(part, model, method, runs) for part, _ in SEMI_PARTS for model, method, runs in semi_cells(cells, part)
            if all("confusion_matrix" in r for r in runs)]
    if not rows:
        return "(no confusion matrices stored)"
    first = rows[0][3][0]
    classes = list(first["per_class_iou"])
    truth = np.asarray(first["confusion_matrix"], dtype=float).sum(1)  # rows: true class, the same in every run
    lines = ["| cell | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes),
             "| true share | " + " | ".join(f"{v:.3f}" for v in truth / truth.sum()) + " |"]
    for part, model, method, runs in rows:
        shares = np.mean([np.asarray(r["confusion_matrix"], dtype=float).sum(0) / truth.sum() for r in runs], 0)
        lines.append(f"| {part}, {model}, {method} | " + " | ".join(f"{v:.3f}" for v in shares) + " |")
    return "\n".join(lines)


def ablation_rows(cells: dict[str, list[dict]]) -> list[tuple[str, float, list[dict]]]:
    """``(source, temperature, runs)`` of the PseudoSeg ablation settings that have results, fused T 0.5 included."""
    settings = sorted([*semi.ABLATION, ("fused", 0.5)], key=lambda st: (PSEUDO_SOURCES.index(st[0]), st[1]))
    return [(source, t, cells[ablation_name(source, t)]) for source, t in settings if ablation_name(source, t) in cells]


def semi_ablation(cells: dict[str, list[dict]]) -> str:
    """PseudoSeg pseudo-label source and sharpening: mIoU, paired gains over supervised and over the default
    (fused, T 0.5), and every source's accuracy / ECE in the last training interval."""
    rows = ablation_rows(cells)
    if not rows:
        return "(no ablation results yet)"
    supervised, default = ABLATION_BASELINE, ablation_name("fused", 0.5)
    lines = ["| trained on | T | mIoU (mean ± std) | gain over supervised | gain over fused T 0.5 | "
             + " | ".join(f"{s} acc / ECE" for s in PSEUDO_SOURCES) + " | seeds |",
             "|---|---:|---|---:|---:|" + "---:|" * len(PSEUDO_SOURCES) + "---|"]
    for source, t, runs in rows:
        name = ablation_name(source, t)
        gains = [format_gains(paired_gains(cells, name, base, lambda r: r["miou"])) if base != name else "–"
                 for base in (supervised, default)]
        scores = [f"{last_log_mean(runs, f'pseudo_{s}_acc')} / {last_log_mean(runs, f'pseudo_{s}_ece')}"
                  for s in PSEUDO_SOURCES]
        seeds = ",".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
        lines.append(f"| {source} | {t:g} | {mean_std([r['miou'] for r in runs])} | " + " | ".join(gains) + " | "
                     + " | ".join(scores) + f" | {seeds} |")
    return "\n".join(lines)


def seed_bar(ax, x: float, values: list[float], width: float, **bar_kwargs) -> None:
    """One bar at ``x``: mean ± std of ``values`` (one per seed), with the seeds as dots."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    ax.bar(x, statistics.mean(values), width, yerr=spread, capsize=3, **bar_kwargs)
    ax.plot([x] * len(values), values, "k.", ms=4)


def semi_plot(cells: dict[str, list[dict]], path: Path) -> Path:
    """Val mIoU per method (mean ± std over seeds, seeds as dots), one panel per part, one group per model."""
    import matplotlib.pyplot as plt

    from pointseg.report import _save

    ablation = ablation_rows(cells)
    panels = len(SEMI_PARTS) + 2 * bool(ablation)
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.6))
    width = 0.8 / len(semi.METHODS)
    for ax, (part, title) in zip(axes, SEMI_PARTS, strict=False):
        present = semi_cells(cells, part)
        models = [m for m in semi.MODELS if any(model == m for model, _, _ in present)]  # models with results
        for model, method, runs in present:
            i, x = semi.METHODS.index(method), models.index(model)
            seed_bar(ax, x + (i - 1) * width, [r["miou"] for r in runs], width, color=f"C{i}",
                     label=method if x == 0 else None)
        ax.set_xticks(range(len(models)), models)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("Val mIoU (mean ± std, dots: seeds)")
    axes[0].legend(fontsize=8)
    if ablation:
        supervised = [r["miou"] for r in cells.get(ABLATION_BASELINE, [])]
        ablation_plot(axes[-2], axes[-1], ablation, statistics.mean(supervised) if supervised else None)
    for ax in axes[1:len(SEMI_PARTS) + 1]:
        ax.sharey(axes[0])
    return _save(fig, path)


def ablation_plot(miou_ax, ece_ax, rows: list[tuple[str, float, list[dict]]], supervised: float | None) -> None:
    """PseudoSeg ablation: Val mIoU per (source, T) beside the supervised mean (dashed), and the accuracy and ECE
    of each pseudo-label source (mean over all ablation runs, last training interval) and of the sharpened target
    actually trained on."""
    labels = [f"{source}\nT {t:g}" for source, t, _ in rows]
    for x, (_, _, runs) in enumerate(rows):
        seed_bar(miou_ax, x, [r["miou"] for r in runs], 0.6, color="C2")
    if supervised is not None:
        miou_ax.axhline(supervised, color="C0", ls="--", lw=1, label="supervised")
        miou_ax.legend(fontsize=8, loc="lower right")
    miou_ax.set_xticks(range(len(rows)), labels, fontsize=7)
    miou_ax.set_title("PseudoSeg ablation, 20 points/image (Val mIoU)", fontsize=9)
    miou_ax.grid(axis="y", alpha=0.3)
    runs = [r for _, _, rs in rows for r in rs]
    for i, metric in enumerate(("acc", "ece")):
        values = [[r["last_log"][f"pseudo_{s}_{metric}"] for r in runs] for s in PSEUDO_SOURCES]
        ece_ax.bar(np.arange(len(PSEUDO_SOURCES)) + (i - 0.5) * 0.4, [statistics.mean(v) for v in values], 0.4,
                   yerr=[statistics.stdev(v) for v in values], capsize=3, color=f"C{i + 3}",
                   label="accuracy" if metric == "acc" else "ECE")
    ece_ax.set_xticks(range(len(PSEUDO_SOURCES)), PSEUDO_SOURCES)
    ece_ax.set_title("pseudo labels on unlabeled pixels (all ablation runs)", fontsize=9)
    ece_ax.legend(fontsize=8)
    ece_ax.grid(axis="y", alpha=0.3)


def load_clicks() -> dict[tuple[str, str], list[dict]]:
    """``click_levers.py`` results grouped by (phase, cell), seeds together."""
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for path in sorted(RESULTS.glob("clicks_*.json")):
        record = json.loads(path.read_text())
        cells[(record["phase"], record["cell"])].append(record)
    return cells


CLICK_CLASSES = ("building", "road", "barren")  # the classes few clicks find


def click_row(label: str, runs: list[dict], baseline: list[dict] | None) -> str:
    val = [r["val"]["miou"] for r in runs]
    flips = mean_std([r["val_flips"]["miou"] for r in runs])
    scene = mean_std([r["same_scene"]["miou"] for r in runs]) if "same_scene" in runs[0] else "-"
    gain = "-"
    if baseline and label != "baseline":
        base = {r["seed"]: r["val"]["miou"] for r in baseline}
        gain = format_gains([r["val"]["miou"] - base[r["seed"]] for r in runs if r["seed"] in base])
    per_class = " | ".join(f"{statistics.mean(r['val']['per_class_iou'][c] or 0.0 for r in runs):.3f}"
                           for c in CLICK_CLASSES)
    peer = [r["random_forest"]["val"]["miou"] for r in runs if "random_forest" in r]
    peer_text = mean_std(peer) if peer else "-"
    seconds = statistics.mean(r["train_seconds"] for r in runs)
    return (f"| {label} | {mean_std(val)} | {gain} | {flips} | {scene} | {per_class} | {peer_text} | {seconds:.0f} | "
            f"{len(runs)} |")


def clicks_tables(cells: dict[tuple[str, str], list[dict]]) -> str:
    """One table per phase: Val mIoU (paired gain over the phase's baseline), with flips, same scene, the IoU of
    the classes few clicks find, the random-forest peer on the same clicks, training seconds."""
    out = [folds_table(cells)] if any(phase == "folds" for phase, _ in cells) else []
    for phase in ("select", "levers", "budget", "annotators"):
        names = sorted((cell for (ph, cell) in cells if ph == phase),  # budget cells by clicks, not by text
                       key=lambda c: (c.rsplit("_p", 1)[0], int(c.rsplit("_p", 1)[1])) if phase == "budget" else (c, 0))
        if not names:
            continue
        baseline = cells.get((phase, "baseline"))
        lines = [f"**{phase}**", "",
                 "| cell | Val mIoU | gain over baseline | Val mIoU, flips | same scene | "
                 + " | ".join(CLICK_CLASSES) + " | random forest, Val | train s | seeds |",
                 "|---|---|---|---|---|" + "---:|" * len(CLICK_CLASSES) + "---|---:|---:|"]
        lines += [click_row(cell, cells[(phase, cell)], baseline) for cell in names]
        out.append("\n".join(lines))
    return "\n\n".join(out)


def folds_table(cells: dict[tuple[str, str], list[dict]]) -> str:
    """The fold-wise selection: per cell and seed, the mIoU of the confusion matrices summed over the folds'
    held-out tiles (every Train tile predicted once, by a model that did not see it), the per-fold mIoU, the IoU of
    the classes few clicks find, and the paired gain over the baseline (pooled, and on how many folds)."""
    runs = defaultdict(dict)  # (cell, seed) -> {fold: record}
    for (phase, name), records in cells.items():
        if phase == "folds":
            cell, fold = name.rsplit("_f", 1)
            for r in records:
                runs[(cell, r["seed"])][int(fold)] = r
    if not runs:
        return ""
    classes = list(next(iter(next(iter(runs.values())).values()))["val"]["per_class_iou"])
    pooled = {key: summarize(sum(np.array(r["val"]["confusion_matrix"]) for r in folds.values()), classes)
              for key, folds in runs.items()}
    lines = ["**folds** (confusion matrices summed over the held-out folds)", "",
             "| cell | seed | folds | pooled mIoU | per fold | " + " | ".join(CLICK_CLASSES)
             + " | gain over baseline (folds ahead) | train s |",
             "|---|---:|---:|---:|---|" + "---:|" * len(CLICK_CLASSES) + "---|---:|"]
    for (cell, seed), folds in sorted(runs.items()):
        m = pooled[(cell, seed)]
        per_fold = ", ".join(f"{folds[f]['val']['miou']:.3f}" for f in sorted(folds))
        base = runs.get(("baseline", seed), {})
        gain = "-"
        if cell != "baseline" and base.keys() == folds.keys():
            ahead = sum(folds[f]["val"]["miou"] > base[f]["val"]["miou"] for f in folds)
            gain = f"{m['miou'] - pooled[('baseline', seed)]['miou']:+.3f} ({ahead}/{len(folds)})"
        seconds = statistics.mean(r["train_seconds"] for r in folds.values())
        lines.append(f"| {cell} | {seed} | {len(folds)} | {m['miou']:.3f} | {per_fold} | "
                     + " | ".join(f"{m['per_class_iou'][c] or 0.0:.3f}" for c in CLICK_CLASSES)
                     + f" | {gain} | {seconds:.0f} |")
    return "\n".join(lines)


def budget_plot(cells: dict[tuple[str, str], list[dict]], path: Path) -> Path:
    """mIoU against clicks per image: baseline, new default and the random-forest peer (Val and same scene)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, title in ((axes[0], "val", "Val 16-23"), (axes[1], "same_scene", "same scene (clicked Train tiles)")):
        recipes = [("baseline", "o--"), (DEFAULT, "o-")] if DEFAULT != "baseline" else [(DEFAULT, "o-")]
        for recipe, style in recipes:
            points = sorted((r["points_per_image"], r[key]["miou"]) for (ph, c), runs in cells.items()
                            if ph == "budget" and c.startswith(recipe + "_p") for r in runs)
            if points:
                label = "baseline = new default" if DEFAULT == "baseline" else (
                    "new default" if recipe == DEFAULT else recipe)
                ax.plot(*zip(*points, strict=True), style, label=label)
        peer = sorted({(r["points_per_image"], r["random_forest"][key]["miou"]) for (ph, _), runs in cells.items()
                       if ph == "budget" for r in runs if "random_forest" in r})
        if peer:
            ax.plot(*zip(*peer, strict=True), "s:", label="random forest (peer)")
        dense = [r[key]["miou"] for r in cells.get(("levers", "dense_default"), []) if r["seed"] == 0]
        if dense:  # the new default's upper bound: the same tiles' dense masks, the budget phase's seed
            ax.axhline(dense[0], color="grey", linestyle="-.", label="new default, dense masks")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks([5, 10, 20, 50], ["5", "10", "20", "50"])
        ax.set_xlabel("clicks per image")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mIoU")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def load_s5(results: Path) -> dict[tuple[str, str], list[dict]]:
    """Issue 13's results (``s5_*.json``) grouped by (phase, cell)."""
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for path in sorted(results.glob("s5_*.json")):
        record = json.loads(path.read_text())
        cells[(record["phase"], record["cell"])].append(record)
    return cells


def s5_tables(cells: dict[tuple[str, str], list[dict]]) -> str:
    """Curation (paired gains over no pre-training and over random), multi-dataset (mIoU per dataset,
    parameters) and DDP (throughput, Val mIoU)."""
    out = ["**curation** (ViT-tiny, 20 clicks/image, Val 16-23)", "",
           "| cell | Val mIoU | gain over none | gain over random | pretrain s | train s | seeds |",
           "|---|---|---|---|---:|---:|---:|"]
    by_seed = {cell: {r["seed"]: r["val"]["miou"] for r in cells.get(("curation", cell), [])}
               for cell in ("none", "s4p_random", "s4p_curated")}

    def gain(cell: str, base: str) -> str:
        pairs = [by_seed[cell][s] - by_seed[base][s] for s in by_seed[cell] if s in by_seed[base]]
        return format_gains(pairs) if pairs and cell != base else "-"

    for cell in ("none", "s4p_random", "s4p_curated"):
        runs = cells.get(("curation", cell), [])
        if runs:
            seconds = [statistics.mean(r["seconds"].get(k, 0) for r in runs) for k in ("pretrain", "train")]
            out.append(f"| {cell} | {mean_std([r['val']['miou'] for r in runs])} | {gain(cell, 'none')} | "
                       f"{gain(cell, 's4p_random') if cell == 's4p_curated' else '-'} | {seconds[0]:.0f} | "
                       f"{seconds[1]:.0f} | {len(runs)} |")
    out += ["", "**multi-dataset** (ViT-tiny, dense masks; Val mIoU per dataset)", "",
            "| cell | LoveDA | Dubai | parameters | added per dataset | train s | seeds |",
            "|---|---|---|---:|---|---:|---:|"]
    for cell in ("separate_loveda", "separate_dubai", "shared", "moe", "shared_decoders", "moe_decoders"):
        runs = cells.get(("multi", cell), [])
        if not runs:
            continue
        score = {name: mean_std([r["val"][name]["miou"] for r in runs]) if name in runs[0]["val"] else "-"
                 for name in ("loveda", "dubai")}
        params = runs[0]["parameters"]
        added = ", ".join(f"{k} {v / 1e3:.0f}K" for k, v in params["per_dataset"].items())
        seconds = statistics.mean(r["train_seconds"] or 0 for r in runs)
        out.append(f"| {cell} | {score['loveda']} | {score['dubai']} | {params['total'] / 1e6:.2f}M | {added} | "
                   f"{seconds:.0f} | {len(runs)} |")
    out += ["", "**DDP** (this 2-core machine)", "", "| cell | processes | images/s | Val mIoU | train s |",
            "|---|---:|---:|---|---:|"]
    for (phase, cell), runs in sorted(cells.items()):
        if phase == "ddp":
            val = mean_std([r["val"]["miou"] for r in runs]) if "val" in runs[0] else "-"
            out.append(f"| {cell} | {runs[0]['processes']} | {statistics.mean(r['images_per_s'] for r in runs):.2f} "
                       f"| {val} | {statistics.mean(r['train_seconds'] for r in runs):.0f} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("which", choices=["points", "soft", "semi", "clicks", "s5"])
    p.add_argument("--plot", type=Path, help="soft/semi: also write the summary plot (PNG) here")
    p.add_argument("--results", type=Path, default=RESULTS, help="s5: the folder of result JSONs")
    args = p.parse_args()
    if args.which == "s5":
        print(s5_tables(load_s5(args.results)))
        return
    if args.which == "clicks":
        clicks = load_clicks()
        print(clicks_tables(clicks))
        if args.plot:
            print(f"wrote {budget_plot(clicks, args.plot)}")
        return
    cells = load()
    if args.which == "points":
        print(points_tables(cells))
    elif args.which == "soft":
        print(soft_table(cells) + "\n\n" + soft_claims(cells))
    else:
        print(semi_tables(cells) + "\n\n### Predicted share of Val pixels per class\n\n" + semi_class_shares(cells)
              + "\n\n### PseudoSeg ablation (20 points/image, unet-mobilenetv2)\n\n" + semi_ablation(cells))
    if args.plot and args.which != "points":
        plot = soft_plot if args.which == "soft" else semi_plot
        print(f"wrote {plot(cells, args.plot)}")


if __name__ == "__main__":
    main()
