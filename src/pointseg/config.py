"""Configuration: the defaults of every component's options, an optional override file, then ``--set a.b=c``
overrides.

Each config section is the options class of the component that uses it (``pointseg.options``): its fields give the
keys, defaults, ranges and help, in one place per option. Only keys that exist may be set; a typo is an error that
names the closest valid key. Each method's own keys live in ``method.<name>``; the flat keys of runs made before
(e.g. ``method.threshold``) are read as their new names (``method.fixmatch.threshold``).
"""

from __future__ import annotations

import copy
import difflib
import logging
from pathlib import Path
from typing import Any

import yaml

from pointseg.data.dataset import DataOptions
from pointseg.data.labels import LabelOptions
from pointseg.engine import OptimOptions, TrainOptions
from pointseg.fast import HEADS, FastOptions
from pointseg.losses import LossOptions
from pointseg.methods import METHODS, MethodOptions
from pointseg.models import ModelOptions
from pointseg.options import Options

log = logging.getLogger(__name__)

SECTIONS: dict[str, type[Options]] = {
    "data": DataOptions, "labels": LabelOptions, "model": ModelOptions, "loss": LossOptions,
    "method": MethodOptions,
    **{f"method.{name}": method.options_class for name, method in METHODS.items() if method.options_class},
    "optim": OptimOptions, "train": TrainOptions, "fast": FastOptions,
    **{f"fast.{name}": head.options_class for name, head in HEADS.items()}}
# the order of a config
TOP = ("seed", "data", "datasets", "labels", "model", "loss", "method", "optim", "train", "fast")
# Flat keys of method options before each method had its own section, and where they live now; likewise the
# softmax head's keys before the fast model had several heads.
MOVED = {f"method.{key}": f"{section}.{key}" for section, cls in SECTIONS.items() if section.startswith("method.")
         for key in cls.defaults()} | {"fast.c": "fast.softmax.c", "fast.max_iter": "fast.softmax.max_iter"}


def default_config() -> dict[str, Any]:
    """Every key with its default, section by section."""
    cfg: dict[str, Any] = {"seed": 0, "datasets": {}}
    for section, cls in SECTIONS.items():
        node = cfg
        *parents, last = section.split(".")
        for part in parents:
            node = node[part]
        node[last] = cls.defaults()
    return {key: cfg[key] for key in TOP}


def help_texts() -> dict[str, str]:
    """``section.key`` -> its line of help."""
    return {f"{section}.{key}": text for section, cls in SECTIONS.items() for key, text in cls.help().items()}


def upgrade(settings: dict, warn: bool = False) -> dict:
    """``settings`` with the flat keys of older configs (``MOVED``) in their sections; ``warn``: say so (for what a
    user typed; saved runs are upgraded silently)."""
    moved = [(top, key) for top in ("method", "fast") if isinstance(settings.get(top), dict)
             for key in settings[top] if f"{top}.{key}" in MOVED]
    if not moved:
        return settings
    out = copy.deepcopy(settings)
    for top, key in moved:
        section, name = MOVED[f"{top}.{key}"].rsplit(".", 1)
        out[top].setdefault(section.split(".")[1], {})[name] = out[top].pop(key)
        if warn:
            log.warning("config key %s.%s is now %s.%s", top, key, section, name)
    return out


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
        if prefix + k == "datasets":
            out[k] = _merge_datasets(out[k], v, root or base)
        elif isinstance(out[k], dict):
            if not isinstance(v, dict):
                raise ValueError(f"config key {prefix + k!r} is a section; set its fields, e.g. {prefix + k}.x=...")
            out[k] = merge(out[k], v, prefix + k + ".", root or base)
        else:
            out[k] = _coerce(prefix + k, out[k], v)
    return out


def _merge_datasets(current: dict, given: Any, root: dict) -> dict:
    """``datasets``: name -> the ``data`` fields in which that dataset differs from ``data``; each field is checked
    (and typed) as a ``data`` field, and only the fields given are kept."""
    if not isinstance(given, dict):
        raise ValueError("config key 'datasets' maps dataset names to data fields, e.g. datasets.dubai.format=folder")
    out = copy.deepcopy(current)
    for name, fields in given.items():
        if not isinstance(fields, dict):
            raise ValueError(f"config key 'datasets.{name}' is a section of data fields, e.g. "
                             f"datasets.{name}.format=folder")
        fields = {**out.get(name, {}), **fields}
        resolved = merge(root["data"], fields, f"datasets.{name}.", root["data"])
        out[str(name)] = {key: resolved[key] for key in fields}
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
    try:
        node: Any = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"--set {item!r}: the value is not valid YAML ({problem})") from e
    for part in reversed(key.strip().split(".")):
        node = {part: node}
    return node


def deep_update(base: dict, update: dict) -> dict:
    """``update`` written over a copy of ``base``, section by section (no key checks)."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        out[k] = deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_settings(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """What the user asked for: the YAML file at ``path``, then each ``key=value`` of ``overrides``.

    Only the keys given, as one nested dict; each key is checked against the defaults (a typo is an error).
    ``load_config`` puts them over the defaults; a resumed run puts them over the run's saved config.
    """
    settings: dict = {}
    if path is not None:
        try:
            user = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"{path}: cannot read config ({e})") from e
        if not isinstance(user, dict):
            raise ValueError(f"{path}: a config file must be a mapping of keys to values")
        settings = user
    for item in overrides:
        settings = deep_update(settings, parse_set(item))
    settings = upgrade(settings, warn=True)
    merge(default_config(), settings)  # unknown keys and wrong types fail here, naming the key
    return settings


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Defaults <- YAML file at ``path`` <- each ``key=value`` of ``overrides``, in that order; validated."""
    return resolve_settings(load_settings(path, overrides))


def resolve_settings(settings: dict) -> dict:
    """The whole config: ``settings`` (what the user asked for, as ``load_settings`` returns) over the defaults,
    validated."""
    return validate(merge(default_config(), settings))


def flatten(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            flat.update(flatten(v, prefix + k + "."))
        else:
            flat[prefix + k] = v
    return flat


def validate(cfg: dict) -> dict:
    """Check every key of ``cfg`` against its options class (ranges, choices) and the dataset names; returns ``cfg``
    unchanged."""
    if cfg["seed"] < 0:
        raise ValueError(f"config key 'seed' must be >= 0, got {cfg['seed']!r}")
    for section, cls in SECTIONS.items():
        node = cfg
        for part in section.split("."):
            node = node[part]
        cls.check(node, section)
    for name, fields in cfg["datasets"].items():
        DataOptions.check(fields, f"datasets.{name}")
    names = [cfg["data"]["name"], *cfg["datasets"]]
    bad = [n for n in names if not n or not isinstance(n, str) or "/" in n or n != n.strip()]
    if bad or len(set(names)) != len(names):
        raise ValueError(f"dataset names (data.name and the keys of datasets) must be distinct, non-empty and "
                         f"without '/', got {names}")
    return cfg


def dump_config(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
