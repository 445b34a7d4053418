"""U-Nets on pretrained encoders through segmentation-models-pytorch (any smp encoder, or ``tu-<timm name>``).

Encoder weights come from a local file (``*.pth``/``*.pt``; hubs need no network for that) or by hub name
(e.g. ``imagenet``): from an installed package that ships them, the hub's cache, or downloaded by smp on a machine
that is online (``pointseg.models.pretrained``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.base import SegmentationHead
from segmentation_models_pytorch.base.initialization import initialize_head
from torch import nn

from pointseg.io import read_torch_file
from pointseg.models.pretrained import smp_imagenet

log = logging.getLogger(__name__)


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def adapt_input_channels(weight: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A pretrained RGB first-convolution ``weight`` (O, 3, k, k) for ``shape`` (O, B, k, k): one band sums the
    three filters; more bands repeat them (R, G, B, R, G, ...) scaled by 3 / B, so an image whose bands all equal
    its RGB mean gives the same activations. Any other tensor is returned as it is."""
    if weight.ndim != 4 or weight.shape[1] != 3 or shape[1] == 3 or (weight.shape[0], *weight.shape[2:]) != (
            shape[0], *shape[2:]):
        return weight
    if shape[1] == 1:
        return weight.sum(1, keepdim=True)
    return weight[:, [i % 3 for i in range(shape[1])]] * (3 / shape[1])


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load an ImageNet checkpoint file into ``encoder``; classifier tensors in the file are dropped.

    Keys are matched by name; if the file uses other names (e.g. an EfficientNet-Lite0 export for timm's
    ``tf_efficientnet_lite0``), tensors are matched in order, and every shape must agree. An encoder for other
    than 3 input bands gets the RGB first convolution adapted (``adapt_input_channels``).

    Raises:
        ValueError: if the file is unreadable or does not cover every encoder tensor.
    """
    if Path(path).suffix == ".safetensors":  # the hub's own format (its cache)
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = read_torch_file(path, "encoder weights")
    load_encoder_state(encoder, state, str(path))


def load_encoder_state(encoder: nn.Module, state: dict, source: str) -> None:
    """``load_encoder_weights`` for a state dict already read (from ``source``, named in errors)."""
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    own = _tensors(encoder.state_dict())
    given = _tensors(state)
    if own and given:  # the input layer comes first in both
        first_own, first_given = next(iter(own)), next(iter(given))
        given[first_given] = adapt_input_channels(given[first_given], own[first_own].shape)
    by_name = {k: given[k] for k in own if k in given and given[k].shape == own[k].shape}
    if len(by_name) == len(own):
        mapped = by_name
    elif not by_name and len(given) >= len(own) and all(
        a.shape == b.shape for a, b in zip(own.values(), given.values(), strict=False)
    ):
        log.info("%s: matching %d encoder tensors by order (names differ)", source, len(own))
        mapped = dict(zip(own, given.values(), strict=False))
    else:
        missing = [k for k in own if k not in by_name]
        raise ValueError(
            f"{source}: weights do not fit this encoder: {len(missing)} of {len(own)} tensors missing or of "
            f"another shape, e.g. {missing[:3]}"
        )
    encoder.load_state_dict(mapped, strict=False)


def is_weights_file(encoder_weights: str) -> bool:
    """Whether ``encoder_weights`` names a file (by suffix or because it exists) rather than a hub name."""
    return Path(encoder_weights).suffix in (".pth", ".pt", ".bin", ".safetensors") or Path(encoder_weights).exists()


def smp_unet(num_classes: int, encoder: str = "mobilenet_v2", encoder_weights: str | None = None,
             in_channels: int = 3) -> smp.Unet:
    """An smp U-Net for ``in_channels`` bands. ``encoder_weights``: ``None`` (random), a file path, or an smp hub
    name like ``imagenet``, looked up offline first (``models.pretrained``: an installed package that ships them,
    the hub's cache) and fetched otherwise (smp adapts the input layer of hub weights itself, by the same rule).
    The model's ``encoder``, ``decoder`` and ``segmentation_head`` become a ``SegmentationModel``'s parts."""
    is_file = encoder_weights is not None and is_weights_file(encoder_weights)
    hub_name = None if (encoder_weights in (None, "none", "") or is_file) else encoder_weights
    weights_file = encoder_weights if is_file else None
    if hub_name is not None:
        found = smp_imagenet(encoder, hub_name)
        if isinstance(found, Path):
            weights_file, hub_name = str(found), None
    try:
        model = smp.Unet(encoder_name=encoder, encoder_weights=hub_name, classes=num_classes,
                         in_channels=in_channels)
    except KeyError as e:
        raise KeyError(f"unknown encoder {encoder!r}: use an smp encoder name or 'tu-<timm model name>'") from e
    except Exception as e:
        if hub_name is None:
            raise
        raise RuntimeError(
            f"could not fetch {hub_name!r} weights for encoder {encoder!r} ({type(e).__name__}: {e}). "
            f"Offline? Pass a local checkpoint file instead: --set model.encoder_weights=/path/to/weights.pth"
        ) from e
    if weights_file is not None:
        if not Path(weights_file).exists():
            raise FileNotFoundError(f"{weights_file}: encoder weights file not found")
        load_encoder_weights(model.encoder, weights_file)
    return model


def unet_head(decoder_channels: int, num_classes: int) -> nn.Module:
    """smp's U-Net head: a 3x3 convolution to class logits, initialised as smp initialises its own."""
    head = SegmentationHead(decoder_channels, num_classes, kernel_size=3)
    initialize_head(head)
    return head
