"""Config sections as frozen dataclasses, filled from plain data (YAML, `--set key=value`) with checking.

Everything is validated here, in one place, from the dataclass annotations and each field's
metadata (`setting(...)`): unknown keys, wrong types and out-of-range values are one-line
`SoundvjError`s naming the key (`stage.lr: expected a number >= 0, got 'fast'`). Nested dataclasses
are sections. A field marked `resumable=True` may change when a run is resumed (see
`training.config.identity`).

This module knows no particular section: `training.config` assembles a run's config from them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, TypeVar, get_args, get_origin, get_type_hints

import yaml

from core.errors import SoundvjError

T = TypeVar("T")

_MISSING = dataclasses.MISSING


def setting(
    default: Any = _MISSING,
    *,
    help: str = "",  # noqa: A002 - the natural name for a setting's description
    min: float | None = None,  # noqa: A002
    max: float | None = None,  # noqa: A002
    resumable: bool = False,
    default_factory: Any = _MISSING,
) -> Any:
    """A config field with its description, numeric bounds and whether a resume may change it."""
    metadata = {"help": help, "min": min, "max": max, "resumable": resumable}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


# ---------------------------------------------------------------------------------------------
# Building dataclasses from plain data, with checking


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (tuple, list):
        args = get_args(tp)
        inner = _type_name(args[0]) if args else "value"
        return f"a list of {inner}s"
    if tp is type(None):
        return "null"
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    pass


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """`value` as type `tp`, or _Mismatch. Ints pass as floats; numeric strings ('1e-4') as numbers."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in get_args(tp) and type(value) in {type(a) for a in get_args(tp)}:
            return value
        raise _Mismatch
    if origin in (typing.Union, types.UnionType):
        for option in get_args(tp):
            try:
                return _coerce(value, option, where)
            except _Mismatch:
                continue
        raise _Mismatch
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            result = float(value)
        elif isinstance(value, str):
            # PyYAML reads 1e-4 (no dot) as a string; a float field means it as a number.
            try:
                result = float(value)
            except ValueError:
                raise _Mismatch from None
        else:
            raise _Mismatch
        if not math.isfinite(result):
            raise _Mismatch
        return result
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # YAML reads a folder named 2024 as a number
        raise _Mismatch
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = get_args(tp)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            items = [_coerce(v, args[0], where) for v in value]
        elif origin is tuple and args:
            if len(value) != len(args):
                raise _Mismatch
            items = [_coerce(v, a, where) for v, a in zip(value, args)]
        else:
            items = [_coerce(v, args[0], where) if args else v for v in value]
        return tuple(items) if origin is tuple else items
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    raise SoundvjError(f"{where}: unsupported config type {tp!r}")  # a programming error, worded anyway


def from_dict(cls: type[T], data: Any, section: str) -> T:
    """Build the frozen dataclass `cls` from a mapping; missing keys take their defaults.

    Unknown keys, wrong types and values outside a field's `min`/`max` raise a one-line
    `SoundvjError` naming `section.key`. The dataclass's own `__post_init__` may check more.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SoundvjError(f"{section}: expected a mapping of settings, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        raise SoundvjError(f"{section}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(fields))}")
    hints = get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        where = f"{section}.{name}"
        tp = hints[name]
        try:
            coerced = _coerce(value, tp, where)
        except _Mismatch:
            raise SoundvjError(f"{where}: expected {_type_name(tp)}, got {value!r}") from None
        meta = fields[name].metadata
        lo, hi = meta.get("min"), meta.get("max")
        if isinstance(coerced, (int, float)) and not isinstance(coerced, bool):
            if (lo is not None and coerced < lo) or (hi is not None and coerced > hi):
                bounds = f"in [{lo:g}, {hi:g}]" if lo is not None and hi is not None else (
                    f">= {lo:g}" if lo is not None else f"<= {hi:g}")
                raise SoundvjError(f"{where}: expected a value {bounds}, got {value!r}")
        kwargs[name] = coerced
    try:
        return cls(**kwargs)
    except TypeError as e:  # a field without a default was not given
        raise SoundvjError(f"{section}: {e}") from None


def to_dict(config: Any) -> Any:
    """A dataclass config as plain YAML/JSON data (tuples become lists); a non-dataclass passes through."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    if isinstance(config, Path):
        return str(config)
    return config


# ---------------------------------------------------------------------------------------------
# Files and overrides


def read_yaml(path: str | Path) -> dict:
    """A YAML file's top-level mapping (empty file: {}); unreadable or invalid YAML is a one-line error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SoundvjError(f"config {str(path)!r}: not found") from None
    except OSError as e:
        raise SoundvjError(f"config {str(path)!r}: cannot be read ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise SoundvjError(f"config {str(path)!r}: {problem}{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SoundvjError(f"config {str(path)!r}: expected a mapping of sections, got {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """`["loop.steps=10", "stage.lr=1e-4"]` applied to a nested dict (copied). Values are read as YAML."""
    out = json.loads(json.dumps(data, default=str))  # deep copy of plain data
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise SoundvjError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. loop.steps=100")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text  # not YAML: take it as a string and let the type check decide
        parts = key.split(".")
        node = out
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise SoundvjError(f"--set {item!r}: {'.'.join(parts[: depth + 1])} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def same_setting(a: Any, b: Any) -> bool:
    """Equal, or two paths naming the same existing file or folder (a run moved, or named relative in one
    and absolute in the other, is the same input)."""
    if a == b:
        return True
    if isinstance(a, str) and isinstance(b, str) and a and b:
        try:
            return os.path.samefile(a, b)
        except OSError:
            return False
    return False


def identity_differences(saved: dict, current: dict, prefix: str = "", defaults: dict | None = None) -> list[str]:
    """`["stage.lr: 0.0001 in the checkpoint, 0.0002 now", ...]` for two identity dicts (`same_setting`
    decides). With `defaults` (the identity of the default config), a setting absent from the checkpoint
    counts as its default: a setting added to the code later does not make older checkpoints differ while
    it keeps its default."""
    out = []
    for key in sorted(set(saved) | set(current)):
        name = f"{prefix}{key}"
        default = (defaults or {}).get(key, "<absent>")
        a, b = saved.get(key, default if defaults is not None else "<absent>"), current.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            sub_defaults = default if isinstance(default, dict) else ({} if defaults is not None else None)
            out.extend(identity_differences(a, b, name + ".", sub_defaults))
        elif not same_setting(a, b):
            out.append(f"{name}: {a!r} in the checkpoint, {b!r} now")
    return out
