"""The segmentation model contract: an encoder, a decoder and one or more named heads.

- **encoder** ``forward(x) -> list[Tensor]`` (finest first) with ``out_channels`` (one per feature map); an encoder
  whose layers depend on the dataset (Mixture-of-Experts routing) also takes ``dataset=`` and sets ``routed``;
- **decoder** ``forward(features) -> (B, D, H, W)`` with ``out_channels`` (D);
- **heads** one module per dataset name, ``(B, D, H, W) -> (B, C, H, W)`` logits for that dataset's C classes.

The decoder is shared by all datasets, or (``decoder_per_dataset``, S5's design) each dataset has its own copy,
so that its normalisation statistics are its dataset's alone.

A model trained on one dataset has one head, ``DEFAULT_HEAD``. Modules that add an auxiliary loss in their forward
(a learned gate's load balancing) accumulate it in ``aux_loss``; ``pop_auxiliary_loss()`` sums them for the trainer.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import cast

import torch
from torch import nn

from pointseg.models.layers.moe import MoEFFN

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_HEAD = "seg"


class SegmentationModel(nn.Module):
    """Normalises ``(N, B, H, W)`` images in [0, 1] (B bands) and returns ``(N, C, H, W)`` logits of one head.

    Args:
        encoder, decoder: see the module docstring.
        heads: head name -> number of classes (the head is ``make_head(num_classes)``) or a built head.
        make_head: builds a head for the decoder's output (also for heads added later, ``add_head``).
        size_divisor: height and width the network needs to divide (inference pads to it).
        mean, std: per-band normalisation of the [0, 1] input.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, encoder: nn.Module, decoder: nn.Module, heads: Mapping[str, int | nn.Module],
                 make_head: Callable[[int], nn.Module], size_divisor: int,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        if not heads:
            raise ValueError("a model needs at least one head")
        self.encoder, self.decoder = encoder, decoder
        self.make_head = make_head
        self.heads = nn.ModuleDict({name: h if isinstance(h, nn.Module) else make_head(h) for name, h in heads.items()})
        self.size_divisor = size_divisor
        self.in_channels = len(mean)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self._register_load_state_dict_pre_hook(_upgrade_state_dict)

    @property
    def head_names(self) -> list[str]:
        return list(self.heads)

    @property
    def feature_channels(self) -> tuple[int, ...]:
        """Channels of each feature map ``encode`` returns."""
        return tuple(cast(Sequence[int], self.encoder.out_channels))

    def num_classes(self, head: str | None = None) -> int:
        """Classes of ``head``: the out-channels of its last convolution."""
        convs = [m for m in self._head(head).modules() if isinstance(m, nn.Conv2d)]
        return convs[-1].out_channels

    @property
    def decoder_per_dataset(self) -> bool:
        return isinstance(self.decoder, nn.ModuleDict)

    @property
    def decoders(self) -> nn.ModuleDict:
        """Each dataset's decoder, by name (``decoder_per_dataset`` models)."""
        return cast(nn.ModuleDict, self.decoder)

    def split_decoder(self) -> None:
        """Give every dataset its own decoder (S5's design), each a copy of the shared one, so that its weights and
        normalisation statistics serve its dataset alone. Copies draw no random numbers."""
        if not self.decoder_per_dataset:
            shared = self.decoder
            self.decoder = nn.ModuleDict({name: shared if i == 0 else copy.deepcopy(shared)
                                          for i, name in enumerate(self.heads)})

    def add_head(self, name: str, num_classes: int) -> list[nn.Module]:
        """A new dataset ``name`` of ``num_classes`` classes for a trained model: its head, in every hard-routed
        mixture-of-experts layer its expert, and with ``decoder_per_dataset`` its decoder (copies of the first
        dataset's). Returns the new modules."""
        if name in self.heads:
            raise ValueError(f"the model already has a head {name!r}")
        head = self.make_head(num_classes).to(self.mean.device)
        self.heads[name] = head
        added = [head, *(m.add_expert(name) for m in self.modules() if isinstance(m, MoEFFN) and m.gate is None)]
        if self.decoder_per_dataset:
            self.decoders[name] = copy.deepcopy(next(iter(self.decoders.values())))
            added.append(self.decoders[name])
        return added

    def parameter_counts(self) -> dict[str, object]:
        """Parameters in all, and those each dataset adds (its head and experts)."""
        return {"total": sum(p.numel() for p in self.parameters()),
                "per_dataset": {name: self.dataset_parameters(name) for name in self.heads}}

    def dataset_modules(self, name: str) -> list[nn.Module]:
        """The modules that serve dataset ``name`` alone: its head, its own decoder and its experts."""
        own = [self.heads[name], *([self.decoders[name]] if self.decoder_per_dataset else [])]
        return own + [m.experts[name] for m in self.modules() if isinstance(m, MoEFFN) and name in m.experts]

    def dataset_parameters(self, name: str) -> int:
        """Parameters that serve dataset ``name`` alone (``dataset_modules``)."""
        return sum(p.numel() for m in self.dataset_modules(name) for p in m.parameters())

    def keep_heads(self, names: Sequence[str]) -> None:
        """Drop every dataset but ``names``: their heads and hard-routed experts (a trained model used for one of
        its datasets, or fine-tuned on others)."""
        for name in names:
            self._head(name)  # an error for an unknown name
        self.heads = nn.ModuleDict({name: self.heads[name] for name in names})
        if self.decoder_per_dataset:
            self.decoder = nn.ModuleDict({name: self.decoders[name] for name in names})
        for layer in self.modules():
            if isinstance(layer, MoEFFN) and layer.gate is None:
                layer.experts = nn.ModuleDict({n: e for n, e in layer.experts.items() if n in names})

    def datasets_only(self, names: Sequence[str]) -> None:
        """Train only what serves ``names`` (their heads, experts and own decoders); the rest is frozen (no
        gradient) and its normalisation statistics too (see ``engine.loop``)."""
        self.requires_grad_(False)
        for name in names:
            for module in self.dataset_modules(name):
                module.requires_grad_(True)

    def _head(self, head: str | None) -> nn.Module:
        if head is None:
            if len(self.heads) > 1:
                raise ValueError(f"this model has several heads {self.head_names}: name one")
            return next(iter(self.heads.values()))
        if head not in self.heads:
            raise KeyError(f"unknown head {head!r}; valid: {self.head_names}")
        return self.heads[head]

    def _decoder(self, head: str | None) -> nn.Module:
        if not self.decoder_per_dataset:
            return self.decoder
        self._head(head)  # the same errors for a missing or unknown name
        return self.decoders[head or self.head_names[0]]

    def encode(self, image: torch.Tensor, head: str | None = None) -> list[torch.Tensor]:
        """Encoder features of ``(B, bands, H, W)`` images in [0, 1], finest first (``head`` routes a routed
        encoder to that dataset's experts)."""
        x = (image - self.mean) / self.std
        if getattr(self.encoder, "routed", False):
            return self.encoder(x, dataset=head or self.head_names[0])
        return self.encoder(x)

    def decode(self, features: list[torch.Tensor], head: str | None = None) -> torch.Tensor:
        """``(B, C, H, W)`` logits of ``head`` from (possibly perturbed) encoder features (a head that reads the
        bands alone gets stage 0, the normalised input, without the decoder)."""
        chosen = self._head(head)
        if reads_bands_only(chosen):
            return chosen([features[0]])
        return chosen(self._decoder(head)(features))

    def forward(self, image: torch.Tensor, head: str | None = None) -> torch.Tensor:
        if reads_bands_only(self._head(head)):  # a per-pixel head (the forest): no encoder to run
            return self.decode([(image - self.mean) / self.std], head)
        return self.decode(self.encode(image, head), head)

    def pop_auxiliary_loss(self) -> torch.Tensor | None:
        """The sum of the ``aux_loss`` its modules accumulated since the last call, which clears them (None: no
        module has one). The trainer adds it to the step's loss."""
        given: list[torch.Tensor] = []
        for module in self.modules():
            loss = getattr(module, "aux_loss", None)
            if isinstance(loss, torch.Tensor):
                given.append(loss)
                module.aux_loss = None  # type: ignore[assignment]
        return torch.stack(given).sum() if given else None


def reads_bands_only(head: nn.Module) -> bool:
    """Whether ``head`` reads the normalised bands alone (``reads_bands_only``: a per-pixel classifier)."""
    return bool(getattr(head, "reads_bands_only", False))


def expand_decoder_state(state: dict[str, torch.Tensor], model: SegmentationModel) -> dict[str, torch.Tensor]:
    """``state`` of a model with a shared decoder for ``model`` with one per dataset: the shared decoder becomes
    every dataset's (``add_head`` copies the first for datasets added later). Any other ``state`` is returned as it
    is."""
    if not model.decoder_per_dataset or any(k.startswith(f"decoder.{model.head_names[0]}.") for k in state):
        return state
    shared = {k[len("decoder."):]: v for k, v in state.items() if k.startswith("decoder.")}
    rest = {k: v for k, v in state.items() if not k.startswith("decoder.")}
    return rest | {f"decoder.{name}.{k}": v for name in model.head_names for k, v in shared.items()}


# Parameter names of models saved before the encoder/decoder/heads contract (``net.*``), in order.
_RENAMES = (("net.encoder.", "encoder."), ("net.decoder.", "decoder."),
            ("net.segmentation_head.", f"heads.{DEFAULT_HEAD}."), ("net.down.", "encoder.down."),
            ("net.up.", "decoder.up."), ("net.fuse.", "decoder.fuse."), ("net.head.", f"heads.{DEFAULT_HEAD}."))


def _upgrade_state_dict(state: dict, prefix: str, *args: object) -> None:
    """Rename, in place, the parameters of a model file or checkpoint written before the contract."""
    for key in [k for k in state if k.startswith(prefix + "net.")]:
        rest = key[len(prefix):]
        for old, new in _RENAMES:
            if rest.startswith(old):
                state[prefix + new + rest[len(old):]] = state.pop(key)
                break
