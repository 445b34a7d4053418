"""Mixture-of-Experts feed-forward network of a transformer block (S5's MoE-MDF, Lv et al.).

``fc1`` is shared by every dataset; the output layer is split into a shared part (``C - part`` outputs) and one
expert per dataset (``part`` outputs each), concatenated back to ``C``. With **hard** routing, every token of a
batch goes to the expert of the batch's dataset (``set_route``), so each dataset adds ``part * (hidden + 1)``
parameters per block. Beyond S5, a **learned** top-k gate routes each token among the experts by itself and adds
a Switch-Transformer load-balancing loss ``n * sum_e f_e P_e`` (``f_e``: the share of tokens whose first choice is
expert ``e``; ``P_e``: the mean gate probability of ``e``), scaled by ``balance_weight``, to ``aux_loss``.

It takes the keyword arguments of timm's ``Mlp``, so it is passed to a ViT as its ``mlp_layer`` (with the experts
bound by ``functools.partial``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

GATES = ("hard", "learned")


def expert_width(part: float, width: int) -> int:
    """Outputs of each expert: ``part`` itself when it is a whole number >= 1, else the ratio ``part`` of
    ``width`` (0 < part < 1), at least 1."""
    if part >= 1:
        if part != int(part) or part > width:
            raise ValueError(f"an absolute expert part must be a whole number of outputs in [1, {width}], got {part}")
        return int(part)
    if not 0 < part < 1:
        raise ValueError(f"expert part must be a ratio in (0, 1) or a whole number >= 1, got {part}")
    return max(1, round(part * width))


class MoEFFN(nn.Module):
    """``x (..., C) -> (..., C)``: ``cat(shared(h), expert(h))`` with ``h = act(fc1(x))``.

    Args:
        in_features, hidden_features, out_features, act_layer, norm_layer, bias, drop: as timm's ``Mlp``.
        experts: one name per expert (with hard routing: the dataset names).
        part: outputs of each expert, absolute or as a ratio of ``out_features`` (``expert_width``).
        gate: ``hard`` (by dataset, ``set_route``) or ``learned`` (top-``top_k`` over tokens).
        balance_weight: weight of the learned gate's load-balancing loss.
    """

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 act_layer: type[nn.Module] = nn.GELU, norm_layer: type[nn.Module] | None = None,
                 bias: bool | tuple[bool, bool] = True, drop: float | tuple[float, float] = 0.0, *,
                 experts: Sequence[str] = ("seg",), part: float = 0.25, gate: str = "hard", top_k: int = 1,
                 balance_weight: float = 0.01, **factory: object) -> None:
        super().__init__()
        if gate not in GATES:
            raise KeyError(f"unknown gate {gate!r}; valid: {list(GATES)}")
        if not experts:
            raise ValueError("a mixture of experts needs at least one expert")
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        bias1, bias2 = bias if isinstance(bias, tuple) else (bias, bias)
        drop1, drop2 = drop if isinstance(drop, tuple) else (drop, drop)
        self.part = expert_width(part, out_features)
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias1)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop1)
        self.norm = norm_layer(hidden_features) if norm_layer is not None else nn.Identity()
        self.shared = nn.Linear(hidden_features, out_features - self.part, bias=bias2) if out_features > self.part \
            else None
        self.experts = nn.ModuleDict({name: nn.Linear(hidden_features, self.part, bias=bias2) for name in experts})
        self.drop2 = nn.Dropout(drop2)
        self.gate_kind, self.top_k, self.balance_weight = gate, min(top_k, len(experts)), balance_weight
        self.gate = nn.Linear(in_features, len(experts), bias=False) if gate == "learned" else None
        self.route: str | None = None  # the dataset of the current batch (hard routing)
        self.aux_loss: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.drop1(self.act(self.fc1(x))))  # (..., hidden)
        expert_out = self._hard(h) if self.gate is None else self._learned(x, h)  # (..., part)
        out = expert_out if self.shared is None else torch.cat([self.shared(h), expert_out], -1)  # (..., C)
        return self.drop2(out)

    def _hard(self, h: torch.Tensor) -> torch.Tensor:
        if self.route is None:
            if len(self.experts) > 1:
                raise RuntimeError(f"hard-routed experts {list(self.experts)}: set the dataset first (set_route)")
            return next(iter(self.experts.values()))(h)
        if self.route not in self.experts:
            raise KeyError(f"no expert for dataset {self.route!r}; experts: {list(self.experts)}")
        return self.experts[self.route](h)

    def _learned(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        assert self.gate is not None
        probs = self.gate(x).float().softmax(-1)  # (..., E)
        weights, chosen = probs.topk(self.top_k, -1)  # (..., k)
        weights = weights / weights.sum(-1, keepdim=True)
        outputs = torch.stack([expert(h) for expert in self.experts.values()], -2)  # (..., E, part)
        picked = outputs.gather(-2, chosen[..., None].expand(*chosen.shape, self.part))  # (..., k, part)
        if self.training and torch.is_grad_enabled():
            n = len(self.experts)
            first_choice = F.one_hot(chosen[..., 0], n).float().reshape(-1, n).mean(0)  # f_e
            balance = self.balance_weight * n * (first_choice * probs.reshape(-1, n).mean(0)).sum()
            self.aux_loss = balance if self.aux_loss is None else self.aux_loss + balance
        return (weights[..., None].to(picked.dtype) * picked).sum(-2)

    @classmethod
    def from_mlp(cls, mlp: nn.Module, experts: Sequence[str], part: float, **kwargs: object) -> MoEFFN:
        """An MoE FFN that starts as ``mlp`` (timm ``Mlp``: ``fc1``, ``fc2``): fc1 copied, the shared part from
        fc2's first rows and every expert from its last ``part`` rows (S5's initialisation), so that it computes
        what ``mlp`` computed for every dataset."""
        fc1, fc2 = cast(nn.Linear, mlp.fc1), cast(nn.Linear, mlp.fc2)
        moe = cls(fc1.in_features, fc1.out_features, fc2.out_features, experts=experts, part=part,
                  bias=(fc1.bias is not None, fc2.bias is not None), **kwargs)  # type: ignore[arg-type]
        moe.act, moe.norm = cast(nn.Module, mlp.act), cast(nn.Module, mlp.norm)
        moe.drop1, moe.drop2 = cast(nn.Dropout, mlp.drop1), cast(nn.Dropout, mlp.drop2)
        with torch.no_grad():
            moe.fc1.load_state_dict(fc1.state_dict())
            split = fc2.out_features - moe.part
            if moe.shared is not None:
                moe.shared.weight.copy_(fc2.weight[:split])
                if fc2.bias is not None:
                    moe.shared.bias.copy_(fc2.bias[:split])
            for expert in moe.experts.values():
                cast(nn.Linear, expert).weight.copy_(fc2.weight[split:])
                if fc2.bias is not None:
                    cast(nn.Linear, expert).bias.copy_(fc2.bias[split:])
        return moe

    def add_expert(self, name: str, like: str | None = None) -> nn.Linear:
        """A new expert ``name``, starting as a copy of expert ``like`` (default: the first)."""
        if name in self.experts:
            raise ValueError(f"an expert {name!r} exists already")
        if self.gate is not None:
            raise ValueError("the experts of a learned gate are fixed when it is built")
        source = cast(nn.Linear, self.experts[like or next(iter(self.experts))])
        expert = nn.Linear(source.in_features, source.out_features, bias=source.bias is not None)
        expert.load_state_dict(source.state_dict())
        self.experts[name] = expert.to(source.weight.device)
        return expert


def set_route(module: nn.Module, dataset: str | None) -> None:
    """Route every hard-gated ``MoEFFN`` in ``module`` to the expert of ``dataset``."""
    for layer in module.modules():
        if isinstance(layer, MoEFFN):
            layer.route = dataset
