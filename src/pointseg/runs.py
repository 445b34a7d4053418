"""The run store: what a run directory holds and how a finished run is loaded back.

A run directory holds ``config.yaml`` (resolved config), ``run.json`` (git commit, versions, command),
``metrics.jsonl``, ``checkpoints/last.pt`` and, once training has finished, ``model.pt``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

from pointseg import __version__
from pointseg.build import build_model_from_config
from pointseg.config import default_config, dump_config, merge
from pointseg.data.classes import ClassTable
from pointseg.io import atomic_path, write_json, write_text
from pointseg.models import SegmentationModel


def git_commit() -> str:
    """The commit of the pointseg checkout that runs (``unknown`` outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_run_info(run_dir: Path, cfg: dict, argv: list[str] | None = None) -> None:
    write_text(run_dir / "config.yaml", dump_config(cfg))
    write_json(run_dir / "run.json", {"git_commit": git_commit(), "pointseg_version": __version__,
                                      "torch_version": torch.__version__, "argv": argv or []})


def save_model(path: Path, model: SegmentationModel, cfg: dict, classes: ClassTable) -> None:
    """The trained model for ``evaluate``/``predict``: weights, resolved config and class table."""
    with atomic_path(path) as tmp:
        torch.save({"model": model.state_dict(), "config": cfg, "classes": classes.to_dict()}, tmp)


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[SegmentationModel, dict, ClassTable]:
    """Model (in eval mode), config and class table of a finished run."""
    path = Path(run_dir) / "model.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no trained model in this run directory (did training finish?)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    cfg = merge(default_config(), state["config"])  # keys added since the run was trained get their defaults
    classes = ClassTable.from_dict(state["classes"])
    model = build_model_from_config(cfg, classes.num_classes, pretrained=False)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg, classes
