"""Segmentation models: one dict of names -> builders of ``SegmentationModel`` (encoder, decoder, named heads)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

from torch import nn

from pointseg.models.hypercolumn import (
    SCALES,
    ForestHead,
    HypercolumnDecoder,
    HypercolumnHead,
    MLPHypercolumnHead,
    UNetHypercolumnDecoder,
    UNetHypercolumnHead,
)
from pointseg.models.segmentation import DEFAULT_HEAD, IMAGENET_MEAN, IMAGENET_STD, SegmentationModel
from pointseg.models.smp_unet import is_weights_file, load_encoder_weights, smp_unet, unet_head
from pointseg.models.unet_small import UNetSmallDecoder, UNetSmallEncoder
from pointseg.models.vit import (
    HUB_NAMES,
    STEMS,
    VIT_SIZES,
    ViTDecoder,
    ViTEncoder,
    load_stem_weights,
    load_vit_weights,
    moe_ffn,
)
from pointseg.options import Options, option

log = logging.getLogger(__name__)

Heads = Mapping[str, int]  # head name -> number of classes


def as_heads(num_classes: int | Heads) -> dict[str, int]:
    """``num_classes`` as heads: an int is the one head ``DEFAULT_HEAD``."""
    return {DEFAULT_HEAD: num_classes} if isinstance(num_classes, int) else dict(num_classes)


def _unet_small(heads: Heads, encoder_weights: str | None = None, in_channels: int = 3) -> SegmentationModel:
    """The small U-Net, trained from scratch. A hub name in ``encoder_weights`` (the default ``imagenet``) is
    ignored, since no hub has weights for it; a weights file is an error, since it cannot be loaded into it."""
    if encoder_weights not in (None, "none", "") and is_weights_file(encoder_weights):
        raise ValueError(f"{encoder_weights}: unet-small has no pretrained encoder to load these weights into; "
                         "use --set model.encoder_weights=null, or a model with one (e.g. unet-mobilenetv2)")
    if encoder_weights not in (None, "none", ""):
        log.info("unet-small trains from scratch: model.encoder_weights=%s ignored", encoder_weights)
    encoder = UNetSmallEncoder(in_channels)
    decoder = UNetSmallDecoder(encoder.out_channels)
    return SegmentationModel(encoder, decoder, heads, partial(nn.Conv2d, decoder.out_channels, kernel_size=1),
                             encoder.size_divisor, mean=(0.5,) * in_channels, std=(0.25,) * in_channels)


def cycle(values: tuple[float, ...], n: int) -> tuple[float, ...]:
    """``values`` repeated to length ``n`` (an RGB statistic for each of ``n`` bands, as the first convolution's
    RGB filters are repeated: see ``smp_unet.adapt_input_channels``)."""
    return tuple(values[i % len(values)] for i in range(n))


def _unet(heads: Heads, encoder: str = "mobilenet_v2", encoder_weights: str | None = None,
          mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
          in_channels: int = 3) -> SegmentationModel:
    """smp's U-Net; its own head becomes the first head, the others are built (and initialised) alike."""
    (first, num_classes), *rest = heads.items()
    unet = smp_unet(num_classes, encoder, encoder_weights, in_channels)
    unet.decoder.out_channels = unet.segmentation_head[0].in_channels  # the decoder contract
    make_head = partial(unet_head, unet.decoder.out_channels)
    return SegmentationModel(unet.encoder, unet.decoder, {first: unet.segmentation_head, **dict(rest)}, make_head,
                             32, cycle(mean, in_channels), cycle(std, in_channels))


def _hypercolumn(heads: Heads, encoder: str = "mobilenet_v2", encoder_weights: str | None = None,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD, in_channels: int = 3,
                 stages: tuple[int, ...] = (1, 2, 3, 4, 5), scale: float = 0.25, means: tuple[int, ...] = (3, 7),
                 head: str = "softmax", hidden: int = 64, pixel_sizes: tuple[int, ...] = (3, 7, 15),
                 unet: bool = False) -> SegmentationModel:
    """smp's encoder with a head over its hypercolumn (``models.hypercolumn``: the fast model of the click loop):
    ``head`` linear (``softmax``), ``mlp`` (``hidden`` units) or ``forest`` (over the bands' ``pixel_sizes``
    features); with ``unet``, smp's U-Net decoder and head too, their logits added to a linear head's (the
    warm-started full model)."""
    net = smp_unet(1, encoder, encoder_weights, in_channels)
    hypercolumn = HypercolumnDecoder(net.encoder.out_channels, stages, means)
    decoder: nn.Module = hypercolumn
    net.decoder.out_channels = net.segmentation_head[0].in_channels
    heads_of: dict[str, Callable[[int], nn.Module]] = {
        "softmax": partial(HypercolumnHead, hypercolumn.part_channels, scale=scale),
        "mlp": partial(MLPHypercolumnHead, hypercolumn.part_channels, scale=scale, hidden=hidden),
        "forest": partial(ForestHead, sizes=pixel_sizes)}
    if head not in heads_of:
        raise KeyError(f"unknown hypercolumn head {head!r}; valid: {list(heads_of)}")
    make_head = heads_of["softmax" if unet else head]
    if unet:
        decoder = UNetHypercolumnDecoder(net.decoder, hypercolumn)

        def make_head(num_classes: int) -> nn.Module:
            return UNetHypercolumnHead(unet_head(net.decoder.out_channels, num_classes),
                                       HypercolumnHead(hypercolumn.part_channels, num_classes, scale))
    return SegmentationModel(net.encoder, decoder, dict(heads), make_head, 32, cycle(mean, in_channels),
                             cycle(std, in_channels))


def _vit(heads: Heads, size: str = "tiny", encoder_weights: str | None = None, in_channels: int = 3,
         stem: str | None = None, moe_part: float | None = None, moe_gate: str = "hard", moe_top_k: int = 1,
         moe_experts: int | None = None, moe_balance_weight: float = 0.01) -> SegmentationModel:
    """A ViT (``VIT_SIZES[size]``, patch 16) with the light decoder; ``moe_part`` makes every FFN a mixture of
    experts (``models.layers.moe``). ``encoder_weights``: a timm ViT checkpoint file, or ``imagenet`` (timm's
    ImageNet weights of that size, online). With a convolutional ``stem`` (``STEMS``) the weights are the stem's
    (a file, or ``imagenet``) and the transformer trains from scratch; inputs are normalised as for ImageNet."""
    dim, depth, num_heads = VIT_SIZES[size]
    ffn = moe_ffn(list(heads), moe_part, moe_gate, moe_top_k, moe_balance_weight, moe_experts)
    if stem:
        conv = STEMS[stem](in_channels)
        load_stem_weights(conv, encoder_weights)
        encoder = ViTEncoder(in_channels, dim, depth, num_heads, ffn=ffn, stem=conv)
        mean, std = cycle(IMAGENET_MEAN, in_channels), cycle(IMAGENET_STD, in_channels)
    else:
        encoder = ViTEncoder(in_channels, dim, depth, num_heads, ffn=ffn)
        load_vit_weights(encoder, HUB_NAMES[size] if encoder_weights == "imagenet" else encoder_weights)
        mean, std = (0.5,) * in_channels, (0.5,) * in_channels
    decoder = ViTDecoder(encoder.out_channels, scale=encoder.patch_size)
    return SegmentationModel(encoder, decoder, heads, partial(nn.Conv2d, decoder.out_channels, kernel_size=1),
                             encoder.patch_size, mean=mean, std=std)


MODELS: dict[str, Callable[..., SegmentationModel]] = {
    "unet-small": _unet_small,
    "unet-mobilenetv2": partial(_unet, encoder="mobilenet_v2"),
    "unet-efficientnet-lite0": partial(_unet, encoder="tu-tf_efficientnet_lite0", mean=(0.5,) * 3, std=(0.5,) * 3),
    "unet-efficientnet-lite2": partial(_unet, encoder="tu-tf_efficientnet_lite2", mean=(0.5,) * 3, std=(0.5,) * 3),
    "unet": _unet,
    "hypercolumn-mobilenetv2": partial(_hypercolumn, encoder="mobilenet_v2"),
    "unet-hypercolumn-mobilenetv2": partial(_hypercolumn, encoder="mobilenet_v2", unet=True),
    "vit-tiny": partial(_vit, size="tiny"),
    "vit-small": partial(_vit, size="small"),
    "vit-tiny-mobilenetv2": partial(_vit, size="tiny", stem="mobilenetv2"),
    "vit-small-mobilenetv2": partial(_vit, size="small", stem="mobilenetv2"),
}
FFN_OPTIONS = ("moe_part", "moe_gate", "moe_top_k", "moe_experts", "moe_balance_weight")  # ViT models only
HYPERCOLUMN_OPTIONS = {"hypercolumn_stages": "stages", "hypercolumn_scale": "scale", "hypercolumn_means": "means",
                       "hypercolumn_head": "head"}


def is_hypercolumn(name: str) -> bool:
    """Whether model ``name`` has a head over the encoder's hypercolumn (the fast model, or the U-Net with one)."""
    return "hypercolumn" in name


def _stages_problem(value: object) -> str | None:
    ok = isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                  for s in value) and len(set(value)) == len(value)
    return None if ok else "must be a list of distinct encoder stages (0: the image's bands), e.g. [0, 1, 2, 3, 4, 5]"


def _means_problem(value: object) -> str | None:
    ok = isinstance(value, list) and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 and s % 2
                                         for s in value)
    return None if ok else "must be a list of odd window sides, e.g. [3, 7] ([] for none)"


def _scale_problem(value: object) -> str | None:
    return None if value in SCALES else f"must be one of {list(SCALES)}"


def _part_problem(value: object) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    return None if ok else "must be null, a whole number of outputs or a ratio of the width (> 0)"


@dataclass(frozen=True)
class ModelOptions(Options):
    """The ``model`` section: the network and its Mixture-of-Experts options."""

    section: ClassVar[str] = "model"
    name: str = option("unet-mobilenetv2", "see pointseg.models.MODELS")
    encoder: str | None = option(None, "model \"unet\" only: any smp encoder or tu-<timm name>")
    encoder_weights: str | None = option("imagenet", "null, a hub name (needs network) or a local checkpoint file; "
                                                     "unet-small has none")
    moe_part: float | None = option(None, "vit-*: Mixture-of-Experts FFNs (S5): outputs of each expert, a whole "
                                          "number or a ratio of the width (e.g. 0.25); null: plain FFNs",
                                    check=_part_problem)
    moe_gate: str = option("hard", "hard: one expert per dataset, routed by dataset | learned: a top-k gate per "
                                   "token", choices=("hard", "learned"))
    moe_top_k: int = option(1, "learned gate: experts per token", low=1)
    moe_experts: int | None = option(None, "learned gate: number of experts (null: one per dataset)", low=1)
    moe_balance_weight: float = option(0.01, "learned gate: weight of the load-balancing loss", low=0)
    hypercolumn_stages: list = option([1, 2, 3, 4, 5], "hypercolumn models: the encoder stages the head sees "
                                                       "(0: the image's bands and their local means; chosen on "
                                                       "folds of Train, BENCHMARKS 9)", check=_stages_problem)
    hypercolumn_scale: float = option(0.25, "hypercolumn models: the grid the head works on, relative to the "
                                            "model's input", check=_scale_problem)
    hypercolumn_means: list = option([3, 7], "hypercolumn models: local means of the bands (window sides) that join "
                                             "stage 0", check=_means_problem)
    hypercolumn_head: str = option("softmax", "hypercolumn models: the head's kind, as the fast model's fit chose it "
                                              "(fast.head): softmax | mlp | forest",
                                   choices=("softmax", "mlp", "forest"))
    decoder_per_dataset: bool = option(False, "several datasets: each its own decoder (S5) instead of one shared "
                                              "decoder")


def build_model(name: str, num_classes: int | Heads, encoder: str | None = None,
                encoder_weights: str | None = None, in_channels: int = 3,
                ffn: Mapping[str, object] | None = None, decoder_per_dataset: bool = False,
                hypercolumn: Mapping[str, object] | None = None) -> SegmentationModel:
    """Build ``MODELS[name]`` for images of ``in_channels`` bands with one head of ``num_classes`` classes, or one
    head per entry of ``num_classes`` (name -> classes); ``encoder`` picks any smp/timm encoder for the generic
    ``unet``; ``ffn``: the ``FFN_OPTIONS`` of a ViT (mixture of experts); ``decoder_per_dataset``: a decoder
    for each head (``SegmentationModel.split_decoder``); ``hypercolumn``: the ``HYPERCOLUMN_OPTIONS`` of a
    hypercolumn model (ignored by others)."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; valid: {sorted(MODELS)}")
    kwargs: dict = {"encoder_weights": encoder_weights, "in_channels": in_channels}
    if encoder is not None:
        if name != "unet":
            raise ValueError(f"model.encoder is for model 'unet' only; {name!r} has a fixed encoder")
        kwargs["encoder"] = encoder
    if ffn and ffn.get("moe_part") is not None:
        if not name.startswith("vit-"):
            raise ValueError(f"model.moe_part makes the FFNs of a ViT experts; {name!r} has none (use vit-tiny)")
        kwargs.update(ffn)
    if is_hypercolumn(name) and hypercolumn:
        kwargs.update({HYPERCOLUMN_OPTIONS.get(k, k): tuple(v) if isinstance(v, list) else v
                       for k, v in hypercolumn.items()})
    model = MODELS[name](as_heads(num_classes), **kwargs)
    if decoder_per_dataset:
        model.split_decoder()
    return model


__all__ = ["DEFAULT_HEAD", "HYPERCOLUMN_OPTIONS", "MODELS", "SegmentationModel", "as_heads", "build_model",
           "is_hypercolumn", "load_encoder_weights"]
