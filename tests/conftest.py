"""Shared fixtures: tiny generated datasets (never committed binaries) and the real data beside the project."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# ../shared beside the checkout: the real data (LoveDA tiles, Sentinel-2 and Landsat scenes, ...) and ImageNet weights
# files that tests read; POINTSEG_SHARED points elsewhere. Without it, the tests that read it fail with this message
# and the others run.
SHARED = Path(os.environ.get("POINTSEG_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
MISSING = ("{path} is missing: this test reads ../shared, the real data and weights kept beside the checkout "
           "(the project's shared folder; set POINTSEG_SHARED to use another place)")


def pytest_report_header() -> str:
    if SHARED.is_dir():
        return f"shared data: {SHARED}"
    return (f"shared data: {SHARED} is missing: the tests that read real data or weights from it will fail; the "
            "others run (see README, Development)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``shared`` (modules that read ../shared throughout) fail at once, with the reason, without it."""
    if item.get_closest_marker("shared") and not SHARED.is_dir():
        pytest.fail(MISSING.format(path=SHARED), pytrace=False)


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own resized-sample cache and two CPU threads at most."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    torch.set_num_threads(min(2, torch.get_num_threads()))


def shared_path(*parts: str) -> Path:
    """A path in ../shared; fails (never skips) when the shared material is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.fail(MISSING.format(path=path), pytrace=False)
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


def closed_port() -> int:
    """A port of this machine nothing listens on (connections to it are refused at once)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def offline(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """No network, as on a machine without one: the model hub and any HTTPS proxy refuse connections, the hub's
    cache is empty. Returns the environment (subprocesses inherit it)."""
    hub = f"http://127.0.0.1:{closed_port()}"
    env = {"HF_ENDPOINT": hub, "HTTPS_PROXY": hub, "https_proxy": hub,
           "HF_HOME": str(tmp_path_factory.mktemp("hf-home")), "TORCH_HOME": str(tmp_path_factory.mktemp("torch"))}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def without_weights_package(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The package that ships the ImageNet weights (``models.pretrained.PACKAGED``) as if it were not installed:
    an empty package of its name comes first on the path, in this process and in subprocesses."""
    import importlib

    from pointseg.models.pretrained import PACKAGED

    shadow = tmp_path_factory.mktemp("shadow")
    for entry in PACKAGED.values():
        (shadow / entry.package).mkdir()
        (shadow / entry.package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(shadow))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(shadow), os.environ.get("PYTHONPATH")) if p))
    importlib.invalidate_caches()
    return shadow
