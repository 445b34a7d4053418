"""Training methods: one module each (the method and its ``options_class``, the config section ``method.<name>``),
one entry each in ``METHODS``; the trainer calls ``method(model, ...)``."""

from __future__ import annotations

from pointseg.methods.augment import StrongAugment
from pointseg.methods.fixmatch import FixMatch, FixMatchOptions
from pointseg.methods.pseudoseg import PseudoSeg, PseudoSegOptions
from pointseg.methods.supervised import Method, MethodOptions, Supervised

METHODS: dict[str, type[Method]] = {"supervised": Supervised, "fixmatch": FixMatch, "pseudoseg": PseudoSeg}

__all__ = ["METHODS", "FixMatch", "FixMatchOptions", "Method", "MethodOptions", "PseudoSeg", "PseudoSegOptions",
           "StrongAugment", "Supervised"]
