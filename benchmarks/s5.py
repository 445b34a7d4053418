"""S5 at our scale (issue 13): curation + S4P pre-training, multi-dataset MoE fine-tuning, DDP throughput.

Phases (one result JSON per cell and seed in ``results/``; finished cells are skipped):

- ``curation``: a ViT-tiny (no ImageNet weights: none load offline for ViTs) fine-tuned on 20 uniform clicks per
  image of LoveDA Rural Train 0-15 (the package's default recipe otherwise), starting from (a) nothing, (b) S4P
  (``pointseg pretrain``: FixMatch on the same clicks plus ``--budget`` pool images drawn at random), (c) S4P on
  ``--budget`` images picked by ``pointseg curate`` with model (a). Val 16-23. The pool: ``../shared/data/pool``
  (RSSCN7, down-scaled AID) and the Dubai images (no masks); never Val.
- ``multi``: dense masks of LoveDA Rural (Train / Val) and Dubai (tiles 1-5 train, 6-7 val, linked under
  ``--work``): two separate ViT-tiny models, one shared ViT-tiny with a head per dataset, one with MoE FFNs
  (``model.moe_part``); and the shared and MoE models with a decoder per dataset (``*_decoders``, S5's design);
  ``unet_shared`` / ``unet_shared_decoders``: the shared model and its decoder-per-dataset twin as the default
  ImageNet MobileNetV2 U-Net.
  mIoU per dataset, parameters in all and per added dataset.
- ``ddp``: images/s of ``--ddp-steps`` steps on 1 process (2 threads) and on 2 torchrun processes (1 thread
  each), and Val mIoU of the default U-Net recipe trained by 1 process and by 2.

A seed sets the clicks, the random pool subset and the runs. Commands are recorded in each result.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import socket
import sys
import time
from pathlib import Path

from common import RESULTS, pointseg, run
from pointseg.data.classes import LOVEDA_CLASSES
from pointseg.data.sources import ImageFolder
from pointseg.io import write_json, write_text

VIT = ["model.name=vit-tiny", "model.encoder_weights=null", "data.domains=[Rural]"]
MOE = ["model.moe_part=0.25"]
MOBILENET = "mobilenet_v2-b0353104.pth"
DUBAI_TRAIN, DUBAI_VAL = range(1, 6), range(6, 8)


def sets_args(sets: list[str]) -> list[str]:
    return [a for s in sets for a in ("--set", s)]


def evaluate(run_dir: Path, root: Path, out: Path, dataset: str | None = None) -> tuple[dict, list[str]]:
    cmd = pointseg("evaluate", "--run", str(run_dir), "--data-root", str(root), "--split", "Val", "--out", str(out),
                   *(["--dataset", dataset] if dataset else []))
    run(cmd)
    m = json.loads(out.read_text())
    return {"miou": m["miou"], "per_class_iou": m["per_class_iou"], "confusion_matrix": m["confusion_matrix"]}, cmd


def timed(cmd: list[str], commands: list[str]) -> float:
    commands.append(shlex.join(cmd))
    t0 = time.perf_counter()
    run(cmd)
    return round(time.perf_counter() - t0, 1)


def pool_images(pools: list[Path]) -> list[Path]:
    """Every image below the pool folders, as ``--unlabeled`` and ``curate --pool`` read them."""
    return [Path(ref.image) for pool in pools for ref in ImageFolder(pool, LOVEDA_CLASSES, recursive=True).refs]


def curation_cells(args: argparse.Namespace, seed: int) -> None:
    work = args.work / f"s5_curation_seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    root, points = str(args.data_root), work / "points.json"
    sets = [*VIT, f"seed={seed}", f"train.steps={args.steps}"]
    if not points.exists():
        run(pointseg("points", "simulate", "--data-root", root, "--split", "Train", "--per-image", "20",
                     "--seed", str(seed), "--out", str(points)))
    base = work / "none"
    for cell in ("none", "s4p_random", "s4p_curated"):
        out = args.results / f"s5_curation_{cell}_seed{seed}.json"
        if out.exists():
            continue
        commands: list[str] = []
        seconds: dict[str, float] = {}
        tuned = work / cell
        if cell != "none":
            selection = work / f"{cell}.txt"
            if cell == "s4p_random":
                chosen = random.Random(seed).sample(pool_images(args.pool), args.budget)
                write_text(selection, "".join(f"{p.resolve()}\n" for p in chosen))
            else:
                seconds["curate"] = timed(pointseg(
                    "curate", "--run", str(base), "--data-root", root, "--split", "Train",
                    *[a for p in args.pool for a in ("--pool", str(p))], "--budget", str(args.budget),
                    "--clusters", str(args.clusters), "--out", str(selection)), commands)
            pretrained = work / f"{cell}_pretrain"
            seconds["pretrain"] = timed(pointseg(
                "pretrain", "--data-root", root, "--points", str(points), "--unlabeled", str(selection),
                "--out", str(pretrained), *sets_args([*sets, f"train.steps={args.pretrain_steps}"])), commands)
            init = ["--init", str(pretrained)]
        else:
            init = []
        if not (tuned / "model.pt").exists():
            seconds["train"] = timed(pointseg("train", "--data-root", root, "--points", str(points), "--out",
                                              str(tuned), *init, *sets_args(sets)), commands)
        val, cmd = evaluate(tuned, args.data_root, work / f"{cell}_val.json")
        write_json(out, {"phase": "curation", "cell": cell, "seed": seed, "budget": args.budget, "val": val,
                         "seconds": seconds, "commands": [*commands, shlex.join(cmd)]})
        print(f"    curation {cell} seed {seed}: Val mIoU {val['miou']:.4f}", flush=True)


def dubai_root(dubai: Path, work: Path) -> Path:
    """Dubai tiles 1-5 as ``Train`` and 6-7 as ``Val``, linked (file names prefixed with their tile)."""
    root = work / "dubai-split"
    for split, tiles in (("Train", DUBAI_TRAIN), ("Val", DUBAI_VAL)):
        for kind in ("images", "masks"):
            (root / split / kind).mkdir(parents=True, exist_ok=True)
            for tile in tiles:
                for f in sorted((dubai / f"Tile {tile}" / kind).iterdir()):
                    link = root / split / kind / f"tile{tile}_{f.name}"
                    if not link.exists():
                        os.symlink(f.resolve(), link)
    return root


def multi_cells(args: argparse.Namespace, seed: int) -> None:
    dubai = dubai_root(args.dubai, args.work)
    table = args.dubai / "classes.csv"
    as_dubai = ["format=folder", f"classes={table}", "color_coded=true"]
    two = ["data.name=loveda", *[f"datasets.dubai.{x}" for x in as_dubai]]
    cells = {"separate_loveda": ([], ["--data-root", str(args.data_root)], [("loveda", args.data_root, None)]),
             "separate_dubai": ([f"data.{x}" for x in as_dubai], ["--data-root", str(dubai)],
                                [("dubai", dubai, None)]),
             "shared": (two, ["--data-root", str(args.data_root), "--data-root", f"dubai={dubai}"],
                        [("loveda", args.data_root, "loveda"), ("dubai", dubai, "dubai")]),
             "moe": ([*two, *MOE], ["--data-root", str(args.data_root), "--data-root", f"dubai={dubai}"],
                     [("loveda", args.data_root, "loveda"), ("dubai", dubai, "dubai")])}
    for cell in ("shared", "moe"):  # added after seeds 0-1 of the four above: a decoder per dataset (S5's design)
        extra, roots, evals = cells[cell]
        cells[f"{cell}_decoders"] = ([*extra, "model.decoder_per_dataset=true"], roots, evals)
    for cell in ("shared", "shared_decoders"):  # issue 20: the default U-Net (ImageNet MobileNetV2), not the ViT
        cells[f"unet_{cell}"] = cells[cell]
    cells = {cell: cells[cell] for cell in args.cells or cells}
    for cell, (extra, roots, evals) in cells.items():
        out = args.results / f"s5_multi_{cell}_seed{seed}.json"
        if out.exists():
            continue
        work = args.work / f"s5_multi_{cell}_seed{seed}"
        commands: list[str] = []
        if not (work / "run" / "model.pt").exists():
            model = VIT if not cell.startswith("unet_") else [
                "model.name=unet-mobilenetv2", f"model.encoder_weights={args.weights / MOBILENET}",
                "data.domains=[Rural]"]
            train_s = timed(pointseg("train", *roots, "--out", str(work / "run"),
                                     *sets_args([*model, *extra, f"seed={seed}", f"train.steps={args.steps}"])),
                            commands)
        else:
            train_s = None
        scores = {}
        for name, root, head in evals:
            scores[name], cmd = evaluate(work / "run", root, work / f"{name}_val.json", head)
            commands.append(shlex.join(cmd))
        info = json.loads((work / "run" / "run.json").read_text())["invocations"][0]["parameters"]
        write_json(out, {"phase": "multi", "cell": cell, "seed": seed, "val": scores, "parameters": info,
                         "train_seconds": train_s, "commands": commands})
        print(f"    multi {cell} seed {seed}: " + ", ".join(f"{k} {v['miou']:.4f}" for k, v in scores.items()),
              flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_cells(args: argparse.Namespace, seed: int) -> None:
    root = str(args.data_root)
    weights = (args.weights / "mobilenet_v2-b0353104.pth").resolve()
    base = ["data.domains=[Rural]", f"model.encoder_weights={weights}", f"seed={seed}"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                "127.0.0.1"]
    for cell, processes, steps in (("speed_1proc", 1, args.ddp_steps), ("speed_2proc", 2, args.ddp_steps),
                                   ("val_1proc", 1, args.steps), ("val_2proc", 2, args.steps)):
        out = args.results / f"s5_ddp_{cell}_seed{seed}.json"
        if out.exists():
            continue
        work = args.work / f"s5_ddp_{cell}_seed{seed}"
        sets = [*base, f"train.threads={2 // processes}", "train.log_every=10",
                f"train.steps={steps}", *(["optim.warmup_steps=5"] if cell.startswith("speed") else [])]
        train_args = ["train", "--data-root", root, "--points", str(args.work / f"s5_curation_seed{seed}" /
                                                                      "points.json"), "--out", str(work / "run")]
        if processes == 1:
            cmd = pointseg(*train_args, *sets_args(sets))
        else:
            cmd = [*torchrun, "--master_port", str(free_port()), "-m", "pointseg", *train_args, *sets_args(sets)]
        commands: list[str] = []
        train_s = timed(cmd, commands)
        lines = [json.loads(x) for x in (work / "run" / "metrics.jsonl").read_text().splitlines()]
        result = {"phase": "ddp", "cell": cell, "seed": seed, "processes": processes, "train_seconds": train_s,
                  "images_per_s": sum(x["images_per_s"] for x in lines[1:] or lines) / max(1, len(lines[1:] or lines)),
                  "commands": commands}
        if cell.startswith("val"):
            result["val"], cmd = evaluate(work / "run", args.data_root, work / "val.json")
            commands.append(shlex.join(cmd))
        write_json(out, result)
        print(f"    ddp {cell} seed {seed}: {result['images_per_s']:.2f} images/s", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=("curation", "multi", "ddp"))
    p.add_argument("--data-root", type=Path, required=True, help="LoveDA root (Train 0-15, Val 16-23)")
    p.add_argument("--dubai", type=Path, help="the Dubai set (Tile 1..7), for multi")
    p.add_argument("--pool", type=Path, action="append", default=[], help="unlabeled pool folders, for curation")
    p.add_argument("--weights", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "weights")
    p.add_argument("--work", type=Path, default=Path("/tmp/pointseg-s5"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=500, help="training / fine-tuning steps")
    p.add_argument("--pretrain-steps", type=int, default=500)
    p.add_argument("--budget", type=int, default=300, help="pool images for S4P")
    p.add_argument("--clusters", type=int, default=8)
    p.add_argument("--ddp-steps", type=int, default=40)
    p.add_argument("--cells", nargs="+", help="multi: only these cells (default: all)")
    p.add_argument("--results", type=Path, default=RESULTS, help="where result JSONs go (a smoke test: elsewhere)")
    args = p.parse_args()
    for seed in args.seeds:
        if args.phase == "curation":
            curation_cells(args, seed)
        elif args.phase == "multi":
            multi_cells(args, seed)
        else:
            if not (args.work / f"s5_curation_seed{seed}" / "points.json").exists():
                (args.work / f"s5_curation_seed{seed}").mkdir(parents=True, exist_ok=True)
                run(pointseg("points", "simulate", "--data-root", str(args.data_root), "--split", "Train",
                             "--per-image", "20", "--seed", str(seed), "--out",
                             str(args.work / f"s5_curation_seed{seed}" / "points.json")))
            ddp_cells(args, seed)


if __name__ == "__main__":
    main()
