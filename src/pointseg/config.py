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
    merge(default_config(), settings)  # unknown keys and wrong types fail here, naming the key
    return settings


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Defaults <- YAML file at ``path`` <- each ``key=value`` of ``overrides``, in that order; validated."""
    return validate(merge(default_config(), load_settings(path, overrides)))


def flatten(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            flat.update(flatten(v, prefix + k + "."))
        else:
            flat[prefix + k] = v
    return flat


# Allowed values of numeric keys: (low, high, low inclusive, high inclusive); None = unbounded.
RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "seed": (0, None, True, True),
    "data.scale": (0, 1, False, True),
    "data.crop": (1, None, True, True),
    "data.ignore_index": (0, 255, True, True),
    "data.cache_max_gb": (0, None, True, True),
    "loss.gamma": (0, None, True, True),
    "loss.pairwise_weight": (0, None, True, True),
    "loss.pairwise_warmup": (0, None, True, True),
    "loss.crf_sigma_xy": (0, None, False, True),
    "loss.crf_sigma_rgb": (0, None, False, True),
    "loss.crf_radius": (1, None, True, True),
    "loss.crf_downsample": (1, None, True, True),
    "labels.propagate_weight": (0, None, False, True),
    "labels.superpixel_size": (2, None, True, True),
    "labels.superpixel_compactness": (0, None, False, True),
    "labels.propagate_max_pixels": (1, None, True, True),
    "labels.propagate_patch": (8, None, True, True),
    "method.unlabeled_weight": (0, None, True, True),
    "method.threshold": (0, 1, True, True),
    "method.cutmix_p": (0, 1, True, True),
    "method.ema_decay": (0, 1, True, False),
    "method.feature_dropout": (0, 1, True, False),
    "method.fp_weight": (0, None, True, True),
    "method.attention_dim": (1, None, True, True),
    "method.grid_stride": (1, None, True, True),
    "method.gamma": (0, 1, True, True),
    "method.temperature": (0, None, False, True),
    "method.classifier_weight": (0, None, True, True),
    "method.sgc_weight": (0, None, True, True),
    "optim.lr": (0, None, False, True),
    "optim.weight_decay": (0, None, True, True),
    "optim.warmup_steps": (0, None, True, True),
    "train.steps": (1, None, True, True),
    "train.batch_size": (1, None, True, True),
    "train.unlabeled_batch_size": (1, None, True, True),
    "train.threads": (0, None, True, True),
    "train.num_workers": (0, None, True, True),
    "train.log_every": (1, None, True, True),
    "train.checkpoint_every": (1, None, True, True),
}


PROPAGATION = ("none", "superpixel")


def _bounds(low: float | None, high: float | None, low_in: bool, high_in: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f">{'=' if low_in else ''} {low:g}")
    if high is not None:
        parts.append(f"<{'=' if high_in else ''} {high:g}")
    return " and ".join(parts)


def validate(cfg: dict) -> dict:
    """Check every numeric key against ``RANGES`` and list-valued keys; returns ``cfg`` unchanged."""
    flat = flatten(cfg)
    for key, (low, high, low_in, high_in) in RANGES.items():
        value = flat.get(key)
        if value is None:
            continue
        too_low = low is not None and (value < low if low_in else value <= low)
        too_high = high is not None and (value > high if high_in else value >= high)
        if too_low or too_high:
            raise ValueError(f"config key {key!r} must be {_bounds(low, high, low_in, high_in)}, got {value!r}")
    rescale = flat["data.rescale"]
    if not (isinstance(rescale, list) and len(rescale) == 2 and all(isinstance(v, int | float) for v in rescale)
            and 0 < rescale[0] <= rescale[1]):
        raise ValueError(f"config key 'data.rescale' must be [low, high] with 0 < low <= high, got {rescale!r}")
    if flat["train.amp"] not in ("auto", True, False):
        raise ValueError(f"config key 'train.amp' must be auto, true or false, got {flat['train.amp']!r}")
    if flat["train.trainable"] not in ("all", "added"):
        raise ValueError(f"config key 'train.trainable' must be all or added, got {flat['train.trainable']!r}")
    if flat["labels.propagate"] not in PROPAGATION:
        raise ValueError(f"config key 'labels.propagate' must be one of {list(PROPAGATION)}, "
                         f"got {flat['labels.propagate']!r}")
    bias = flat["data.point_bias"]
    if not (bias == "auto" or (isinstance(bias, int | float) and not isinstance(bias, bool) and 0 <= bias <= 1)):
        raise ValueError(f"config key 'data.point_bias' must be auto or a share in [0, 1], got {bias!r}")
    bands = flat["data.bands"]
    if bands is not None and not (isinstance(bands, list) and bands and all(
            isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in bands)):
        raise ValueError(f"config key 'data.bands' must be null or a list of 1-based band numbers, got {bands!r}")
    names = [cfg["data"]["name"], *cfg["datasets"]]
    bad = [n for n in names if not n or not isinstance(n, str) or "/" in n or n != n.strip()]
    if bad or len(set(names)) != len(names):
        raise ValueError(f"dataset names (data.name and the keys of datasets) must be distinct, non-empty and "
                         f"without '/', got {names}")
    domains = flat["data.domains"]
    if not (isinstance(domains, list) and domains and all(isinstance(d, str) for d in domains)):
        raise ValueError(f"config key 'data.domains' must be a list of domain names, e.g. [Rural], got {domains!r}")
    return cfg


def dump_config(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
