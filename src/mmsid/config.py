"""Typed configs with one override order: dataclass defaults < budget preset < YAML file <
command line (``--set section.key=value``). Unknown keys are errors that name the closest
valid key."""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from mmsid.errors import ConfigError


def check_ranges(obj: Any, **rules: tuple[float | None, float | None]) -> None:
    """Validate numeric settings where they are declared (call from ``__post_init__``): each
    rule ``name=(lo, hi)`` (None = unbounded) requires a finite number in [lo, hi]. Raises
    ConfigError naming the setting, its value and the allowed range; the CLI, ``--set`` and
    YAML all build the same dataclasses, so they share the check."""
    import math

    for name, (lo, hi) in rules.items():
        v = getattr(obj, name)
        ok = (
            isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(v)
            and (lo is None or v >= lo)
            and (hi is None or v <= hi)
        )
        if not ok:
            span = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
            raise ConfigError(
                f"{type(obj).__name__}.{name} = {v!r}: must be a finite number in {span}"
            )


def _fields(cls) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _closest(key: str, valid) -> str:
    m = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f"; did you mean '{m[0]}'?" if m else f"; valid keys: {', '.join(sorted(valid))}"


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Turn YAML / command-line values into the field's type (str -> int/float/bool/list)."""
    origin = getattr(typ, "__origin__", None)
    if isinstance(value, str) and typ in (int, float):
        try:
            return typ(value)
        except ValueError as e:
            raise ConfigError(f"{where}: expected {typ.__name__}, got '{value}'") from e
    if isinstance(value, str) and typ is bool:
        if value.lower() in ("true", "1", "yes", "on"):
            return True
        if value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true/false, got '{value}'")
    if origin in (list, tuple) and isinstance(value, str):
        value = [v for v in value.split(",") if v]
    elif origin in (list, tuple) and isinstance(value, (int, float, bool)):
        value = [value]  # `--set seeds=1`: YAML reads a one-item list as a number
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        (inner, *_) = getattr(typ, "__args__", (str,))
        value = [_coerce(v, inner, where) for v in value]
        return tuple(value) if origin is tuple else list(value)
    if typ is float and isinstance(value, int):
        return float(value)
    return value


def merge(obj, overrides: dict[str, Any], where: str = "config"):
    """A copy of dataclass ``obj`` with nested ``overrides`` applied (checked keys)."""
    fields = _fields(type(obj))
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key '{key}'{_closest(key, fields)}")
        cur = getattr(obj, key)
        if dataclasses.is_dataclass(cur):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{key} is a section; give it keys, not '{value}'")
            changes[key] = merge(cur, value, f"{where}.{key}")
        else:
            changes[key] = _coerce(value, fields[key], f"{where}.{key}")
    return dataclasses.replace(obj, **changes)


def dotted(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """['a.b=1', 'c=x'] -> {'a': {'b': '1'}, 'c': 'x'} (values are coerced by ``merge``)."""
    out: dict[str, Any] = {}
    for p in pairs:
        if "=" not in p:
            raise ConfigError(f"--set expects KEY=VALUE, got '{p}'")
        key, value = p.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set '{p}': the key must be names joined by '.', e.g. a.b=1")
        node = out
        *parents, leaf = parts
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set '{p}': '{part}' was already given a value")
        try:
            node[leaf] = yaml.safe_load(value) if value else value
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0]
            raise ConfigError(f"--set '{p}': the value is not valid YAML ({first})") from None
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    return data
