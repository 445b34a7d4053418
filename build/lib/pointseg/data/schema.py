"""The sample schema: every key a sample dict may hold, with its dtype and shape, declared once.

Sources return *source samples* (``Source.read``): NumPy arrays at full resolution, or the part of a window
inside the sample; ``B`` bands (3 for image files; rasters any number, in their own dtype). Datasets turn them
into tensors: training crops (``TRAIN``), unlabeled crops (``UNLABELED``) and whole images for evaluation and
prediction (``EVAL``). Shapes are symbolic: ``H, W`` full resolution, ``h, w`` the inference resolution, ``S`` the
crop side, ``C`` the number of classes; a symbol has one value within a sample. ``check`` verifies a sample
against its schema (the tests run every dataset through it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Field:
    """One key of a sample: dtype name, symbolic shape, meaning, and whether every sample has it."""

    dtype: str
    shape: tuple[int | str, ...]
    doc: str
    optional: bool = False


SOURCE = {
    "image": Field("uint8", ("H", "W", "B"), "pixels of B bands (3, RGB, for image files); rasters keep their own "
                                             "dtype (check them with image_dtype)"),
    "valid": Field("bool", ("H", "W"), "False where the raster has no data (nodata, alpha)", optional=True),
    "mask": Field("uint8", ("H", "W"), "class index per pixel; ignore_index where unlabeled", optional=True),
}
TRAIN = {
    "image": Field("float32", ("B", "S", "S"), "the crop, resampled with the image filter, scaled to [0, 1]"),
    "soft_mask": Field("float32", ("C", "S", "S"), "class proportions per pixel (sum 1 where weight > 0)"),
    "weight": Field("float32", ("S", "S"), "labeled fraction of the footprint (masks) or number of points; "
                                           "0 = unlabeled"),
    "valid": Field("float32", ("S", "S"), "1 where the crop shows valid pixels of the sample, 0 on padding and "
                                          "nodata (gates pairwise losses)"),
}
UNLABELED = {
    "image": TRAIN["image"],
    "valid": TRAIN["valid"],
    "mask": Field("int64", ("S", "S"), "nearest-neighbour labels, for monitoring pseudo labels only",
                  optional=True),
    "tags": Field("float32", ("C",), "image-level multi-hot class labels (PseudoSeg's Grad-CAMs)", optional=True),
}
EVAL = {
    "id": Field("str", (), "sample id"),
    "image": Field("float32", ("B", "h", "w"), "the whole image at the inference scale, scaled to [0, 1]"),
    "valid": Field("bool", ("H", "W"), "False where the raster has no data", optional=True),
    "mask": Field("int64", ("H", "W"), "class index per pixel at full resolution (ignore_index where invalid)",
                  optional=True),
}


def _dtype(value: Any) -> str:
    return "str" if isinstance(value, str) else str(value.dtype).removeprefix("torch.")


def check(sample: dict[str, Any], schema: dict[str, Field], dims: dict[str, int] | None = None,
          image_dtype: str | None = None) -> None:
    """Raise ``ValueError`` if ``sample`` has a key outside ``schema``, lacks a required key, or a value of another
    dtype or shape. Symbols take one value per sample; ``dims`` fixes some of them (e.g. ``{"C": 7}``);
    ``image_dtype`` replaces the schema's dtype of ``image`` (a raster's own dtype in a source sample)."""
    bound = dict(dims or {})
    unknown = set(sample) - set(schema)
    missing = [k for k, f in schema.items() if not f.optional and k not in sample]
    if unknown or missing:
        raise ValueError(f"sample keys {sorted(sample)}: unknown {sorted(unknown)}, missing {missing}")
    for key, value in sample.items():
        spec = schema[key]
        dtype = image_dtype if key == "image" and image_dtype else spec.dtype
        if _dtype(value) != dtype:
            raise ValueError(f"{key}: dtype {_dtype(value)}, expected {dtype}")
        shape = () if isinstance(value, str) else tuple(value.shape)
        if len(shape) != len(spec.shape):
            raise ValueError(f"{key}: shape {shape}, expected {spec.shape}")
        for size, want in zip(shape, spec.shape, strict=True):
            if isinstance(want, str):
                want = bound.setdefault(want, size)
            if size != want:
                raise ValueError(f"{key}: shape {shape}, expected {spec.shape} with {bound}")
