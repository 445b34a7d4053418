"""Run one benchmark cell as ``pointseg`` processes (train, then evaluate) and store its result."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from pointseg.io import write_json

RESULTS = Path(__file__).parent / "results"
# The package's default recipe before issue 12 (BENCHMARKS.md sections 1-5 and the click baseline of section 6 were
# measured with it). Those benchmarks pin it ahead of their own settings, so their commands measure the same runs
# whatever the package default becomes.
RECIPE_V1 = ("loss.name=focal", "labels.propagate=none", "train.steps=250", "optim.warmup_steps=25")


def pointseg(*args: str) -> list[str]:
    return [sys.executable, "-m", "pointseg.cli", *args]


def run(cmd: list[str]) -> None:
    print("+", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def run_cell(name: str, seed: int, data_root: str, work: str | Path, sets: list[str], train_args: list[str] = (),
             **fields) -> dict | None:
    """Train with ``--set`` overrides ``sets`` (over ``RECIPE_V1``; + ``train_args``), evaluate on Val, write the
    result JSON.

    Skips cells whose result exists. The result holds mIoU, per-class IoU, ECE, the confusion matrix (rows: true
    class), wall times, peak memory, the last training log line and the exact commands; ``fields`` are stored
    alongside.
    """
    out = RESULTS / f"{name}_seed{seed}.json"
    if out.exists():
        return None
    work = Path(work) / f"{name}_seed{seed}"
    train = pointseg("train", "--data-root", data_root, "--out", str(work / "run"), *train_args,
                     *[a for s in [*RECIPE_V1, *sets, f"seed={seed}"] for a in ("--set", s)])
    evaluate = pointseg("evaluate", "--run", str(work / "run"), "--data-root", data_root, "--split", "Val",
                        "--out", str(work / "val.json"))
    t0 = time.perf_counter()
    run(train)
    train_s = time.perf_counter() - t0
    run(evaluate)
    metrics = json.loads((work / "val.json").read_text())
    last = json.loads((work / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    result = {"cell": name, "seed": seed, **fields, "miou": metrics["miou"], "per_class_iou": metrics["per_class_iou"],
              "ece": metrics.get("ece"), "confusion_matrix": metrics["confusion_matrix"],
              "train_seconds": round(train_s, 1), "total_seconds": round(time.perf_counter() - t0, 1),
              "peak_memory_mb": last.get("peak_memory_mb"),
              "last_log": last, "commands": [shlex.join(train), shlex.join(evaluate)]}
    write_json(out, result)
    print(f"    {name} seed {seed}: mIoU {result['miou']:.4f}", flush=True)
    return result
