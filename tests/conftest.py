"""Shared fixtures: tiny generated datasets (never committed binaries) and the real data beside the project."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own resized-sample cache and two CPU threads at most."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    torch.set_num_threads(min(2, torch.get_num_threads()))


def shared_path(*parts: str) -> Path:
    """A path in ../shared; fails (never skips) when the shared material is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"{path} is missing: tests need ../shared beside the checkout")
    return path


def write_loveda(root: Path, split: str, ids: range, size: int = 64, seed: int = 0) -> Path:
    """A tiny LoveDA-layout split: smooth random images, masks with values 0 (no-data) and 1..7 in blocks."""
    rng = np.random.default_rng(seed)
    img_dir, mask_dir = root / split / "Rural" / "images_png", root / split / "Rural" / "masks_png"
    img_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    for i in ids:
        blocks = rng.integers(1, 8, size=(4, 4), dtype=np.uint8)
        mask = np.kron(blocks, np.ones((size // 4, size // 4), dtype=np.uint8))
        mask[:2, :] = 0
        m = mask.astype(np.int64)
        colour = np.stack([m * 30, 255 - m * 30, (m * 70) % 256], axis=-1)
        image = np.clip(colour + rng.integers(0, 20, colour.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(img_dir / f"{i}.png")
        Image.fromarray(mask).save(mask_dir / f"{i}.png")
    return root


@pytest.fixture
def tiny_loveda(tmp_path: Path) -> Path:
    root = tmp_path / "loveda"
    write_loveda(root, "Train", range(0, 4))
    write_loveda(root, "Val", range(4, 6), seed=1)
    return root


@pytest.fixture
def tiny_overrides(tmp_path: Path) -> list[str]:
    """Config overrides for seconds-long runs on ``tiny_loveda``."""
    return ["model.name=unet-small", "model.encoder_weights=null", "data.scale=1.0", "data.crop=32",
            "train.steps=4", "train.batch_size=2", "train.log_every=2", "train.checkpoint_every=2",
            "train.amp=false", "optim.warmup_steps=1", f"data.cache_dir={tmp_path / 'cache'}"]


@pytest.fixture
def tiny_run(tmp_path: Path, tiny_loveda: Path, tiny_overrides: list[str]) -> Path:
    """A finished seconds-long run on ``tiny_loveda`` (3 uint8 bands, 7 classes)."""
    from pointseg.cli import main

    run = tmp_path / "run"
    assert main(["train", "--data-root", str(tiny_loveda), "--out", str(run),
                 *[a for o in tiny_overrides for a in ("--set", o)]]) == 0
    return run
