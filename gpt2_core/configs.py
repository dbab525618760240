"""Configurations as JSON: dataclasses to JSON-ready dicts and back, and the differences between two.

`config_from_dict` reads a JSON object onto a dataclass (nested dataclasses from nested objects) and
names the file and dotted key of any unknown key, wrong type, or value the dataclass rejects.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

from gpt2_core.errors import ConfigError


def config_to_dict(config: Any) -> Any:
    """A JSON-ready copy of `config`: dataclasses become dicts, tuples lists, paths strings."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, dict):
        return {str(k): config_to_dict(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [config_to_dict(v) for v in config]
    if isinstance(config, Path):
        return str(config)
    return config


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether JSON `value` fits a field annotated `annotation` (bool is not an int here)."""
    if annotation is Any:
        return True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(_accepts(a, value) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    origin = typing.get_origin(annotation) or annotation
    if origin is tuple:
        return isinstance(value, list)
    return isinstance(value, origin)


def config_from_dict(base: Any, values: dict, *, source: str, prefix: str = "") -> Any:
    """A copy of dataclass `base` with the fields in `values` replaced (nested dataclasses: dicts).

    Raises ConfigError naming `source` and the dotted key for unknown keys, wrong types, and
    values that the dataclass itself rejects.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'the config'} must be a JSON object, "
                          f"got {type(values).__name__}")
    hints = typing.get_type_hints(type(base))
    known = [f.name for f in dataclasses.fields(base)]
    updates = {}
    for key, value in values.items():
        name = prefix + key
        if key not in known:
            raise ConfigError(f"{source}: unknown key {name!r}; known keys here: {', '.join(known)}")
        current = getattr(base, key)
        if dataclasses.is_dataclass(current):
            updates[key] = config_from_dict(current, value, source=source, prefix=name + ".")
        elif not _accepts(hints[key], value):
            raise ConfigError(f"{source}: key {name!r} must be {_type_name(hints[key])}, "
                              f"got {type(value).__name__} {value!r}")
        elif hints[key] is float:
            updates[key] = float(value)
        else:
            updates[key] = tuple(value) if isinstance(value, list) else value
    try:
        return dataclasses.replace(base, **updates)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: invalid {prefix.rstrip('.') or 'config'}: {e}") from None


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation)


def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two JSON-ready configs, with both values."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in sorted(set(old) | set(new), key=str)
                for d in config_diff(old.get(key), new.get(key), f"{prefix}{key}.")]
    if old == new:
        return []
    return [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]
