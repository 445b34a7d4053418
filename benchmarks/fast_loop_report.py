"""Tables and the label-budget plot of BENCHMARKS.md section 9, from ``benchmarks/results/fast_*.json`` and
section 6's runs (``clicks_*.json``).

    python benchmarks/fast_loop_report.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SEEDS = (0, 1, 2)


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def stat(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f} (1 seed)"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"  # sample std, as section 6


def section6(per_image: int, seed: int) -> dict | None:
    """Section 6's default recipe and random forest on the same clicks."""
    return load(f"clicks_levers_default_seed{seed}") if per_image == 20 else load(
        f"clicks_budget_default_p{per_image}_seed{seed}")


def forest(per_image: int, seed: int) -> dict | None:
    cell = load(f"clicks_levers_baseline_seed{seed}") if per_image == 20 else load(
        f"clicks_budget_baseline_p{per_image}_seed{seed}")
    return cell and cell.get("random_forest")


def budget_table() -> str:
    rows = ["| clicks/tile | fast, same scene | fast, Val | default recipe, same scene | default recipe, Val | "
            "random forest, same scene | random forest, Val | fast / default, Val | click accuracy | fit s | "
            "maps of 16 tiles s | round s |", "|---:|---|---|---|---|---|---|---:|---|---:|---:|---:|"]
    for p in (5, 10, 20, 50):
        cells = [c for s in SEEDS if (c := load(f"fast_budget_p{p}_seed{s}"))]
        if not cells:
            continue
        fast_same, fast_val = [c["Train"]["miou"] for c in cells], [c["Val"]["miou"] for c in cells]
        defaults = [d for s in SEEDS if (d := section6(p, s))]
        forests = [f for s in SEEDS if (f := forest(p, s))]
        d_same, d_val = [d["same_scene"]["miou"] for d in defaults], [d["val"]["miou"] for d in defaults]
        ratio = np.mean(fast_val) / np.mean(d_val) if d_val else float("nan")
        accuracy = [c["click_accuracy"]["accuracy"] for c in cells if c["click_accuracy"]]
        rows.append(f"| {p} | {stat(fast_same)} | {stat(fast_val)} | {stat(d_same)} | {stat(d_val)} | "
                    f"{stat([f['same_scene']['miou'] for f in forests])} | {stat([f['val']['miou'] for f in forests])} "
                    f"| {ratio:.2f} | {stat(accuracy)} | {np.mean([c['seconds']['fit'] for c in cells]):.1f} | "
                    f"{np.mean([c['seconds']['maps_Train'] for c in cells]):.1f} | "
                    f"{np.mean([c['seconds']['round'] for c in cells]):.1f} |")
    return "\n".join(rows)


def rounds_table() -> str:
    rows = ["| clicks/tile | corrective, same scene | suggest, same scene | uniform, same scene | corrective - uniform "
            "(seeds ahead) | corrective, Val | suggest, Val | uniform, Val | click accuracy (corrective / suggest / "
            "uniform) |", "|---:|---|---|---|---|---|---|---|---|"]
    data = {k: [c for s in SEEDS if (c := load(f"fast_rounds_{k}_seed{s}"))] for k in ("corrective", "suggest",
                                                                                        "uniform")}
    if not all(data.values()):
        return ""
    n = min(len(c["rounds"]) for cells in data.values() for c in cells)
    for r in range(n):
        same = {k: [c["rounds"][r]["Train"]["miou"] for c in cells] for k, cells in data.items()}
        val = {k: [c["rounds"][r]["Val"]["miou"] for c in cells] for k, cells in data.items()}
        acc = {k: [c["rounds"][r]["click_accuracy"]["accuracy"] for c in cells] for k, cells in data.items()}
        k = min(len(same["corrective"]), len(same["uniform"]))
        gain = np.array(same["corrective"][:k]) - np.array(same["uniform"][:k])
        rows.append(f"| {data['corrective'][0]['rounds'][r]['per_image']} | {stat(same['corrective'])} | "
                    f"{stat(same['suggest'])} | {stat(same['uniform'])} | {gain.mean():+.3f} ± {gain.std():.3f} "
                    f"({int((gain > 0).sum())}/{k}) | {stat(val['corrective'])} | {stat(val['suggest'])} | "
                    f"{stat(val['uniform'])} | {np.mean(acc['corrective']):.2f} / {np.mean(acc['suggest']):.2f} / "
                    f"{np.mean(acc['uniform']):.2f} |")
    return "\n".join(rows)


def tracking() -> str:
    """How click accuracy tracks the masks' scores, by how the clicks were placed (uniform clicks are a uniform
    sample of the labelled pixels; corrective and suggested ones are not)."""
    fits: dict[str, list[tuple[float, float, float, float]]] = {"uniform": [], "corrective": [], "suggest": []}

    def add(kind: str, c: dict) -> None:
        fits[kind].append((c["click_accuracy"]["accuracy"], c["Train"]["pixel_accuracy"],
                           c["click_accuracy"]["miou"], c["Train"]["miou"]))

    for path in sorted(RESULTS.glob("fast_budget_*.json")):
        add("uniform", json.loads(path.read_text()))
    for path in sorted(RESULTS.glob("fast_rounds_*.json")):
        cell = json.loads(path.read_text())
        for r, c in enumerate(cell["rounds"]):
            add("uniform" if r == 0 else cell["cell"], c)
    rows = ["| clicks placed | fits | click accuracy | masks' pixel accuracy (same scene) | difference | correlation | "
            "click mIoU | masks' mIoU | correlation |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for kind, values in fits.items():
        if len(values) < 3:
            continue
        a = np.array(values)
        rows.append(f"| {kind} | {len(a)} | {a[:, 0].mean():.3f} | {a[:, 1].mean():.3f} | "
                    f"{np.mean(a[:, 0] - a[:, 1]):+.3f} | {np.corrcoef(a[:, 0], a[:, 1])[0, 1]:.2f} | "
                    f"{a[:, 2].mean():.3f} | {a[:, 3].mean():.3f} | {np.corrcoef(a[:, 2], a[:, 3])[0, 1]:.2f} |")
    return "\n".join(rows)


def warm_table() -> str:
    rows = ["| cell | seed | warm start, Val | default recipe, Val | gain | warm start, same scene | default, same "
            "scene | gain | fast model (its init), Val / same scene | train s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for cell, base, start in (("p20", lambda s: load(f"clicks_levers_default_seed{s}"),
                               lambda s: load(f"fast_budget_p20_seed{s}")),
                              ("corrective_r4", lambda s: load(f"clicks_budget_default_p50_seed{s}"),
                               lambda s: (c := load(f"fast_rounds_corrective_seed{s}")) and c["rounds"][-1])):
        for s in SEEDS:
            w, d, f = load(f"fast_warm_{cell}_seed{s}"), base(s), start(s)
            if not (w and d and f):
                continue
            rows.append(f"| {cell} | {s} | {w['val']['miou']:.3f} | {d['val']['miou']:.3f} | "
                        f"{w['val']['miou'] - d['val']['miou']:+.3f} | {w['same_scene']['miou']:.3f} | "
                        f"{d['same_scene']['miou']:.3f} | {w['same_scene']['miou'] - d['same_scene']['miou']:+.3f} | "
                        f"{f['Val']['miou']:.3f} / {f['Train']['miou']:.3f} | {w['train_seconds']:.0f} |")
        warm = [w for s in SEEDS if (w := load(f"fast_warm_{cell}_seed{s}"))]
        if len(warm) > 1:
            base_cells = [base(s) for s in SEEDS if load(f"fast_warm_{cell}_seed{s}")]
            rows.append(f"| {cell}, mean ± std | | {stat([w['val']['miou'] for w in warm])} | "
                        f"{stat([d['val']['miou'] for d in base_cells])} | | "
                        f"{stat([w['same_scene']['miou'] for w in warm])} | "
                        f"{stat([d['same_scene']['miou'] for d in base_cells])} | | | |")
    return "\n".join(rows)


def sentinel2_table() -> str:
    cells = [c for s in SEEDS if (c := load(f"fast_sentinel2_fast_vs_rf_seed{s}"))]
    if not cells:
        return ""
    rows = ["| model | clicked date (2022-07-19) | other date (2022-06-19) |", "|---|---|---|"]
    for name, key in (("fast model", "fast"), ("random forest", "forest")):
        rows.append(f"| {name} | {stat([c[f'{key}_clicked']['miou'] for c in cells])} | "
                    f"{stat([c[f'{key}_other_date']['miou'] for c in cells])} |")
    return "\n".join(rows)


def plot() -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, split, title in ((axes[0], "Train", "same scene (the 16 clicked tiles)"), (axes[1], "Val", "Val 16-23")):
        for strategy, colour in (("corrective", "tab:red"), ("suggest", "tab:blue"), ("uniform", "tab:grey")):
            cells = [c for s in SEEDS if (c := load(f"fast_rounds_{strategy}_seed{s}"))]
            if not cells:
                continue
            x = [r["per_image"] for r in cells[0]["rounds"]]
            y = np.array([[r[split]["miou"] for r in c["rounds"]] for c in cells])
            ax.errorbar(x, y.mean(0), yerr=y.std(0), label=f"fast model, {strategy} clicks", color=colour,
                        marker="o", capsize=3)
        defaults = [(p, d) for p in (5, 10, 20, 50) if (d := section6(p, 0))]
        key = "same_scene" if split == "Train" else "val"
        ax.plot([p for p, _ in defaults], [d[key]["miou"] for _, d in defaults], "s--", color="tab:green",
                label="default recipe, uniform (seed 0, section 6)")
        dense = [d[key]["miou"] for s in SEEDS if (d := load(f"clicks_levers_dense_default_seed{s}"))]
        if dense:
            ax.axhline(np.mean(dense), color="black", linestyle=":", label="dense bound (default recipe on masks)")
        ax.set(title=title, xlabel="clicks per tile", ylabel="mIoU")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    out = RESULTS / "fast_label_budget.png"
    fig.savefig(out, dpi=110)
    return out


if __name__ == "__main__":
    for title, text in (("budget", budget_table()), ("rounds", rounds_table()), ("tracking", tracking()),
                        ("warm", warm_table()), ("sentinel2", sentinel2_table())):
        print(f"\n### {title}\n\n{text}")
    print(plot())
