"""``pointseg demo``: the whole chain on a LoveDA root, written as one report."""

from __future__ import annotations

import argparse
from pathlib import Path

from pointseg import build, runs
from pointseg.commands.evaluate import run_evaluation
from pointseg.commands.train import run_training
from pointseg.config import load_config, load_settings
from pointseg.data.points import save_points
from pointseg.evaluate import write_predictions
from pointseg.io import write_text
from pointseg.metrics import format_table
from pointseg.report import md_code_block, md_text

DEMO_SCHEDULE = ("train.steps=250", "optim.warmup_steps=25")  # half the default schedule: a demo in minutes


def run_demo(data_root: str | Path, out: str | Path, overrides: list[str] | tuple[str, ...] = (),
             download: bool = False, per_image: int = 20, predict_images: int = 4) -> Path:
    """Simulate points on Train, train, evaluate on Val, predict a few Val images; returns ``REPORT.md``."""
    data_root, out = Path(data_root), Path(out)
    if download and not (data_root / "Train").is_dir():
        from pointseg.data.download import download_loveda

        download_loveda(data_root)
    overrides = [*DEMO_SCHEDULE, *overrides]  # the user's --set come last and win
    cfg = load_config(None, overrides)
    print(f"[1/4] simulating {per_image} points per image")
    points_path = save_points(out / "points.json", build.build_simulated_points(cfg, data_root, per_image))
    print(f"[2/4] training: {build.describe(cfg)}")
    run_training(load_settings(None, overrides), out / "run", build.TrainInputs(data_root, points_path),
                 resume=(out / "run" / "config.yaml").exists())
    print("[3/4] evaluating on Val at full resolution")
    metrics = run_evaluation(out / "run", data_root, "Val", out / "metrics.json")
    print("[4/4] predicting Val images")
    trained = runs.load_run(out / "run")
    cfg = trained.cfg
    write_predictions(trained.predictor(), trained.dataset(data_root, "Val"), out / "predictions", limit=predict_images)
    report = out / "REPORT.md"
    write_text(report, "\n".join([
        "# pointseg demo", "",
        f"Data: {md_text(data_root)}; {per_image} simulated points per Train image (`points.json`); "
        f"{build.describe(cfg)} (run directory `run/`).", "",
        "## Val metrics (full resolution)", "", md_code_block(format_table(metrics)), "",
        "![confusion](metrics_confusion.png)", "", "![overlays](metrics_overlays.png)", "",
        "![loss](run/loss.png)", "", f"Predicted masks for {predict_images} Val images: `predictions/`.", ""]))
    print(f"done: {report}")
    return report


def main(args: argparse.Namespace) -> Path:
    """Simulate 20 points/image -> train -> evaluate on Val -> predict a few images -> REPORT.md."""
    return run_demo(args.data_root, args.out, args.set, download=args.download, per_image=args.per_image)


def register(sub: argparse._SubParsersAction) -> None:
    de = sub.add_parser("demo", help="the whole chain on LoveDA, in minutes on a CPU")
    de.add_argument("--data-root", required=True)
    de.add_argument("--out", required=True)
    de.add_argument("--per-image", type=int, default=20)
    de.add_argument("--download", action="store_true", help="download LoveDA into --data-root if missing")
    de.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    de.set_defaults(func=main)
