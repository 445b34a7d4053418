"""Layers a backbone takes as classes: the feed-forward networks of transformer blocks."""

from pointseg.models.layers.moe import MoEFFN, expert_width, set_route

__all__ = ["MoEFFN", "expert_width", "set_route"]
