"""Typed option tables: turn a TOML table into a component's options dataclass, or say why not.

A component declares its options as a dataclass; each field's type drives the check:
``int``, ``float``, ``str``, ``bool``, ``list[str]``, ``list[int]``, ``dict``, ``Duration``
(``"50ms"``, ``"1.5s"``, ``"2m"``, held as int nanoseconds), ``Size`` (``"64MiB"``, bytes),
``Literal[...]`` choices, and ``X | None``. A field without a default is required.
Every problem comes back at once with its key path and, for a misspelt key, the nearest name.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any, Literal, NewType, get_args, get_origin

from .errors import ConfigError

Duration = NewType("Duration", int)
"""Nanoseconds, written in TOML as a string with a unit: "500us", "50ms", "1.5s", "2m", "1h"."""
Size = NewType("Size", int)
"""Bytes, written in TOML as an int or a string with a unit: "512KiB", "64MiB", "1GB"."""

_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                   "m": 60_000_000_000, "h": 3_600_000_000_000}
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3}
_NUM_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Zµ]*)\s*$")


def parse_duration(text: str) -> int:
    """``"1.5s"`` -> 1_500_000_000 (ns). Raises ValueError naming the accepted units."""
    m = _NUM_UNIT.match(str(text))
    if not m or m.group(2) not in _DURATION_UNITS:
        raise ValueError(f"{text!r} is not a duration (write e.g. \"50ms\", \"1.5s\"; units: "
                         + ", ".join(_DURATION_UNITS) + ")")
    return int(round(float(m.group(1)) * _DURATION_UNITS[m.group(2)]))


def parse_size(text: str | int) -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = _NUM_UNIT.match(str(text))
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size (write e.g. 1048576, \"64MiB\", \"1GB\")")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def nearest(name: str, choices) -> str:
    """A "did you mean" hint, or ""."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""


def build(cls: type, table: dict[str, Any], path: str, errors: list[ConfigError],
          ignore: tuple[str, ...] = ()) -> Any:
    """Make ``cls`` from ``table``; problems are appended to ``errors`` and None is returned.

    A class with a ``from_table(table, path, errors)`` classmethod builds itself (tables whose keys
    are the user's names, like ``[environments.staging]``).
    """
    if hasattr(cls, "from_table"):
        return cls.from_table(table, path, errors)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    before = len(errors)
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key in ignore:
            continue
        if key not in fields:
            errors.append(ConfigError(f"{path}.{key}", "unknown key",
                                      nearest(key, fields) or "valid keys: " + ", ".join(fields)))
            continue
        try:
            values[key] = coerce(raw, hints[key], f"{path}.{key}")
        except ConfigError as exc:
            errors.append(exc)
    for name, f in fields.items():
        missing = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if missing and name not in values and name not in table:
            errors.append(ConfigError(f"{path}.{name}", "required"))
    if len(errors) > before:
        return None
    try:
        obj = cls(**values)
    except (ValueError, TypeError) as exc:  # a __post_init__ that checks values across fields
        errors.append(ConfigError(path, str(exc)))
        return None
    return obj


def coerce(value: Any, tp: Any, path: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], path)
    if tp is Duration:
        if isinstance(value, bool) or not isinstance(value, str):
            raise ConfigError(path, f"expected a duration string like \"50ms\", got {_tname(value)}")
        try:
            return Duration(parse_duration(value))
        except ValueError as exc:
            raise ConfigError(path, str(exc)) from None
    if tp is Size:
        try:
            return Size(parse_size(value))
        except ValueError as exc:
            raise ConfigError(path, str(exc)) from None
    if origin is Literal:
        if value not in args:
            raise ConfigError(path, f"{value!r} is not one of " + ", ".join(map(repr, args)),
                              nearest(str(value), map(str, args)))
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {_tname(value)}")
        return [coerce(v, args[0] if args else Any, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a table, got {_tname(value)}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if isinstance(value, bool) != (tp is bool) or not isinstance(value, tp):
            raise ConfigError(path, f"expected {tp.__name__}, got {_tname(value)}")
        return value
    return value


def _tname(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__) + f" ({value!r})"
