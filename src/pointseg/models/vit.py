"""A Vision Transformer (timm) as a segmentation encoder, with a light decoder; its FFN is passed as a class.

The encoder returns the tokens of ``levels`` evenly spaced blocks as ``(B, C, H / p, W / p)`` maps (patch size
``p``); the decoder fuses them and brings them to full resolution. Position embeddings are interpolated to the
input size, so whole images of any size divisible by ``p`` go through. Instead of cutting the image into
patches, a convolutional ``stem`` (the first stages of an ImageNet CNN, ``ConvStem``) can make the tokens: one per
cell of its stride-16 feature map, projected to the width (timm's ``HybridEmbed``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
import torchvision
from timm.layers import HybridEmbed, Mlp, PatchEmbed
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from pointseg.io import read_torch_file
from pointseg.models.layers.moe import MoEFFN, set_route

log = logging.getLogger(__name__)

VIT_SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6)}  # embed_dim, depth, heads
HUB_NAMES = {"tiny": "vit_tiny_patch16_224.augreg_in21k_ft_in1k", "small": "vit_small_patch16_224.augreg_in21k_ft_in1k"}


class ConvStem(nn.Module):
    """The stages of torchvision's MobileNetV2 down to stride ``STRIDE`` (``features[:LAYERS]``, 96 channels): the
    token maker of a hybrid ViT. Its tensors keep torchvision's names, so the ImageNet file loads into it by name
    (``smp_unet.load_encoder_weights``, which also adapts the first convolution to ``in_channels`` bands)."""

    STRIDE, LAYERS = 16, 14

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.features = torchvision.models.mobilenet_v2().features[:self.LAYERS]
        if in_channels != 3:  # the first convolution for other bands (its RGB weights are adapted when loaded)
            first = cast(nn.Conv2d, self.features[0][0])
            size, stride = cast(tuple[int, int], first.kernel_size), cast(tuple[int, int], first.stride)
            conv = nn.Conv2d(in_channels, first.out_channels, size, stride, cast(tuple[int, int], first.padding),
                             bias=False)
            self.features[0][0] = conv
        self.out_channels = cast(nn.BatchNorm2d, self.features[-1].conv[-1]).num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.features(x))  # (B, out_channels, H / STRIDE, W / STRIDE)


STEMS: dict[str, Callable[[int], ConvStem]] = {"mobilenetv2": ConvStem}


def load_stem_weights(stem: ConvStem, weights: str | None) -> None:
    """ImageNet weights into ``stem``: a torchvision MobileNetV2 checkpoint file (read offline), or ``imagenet``
    (the same file from an installed package, ``models.pretrained``, or torchvision's download: needs network)."""
    from pointseg.models.pretrained import packaged_weights
    from pointseg.models.smp_unet import is_weights_file, load_encoder_state, load_encoder_weights

    if weights == "imagenet":
        weights = str(packaged_weights("mobilenet_v2") or weights)

    if weights in (None, "none", ""):
        return
    if is_weights_file(str(weights)):
        if not Path(str(weights)).exists():
            raise FileNotFoundError(f"{weights}: stem weights file not found")
        load_encoder_weights(stem, str(weights))
        return
    if weights != "imagenet":
        raise ValueError(f"model.encoder_weights={weights!r}: a ViT with a convolutional stem takes a MobileNetV2 "
                         "checkpoint file, imagenet or null")
    try:
        state = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except Exception as e:
        raise RuntimeError(f"could not fetch MobileNetV2 ImageNet weights ({type(e).__name__}: {e}). Offline? Pass "
                           "a local checkpoint: --set model.encoder_weights=/path/to/mobilenet_v2.pth") from e
    load_encoder_state(stem, state, "torchvision MobileNet_V2_Weights.IMAGENET1K_V1")


class ViTEncoder(nn.Module):
    """timm's ``VisionTransformer`` (no classifier) returning the maps of ``levels`` blocks, finest first.

    ``ffn``: the feed-forward class of every block (timm ``Mlp``, or ``MoEFFN`` with its experts bound). A model
    with hard-routed experts is ``routed``: its forward takes the ``dataset`` of the batch. ``stem``: a CNN whose
    last feature map (stride ``stem.STRIDE``) gives the tokens in place of the ``patch_size`` patches.
    """

    def __init__(self, in_channels: int = 3, embed_dim: int = 192, depth: int = 12, num_heads: int = 3,
                 patch_size: int = 16, levels: int = 4, ffn: Callable[..., nn.Module] = Mlp, img_size: int = 256,
                 drop_path: float = 0.0, stem: ConvStem | None = None) -> None:
        super().__init__()
        embed = PatchEmbed if stem is None else partial(HybridEmbed, stem)  # a stem's tokens: 1x1 "patches"
        self.vit = VisionTransformer(img_size=img_size, patch_size=patch_size if stem is None else 1,
                                     in_chans=in_channels, num_classes=0, global_pool="", embed_dim=embed_dim,
                                     depth=depth, num_heads=num_heads, embed_layer=cast(Callable, embed),
                                     mlp_layer=cast(type[nn.Module], ffn), dynamic_img_size=True,
                                     drop_path_rate=drop_path)
        self.indices = [round((i + 1) * depth / levels) - 1 for i in range(levels)]
        self.out_channels = (embed_dim,) * levels
        self.patch_size = patch_size if stem is None else stem.STRIDE
        self.routed = any(isinstance(m, MoEFFN) and m.gate is None for m in self.modules())

    @property
    def stem(self) -> ConvStem | None:
        """The convolutional stem making the tokens, if any (it lives in ``vit.patch_embed``)."""
        backbone = getattr(self.vit.patch_embed, "backbone", None)
        return backbone if isinstance(backbone, ConvStem) else None

    def forward(self, x: torch.Tensor, dataset: str | None = None) -> list[torch.Tensor]:
        if self.routed:
            set_route(self, dataset)
        maps = self.vit.forward_intermediates(x, indices=self.indices, intermediates_only=True, output_fmt="NCHW",
                                              norm=True)
        return cast(list[torch.Tensor], maps)  # each (B, C, H / p, W / p)


class ViTDecoder(nn.Module):
    """Concatenated block maps -> 1x1 conv -> 3x3 conv (BN, ReLU) -> bilinear upsampling by ``scale``."""

    def __init__(self, in_channels: Sequence[int], channels: int = 64, scale: int = 16) -> None:
        super().__init__()
        self.fuse = nn.Sequential(
            nn.Conv2d(sum(in_channels), channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.scale, self.out_channels = scale, channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.fuse(torch.cat(features, 1))  # (B, channels, H / p, W / p)
        return F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)  # (B, channels, H, W)


def moe_ffn(experts: Sequence[str], part: float | None, gate: str, top_k: int, balance_weight: float,
            num_experts: int | None = None) -> Callable[..., nn.Module]:
    """The FFN class of the blocks: timm's ``Mlp`` when ``part`` is None, else an ``MoEFFN`` with one expert per
    dataset (hard gate) or ``num_experts`` experts (learned gate; default one per dataset)."""
    if part is None:
        return Mlp
    names = list(experts) if gate == "hard" or not num_experts else [f"expert{i}" for i in range(num_experts)]
    return partial(MoEFFN, experts=names, part=part, gate=gate, top_k=top_k, balance_weight=balance_weight)


def expand_ffn_state(state: dict[str, torch.Tensor], model: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """``state`` of a plain ViT (``...mlp.fc2.*``) for ``model``'s MoE FFNs: fc2's first rows become the shared
    part and its last rows every expert (S5's initialisation from pretrained weights). Other keys pass as they are."""
    out = dict(state)
    for name, layer in model.named_modules():
        if not isinstance(layer, MoEFFN) or f"{prefix}{name}.fc2.weight" not in state:
            continue
        key = f"{prefix}{name}"
        for kind in ("weight", "bias"):
            if f"{key}.fc2.{kind}" not in out:
                continue
            tensor = out.pop(f"{key}.fc2.{kind}")
            split = tensor.shape[0] - layer.part
            if layer.shared is not None:
                out[f"{key}.shared.{kind}"] = tensor[:split]
            for expert in layer.experts:
                out[f"{key}.experts.{expert}.{kind}"] = tensor[split:]
    return out


def load_vit_weights(encoder: ViTEncoder, weights: str | None) -> None:
    """ImageNet (or any timm ViT) weights into ``encoder.vit``: a local file (a state dict, position embeddings
    resampled to this size), or a size name from ``HUB_NAMES`` fetched through timm (online). MoE FFNs start
    from the plain FFN's fc2 (``expand_ffn_state``). A first convolution for other than 3 bands is adapted."""
    if weights in (None, "none", ""):
        return
    if Path(str(weights)).suffix in (".pth", ".pt", ".bin", ".safetensors") or Path(str(weights)).exists():
        state = read_torch_file(str(weights), "ViT weights file")
        state = state.get("model", state) if isinstance(state, dict) else state
    else:
        import timm

        from pointseg.models.pretrained import hub_cached, hub_reachable, offline_error

        if hub_cached(f"timm/{weights}", "model.safetensors") is None and not hub_reachable():
            raise offline_error("ViT", str(weights))
        try:
            state = timm.create_model(str(weights), pretrained=True, num_classes=0).state_dict()
        except Exception as e:
            raise RuntimeError(f"could not fetch ViT weights {weights!r} ({type(e).__name__}: {e}). Offline? Pass a "
                               "local timm ViT checkpoint: --set model.encoder_weights=/path/to/vit.pth") from e
    from pointseg.models.smp_unet import adapt_input_channels

    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    if "patch_embed.proj.weight" in state:
        own = encoder.vit.patch_embed.proj.weight
        state["patch_embed.proj.weight"] = adapt_input_channels(state["patch_embed.proj.weight"], own.shape)
    state = expand_ffn_state(checkpoint_filter_fn(state, encoder.vit), encoder.vit)
    missing, unexpected = encoder.vit.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights}: weights do not fit this ViT: missing {missing[:3]}, unexpected {unexpected[:3]}")
