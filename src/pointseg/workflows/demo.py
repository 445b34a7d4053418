"""The whole chain (simulated clicks -> train -> evaluate -> predict), written as one report, on the sample shipped
with pointseg or on a LoveDA root."""

from __future__ import annotations

import logging
from pathlib import Path

from pointseg import build, runs
from pointseg.config import load_config, load_settings
from pointseg.data.points import save_points
from pointseg.evaluate import write_predictions
from pointseg.io import check_writable, write_text
from pointseg.metrics import format_table
from pointseg.models.smp_unet import is_weights_file
from pointseg.report import md_code_block, md_text
from pointseg.workflows.evaluate import run_evaluation
from pointseg.workflows.sample import dubai_settings, sample_dir
from pointseg.workflows.train import run_training

log = logging.getLogger(__name__)
DEMO_SCHEDULE = ("train.steps=250", "optim.warmup_steps=25")  # half the default schedule: a demo in minutes


def run_demo(data_root: str | Path | None, out: str | Path, overrides: list[str] | tuple[str, ...] = (),
             download: bool = False, per_image: int = 20, predict_images: int = 4) -> Path:
    """Simulate points on Train, train, evaluate on Val, predict a few Val images; returns ``REPORT.md``.
    ``data_root``: a LoveDA root; ``None``: the Dubai tiles of the sample shipped with pointseg."""
    out = Path(out)
    check_writable(out)
    if data_root is None:
        data_root = sample_dir() / "dubai"
        overrides = [*dubai_settings(data_root), *overrides]
    data_root = Path(data_root)
    if download and not (data_root / "Train").is_dir():
        from pointseg.data.download import download_loveda

        download_loveda(data_root)
    overrides = with_encoder(load_config(None, [*DEMO_SCHEDULE, *overrides]), [*DEMO_SCHEDULE, *overrides])
    cfg = load_config(None, overrides)  # the user's --set come last and win
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


def with_encoder(cfg: dict, overrides: list[str]) -> list[str]:
    """``overrides``, or, when the encoder's pretrained weights come from the hub and cannot be fetched (offline),
    ``unet-small`` trained from scratch instead, said on the terminal."""
    weights = cfg["model"]["encoder_weights"]
    if cfg["model"]["name"] == "unet-small" or weights in (None, "none", "") or is_weights_file(weights):
        return overrides
    try:
        build.build_model_from_config(cfg, 2)  # fetches the weights, or finds them in the hub's cache
    except (RuntimeError, OSError, ValueError) as e:
        log.info("fetching %s weights failed: %s", weights, e)
        print(f"pointseg demo: the encoder's pretrained weights ({weights!r}) could not be fetched (offline?); "
              "training unet-small from scratch instead. Offline, give a weights file: --set "
              "model.encoder_weights=FILE (e.g. torchvision's mobilenet_v2-b0353104.pth)")
        return [*overrides, "model.name=unet-small", "model.encoder_weights=null"]
    return overrides
