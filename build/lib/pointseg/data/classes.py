"""Class tables: names, display colours and how raw mask values (or colours) map to class indices.

Class tables are data. A table maps every raw mask encoding to a class index in ``0..C-1`` or to the
ignore index; anything not in the table is an error, reported with the file it came from.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

IGNORE_INDEX = 255


@dataclass(frozen=True)
class ClassTable:
    """Names and colours of ``C`` classes plus the raw mask encoding of each.

    Args:
        names: class names, index ``i`` is class ``i``.
        colors: an ``(r, g, b)`` display colour per class.
        values: raw single-channel mask value of each class (``None`` for colour-coded masks).
        ignore_values: raw single-channel values that mean "no label".
        ignore_colors: raw colours that mean "no label" (colour-coded masks).
        color_coded: masks are RGB and ``colors`` are also the encoding.
        ignore_index: the value used for unlabeled pixels after decoding.
    """

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    values: tuple[int, ...] | None = None
    ignore_values: tuple[int, ...] = ()
    ignore_colors: tuple[tuple[int, int, int], ...] = ()
    color_coded: bool = False
    ignore_index: int = IGNORE_INDEX
    _lut: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.names) != len(self.colors):
            raise ValueError(f"{len(self.names)} class names but {len(self.colors)} colours")
        if len(self.names) >= self.ignore_index:
            raise ValueError(f"{len(self.names)} classes do not fit below ignore index {self.ignore_index}")
        lut = np.full(256 if not self.color_coded else 1 << 24, -1, dtype=np.int32)
        if self.color_coded:
            for i, c in enumerate(self.colors):
                lut[_pack(c)] = i
            for c in self.ignore_colors:
                lut[_pack(c)] = self.ignore_index
        else:
            values = self.values if self.values is not None else tuple(range(len(self.names)))
            for i, v in enumerate(values):
                lut[v] = i
            for v in self.ignore_values:
                lut[v] = self.ignore_index
        object.__setattr__(self, "_lut", lut)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def decode(self, raw: np.ndarray, source: str = "mask") -> np.ndarray:
        """Turn a raw mask, ``(H, W)`` values or ``(H, W, 3)`` colours, into ``(H, W)`` uint8 class indices.

        Raises:
            ValueError: if the mask holds values or colours that are not in the table.
        """
        if self.color_coded:
            if raw.ndim != 3 or raw.shape[2] < 3:
                raise ValueError(f"{source}: expected an RGB colour mask, got shape {raw.shape}")
            rgb = raw[..., :3].astype(np.int64)
            packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        else:
            if raw.ndim != 2:
                raise ValueError(f"{source}: expected a single-channel mask, got shape {raw.shape}")
            packed = raw.astype(np.int64)
        decoded = self._lut[packed]
        bad = decoded < 0
        if bad.any():
            unknown = np.unique(packed[bad])[:10]
            shown = [f"#{int(u):06X}" for u in unknown] if self.color_coded else [int(u) for u in unknown]
            raise ValueError(
                f"{source}: {int(bad.sum())} pixels have values outside the class table {list(self.names)}: "
                f"{shown}"
            )
        return decoded.astype(np.uint8)

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        """``(H, W)`` class indices -> ``(H, W, 3)`` uint8 display colours (ignored pixels black)."""
        palette = np.zeros((256, 3), dtype=np.uint8)
        palette[: self.num_classes] = np.asarray(self.colors, dtype=np.uint8)
        return palette[mask]

    def to_dict(self) -> dict:
        return {
            "names": list(self.names),
            "colors": [list(c) for c in self.colors],
            "values": None if self.values is None else list(self.values),
            "ignore_values": list(self.ignore_values),
            "ignore_colors": [list(c) for c in self.ignore_colors],
            "color_coded": self.color_coded,
            "ignore_index": self.ignore_index,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ClassTable:
        return cls(
            names=tuple(d["names"]),
            colors=tuple(tuple(c) for c in d["colors"]),
            values=None if d.get("values") is None else tuple(d["values"]),
            ignore_values=tuple(d.get("ignore_values", ())),
            ignore_colors=tuple(tuple(c) for c in d.get("ignore_colors", ())),
            color_coded=d.get("color_coded", False),
            ignore_index=d.get("ignore_index", IGNORE_INDEX),
        )

    def in_order(self, names: Sequence[str], source: str = "class table") -> ClassTable:
        """The same classes (values, colours) indexed in the order of ``names``, which must be the same set."""
        if sorted(names) != sorted(self.names):
            raise ValueError(f"{source}: classes {list(self.names)} are not {list(names)}")
        order = [self.names.index(n) for n in names]
        return replace(self, names=tuple(names), colors=tuple(self.colors[i] for i in order),
                       values=None if self.values is None else tuple(self.values[i] for i in order))

    def to_csv(self, path: str | Path) -> Path:
        """Write the table as ``value,name,r,g,b`` (values: the raw mask values, or 0..C-1), as ``from_csv`` reads."""
        import io

        from pointseg.io import write_text

        values = self.values if self.values is not None else range(self.num_classes)
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")  # names with commas or quotes are quoted
        writer.writerow(["value", "name", "r", "g", "b"])
        writer.writerows([v, n, *c] for v, n, c in zip(values, self.names, self.colors, strict=True))
        return write_text(path, text.getvalue())

    @classmethod
    def from_csv(cls, path: str | Path, color_coded: bool = True, ignore_index: int = IGNORE_INDEX) -> ClassTable:
        """Read a ``value,name,r,g,b`` table; rows whose value is ``ignore_index`` mark unlabeled pixels.

        Colour-coded tables number their classes 0..C-1 in ``value``; otherwise ``value`` is the class's raw mask
        value (e.g. 1..10 in a mask raster whose 0 is nodata), and classes are indexed in the order of values.
        """
        path = Path(path)
        try:
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        except OSError as e:
            raise ValueError(f"{path}: cannot read class table ({e})") from e
        missing = {"value", "name", "r", "g", "b"} - set(rows[0] if rows else {})
        if missing:
            raise ValueError(f"{path}: class table needs columns value,name,r,g,b; missing {sorted(missing)}")
        classes = sorted((r for r in rows if int(r["value"]) != ignore_index), key=lambda r: int(r["value"]))
        ignored = [r for r in rows if int(r["value"]) == ignore_index]
        values = [int(r["value"]) for r in classes]
        if color_coded and values != list(range(len(classes))):
            raise ValueError(f"{path}: class values must be 0..C-1 (and {ignore_index} for ignore)")
        if len(set(values)) != len(values) or not all(0 <= v < 256 for v in values):
            raise ValueError(f"{path}: class values must be distinct mask values in 0..255, got {values}")
        color = lambda r: (int(r["r"]), int(r["g"]), int(r["b"]))  # noqa: E731
        return cls(
            names=tuple(r["name"] for r in classes),
            colors=tuple(color(r) for r in classes),
            values=None if color_coded else tuple(int(r["value"]) for r in classes),
            ignore_colors=tuple(color(r) for r in ignored) if color_coded else (),
            ignore_values=() if color_coded else (ignore_index,),
            color_coded=color_coded,
            ignore_index=ignore_index,
        )


def default_colors(n: int, palette: Sequence[tuple[int, int, int]] | None = None) -> list[tuple[int, int, int]]:
    """``n`` distinct display colours for classes without their own (matplotlib's tab20, then repeated)."""
    if palette is None:
        from matplotlib import colormaps

        tab20 = colormaps["tab20"]
        palette = [(int(255 * r), int(255 * g), int(255 * b)) for r, g, b, _ in (tab20(i) for i in range(20))]
    return [tuple(palette[i % len(palette)]) for i in range(n)]  # type: ignore[misc]


def _pack(c: tuple[int, int, int]) -> int:
    return (int(c[0]) << 16) | (int(c[1]) << 8) | int(c[2])


# LoveDA masks: 0 = no-data, 1..7 = classes 0..6. Colours follow the LoveDA render palette.
LOVEDA_CLASSES = ClassTable(
    names=("background", "building", "road", "water", "barren", "forest", "agriculture"),
    colors=(
        (255, 255, 255),
        (255, 0, 0),
        (255, 255, 0),
        (0, 0, 255),
        (159, 129, 183),
        (0, 255, 0),
        (255, 195, 128),
    ),
    values=(1, 2, 3, 4, 5, 6, 7),
    ignore_values=(0,),
)
