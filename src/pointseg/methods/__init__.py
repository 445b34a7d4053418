"""Training methods: one module each, one entry each in ``METHODS``; the trainer calls ``method(model, ...)``."""

from __future__ import annotations

from pointseg.methods.augment import StrongAugment
from pointseg.methods.fixmatch import FixMatch
from pointseg.methods.pseudoseg import PseudoSeg
from pointseg.methods.supervised import Method, Supervised

METHODS: dict[str, type[Method]] = {"supervised": Supervised, "fixmatch": FixMatch, "pseudoseg": PseudoSeg}

__all__ = ["METHODS", "FixMatch", "Method", "PseudoSeg", "StrongAugment", "Supervised"]
