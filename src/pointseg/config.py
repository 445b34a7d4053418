"""Configuration: the packaged default YAML, an optional override file, then ``--set a.b=c`` overrides.

Only keys that exist in the defaults may be set; a typo is an error that names the closest valid key.
"""

from __future__ import annotations

import copy
import difflib
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


def default_config() -> dict[str, Any]:
    text = resources.files("pointseg").joinpath("configs/default.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _flat_keys(cfg: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in cfg.items():
        keys.append(prefix + k)
        if isinstance(v, dict):
            keys += _flat_keys(v, prefix + k + ".")
    return keys


def _unknown_key(key: str, base: dict) -> KeyError:
    close = difflib.get_close_matches(key, _flat_keys(base), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return KeyError(f"unknown config key {key!r}{hint}")


def merge(base: dict, override: dict, prefix: str = "", root: dict | None = None) -> dict:
    """Recursively merge ``override`` into a copy of ``base``; keys absent from ``base`` are an error."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if k not in out:
            raise _unknown_key(prefix + k, root or base)
        if isinstance(out[k], dict):
            if not isinstance(v, dict):
                raise ValueError(f"config key {prefix + k!r} is a section; set its fields, e.g. {prefix + k}.x=...")
            out[k] = merge(out[k], v, prefix + k + ".", root or base)
        else:
            out[k] = _coerce(prefix + k, out[k], v)
    return out


def _coerce(key: str, default: Any, value: Any) -> Any:
    """Give ``value`` the type of ``default`` for numbers and booleans (YAML reads ``3e-4`` as a string)."""
    if value is None or default is None or isinstance(default, str | list):
        return value
    kind = type(default)
    if kind is float and isinstance(value, int | str) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise ValueError(f"config key {key!r} expects {kind.__name__}, got {value!r}")


def parse_set(item: str) -> dict:
    """``"a.b=c"`` -> ``{"a": {"b": c}}`` with ``c`` parsed as YAML (numbers, booleans, null, lists)."""
    if "=" not in item:
        raise ValueError(f"--set expects key=value, got {item!r}")
    key, value = item.split("=", 1)
    node: Any = yaml.safe_load(value) if value.strip() else None
    for part in reversed(key.strip().split(".")):
        node = {part: node}
    return node


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Defaults <- YAML file at ``path`` <- each ``key=value`` of ``overrides``, in that order."""
    cfg = default_config()
    if path is not None:
        try:
            user = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"{path}: cannot read config ({e})") from e
        if not isinstance(user, dict):
            raise ValueError(f"{path}: a config file must be a mapping of keys to values")
        cfg = merge(cfg, user)
    for item in overrides:
        cfg = merge(cfg, parse_set(item))
    return cfg


def dump_config(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
