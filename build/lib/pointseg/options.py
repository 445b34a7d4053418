"""Typed options: each component declares the options it takes as a frozen dataclass of ``option`` fields, with the
default, the allowed range or choices and a line of help in one place. ``pointseg.config`` assembles the config
sections from these classes; components are constructed from them by keyword.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

T = TypeVar("T", bound="Options")


def option(default: Any, help: str, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, choices: tuple | None = None,
           check: Callable[[Any], str | None] | None = None) -> Any:
    """A field of an ``Options`` class: its ``default``, the range ``[low, high]`` of a number (``low_open`` /
    ``high_open``: the bound itself is excluded; ``None`` values are always allowed where the default is
    ``None``), or its ``choices``, or a ``check`` returning what is wrong with a value (``None``: nothing), and
    ``help``."""
    meta = {"help": help, "low": low, "high": high, "low_open": low_open, "high_open": high_open,
            "choices": choices, "check": check}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Options:
    """Base of the options classes. ``section``: where the options live in the config (e.g. ``method.fixmatch``)."""

    section: ClassVar[str] = ""

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The default of every option, as a config section."""
        return {f.name: copy.deepcopy(f.default) if f.default is not dataclasses.MISSING
                else f.default_factory()  # type: ignore[operator]
                for f in dataclasses.fields(cls)}

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}

    @classmethod
    def of(cls: type[T], section: Mapping[str, Any]) -> T:
        """The options of a config ``section`` (its other keys, e.g. sub-sections, are not options of this class)."""
        return cls(**{f.name: section[f.name] for f in dataclasses.fields(cls) if f.name in section})

    @classmethod
    def from_config(cls: type[T], cfg: Mapping[str, Any]) -> T:
        """The options of this class's ``section`` of a whole config."""
        node = cfg
        for part in cls.section.split("."):
            node = node[part]
        return cls.of(node)

    @classmethod
    def check(cls, section: Mapping[str, Any], prefix: str | None = None) -> None:
        """``ValueError`` naming the first option of ``section`` whose value is out of its range or choices."""
        prefix = cls.section if prefix is None else prefix
        for f in dataclasses.fields(cls):
            if f.name in section:
                problem = _problem(f, section[f.name])
                if problem:
                    key = f"{prefix}.{f.name}" if prefix else f.name
                    raise ValueError(f"config key {key!r} {problem}, got {section[f.name]!r}")


def _problem(f: dataclasses.Field, value: Any) -> str | None:
    meta = f.metadata
    if value is None and f.default is None:
        return None
    if meta.get("choices") is not None and value not in meta["choices"]:
        return "must be one of " + ", ".join(str(c).lower() if isinstance(c, bool) else str(c)
                                             for c in meta["choices"])
    if meta.get("check") is not None:
        return meta["check"](value)
    low, high = meta.get("low"), meta.get("high")
    if low is None and high is None or not isinstance(value, int | float) or isinstance(value, bool):
        return None
    too_low = low is not None and (value <= low if meta["low_open"] else value < low)
    too_high = high is not None and (value >= high if meta["high_open"] else value > high)
    if too_low or too_high:
        return "must be " + bounds(low, high, not meta["low_open"], not meta["high_open"])
    return None


def bounds(low: float | None, high: float | None, low_in: bool, high_in: bool) -> str:
    """``>= 0 and < 1`` and the like."""
    parts = []
    if low is not None:
        parts.append(f">{'=' if low_in else ''} {low:g}")
    if high is not None:
        parts.append(f"<{'=' if high_in else ''} {high:g}")
    return " and ".join(parts)
