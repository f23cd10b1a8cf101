"""The mapping file: the performer's bindings, kept apart from presets so they outlive preset loads
and restarts.

    version: 1
    bindings:
      - source: {cc: 21, channel: 1}      # channel optional: any channel
        target: {param: psi}
        min: 0.3                          # optional: part of the parameter's range
        max: 1.2
        curve: exp                        # linear (default), exp, log
        invert: false
      - source: {note: 36}
        target: {preset: 2}               # a number from 1, or a preset's name
      - source: {osc: /1/push1}
        target: next_preset               # previous_preset, tap, record, freeze, fade, ...
      - source: {key: b}
        target: tap

It is read like a preset: a size limit, YAML without aliases or repeated keys, a supported version,
and one `SoundvjError` line naming the file, the entry and what was expected. It is written whole or
not at all (`core.atomic_write`), so a crash while saving a learned binding never loses the others.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from core.atomic_write import atomic_open
from core.errors import SoundvjError, one_line, short_repr, suggest
from core.plain_yaml import read_plain_yaml
from visualizer.control.bindings import Binding

MAPPING_VERSION = 1
SUPPORTED_VERSIONS = (1,)
TOP_LEVEL_KEYS = ("version", "bindings")
MAX_MAPPING_BYTES = 256 * 1024  # a few hundred bindings are a few tens of kB
MAX_BINDINGS = 512
MAPPING_FILE_NAME = "mapping.yaml"


def default_mapping_path() -> Path:
    """Where the mapping lives unless `--mapping` says otherwise: $XDG_CONFIG_HOME/soundvj/mapping.yaml
    (~/.config/soundvj/mapping.yaml when the variable is unset)."""
    base = os.environ.get("XDG_CONFIG_HOME", "").strip()
    folder = Path(base) if base else Path.home() / ".config"
    return folder / "soundvj" / MAPPING_FILE_NAME


def load_mapping(path: str | os.PathLike) -> tuple[Binding, ...]:
    """The bindings in the mapping file at `path`, validated; a missing or broken file raises a
    one-line `SoundvjError` (the dispatcher then keeps the bindings it has)."""
    path = Path(path).expanduser()
    source = str(path)
    if not path.is_file():
        raise SoundvjError(f"{source}: no mapping file there")
    doc = read_plain_yaml(path, MAX_MAPPING_BYTES, "a mapping file", "the mapping file")
    if doc is None:
        return ()
    if not isinstance(doc, dict):
        raise SoundvjError(f"{source}: top level must be a mapping with 'version' and 'bindings', "
                           f"got {type(doc).__name__}")
    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            raise SoundvjError(f"{source}: unknown top-level key {short_repr(str(key))}; "
                               f"{suggest(str(key)[:100], TOP_LEVEL_KEYS)}")
    supported = ", ".join(map(str, SUPPORTED_VERSIONS))
    version = doc.get("version")
    if "version" not in doc:
        raise SoundvjError(f"{source}: missing 'version' (supported versions: {supported})")
    if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
        raise SoundvjError(f"{source}: version {short_repr(version)} is not supported (supported versions: {supported})")
    entries = doc.get("bindings") or []
    if not isinstance(entries, list):
        raise SoundvjError(f"{source}: 'bindings' must be a list, got {type(entries).__name__}")
    if len(entries) > MAX_BINDINGS:
        raise SoundvjError(f"{source}: {len(entries)} bindings; at most {MAX_BINDINGS}")
    bindings = tuple(Binding.from_dict(entry, f"{source}: bindings[{i}]") for i, entry in enumerate(entries))
    seen: dict[tuple, int] = {}
    for i, b in enumerate(bindings):
        key = (b.source, b.target)
        if key in seen:
            raise SoundvjError(f"{source}: bindings[{i}]: {b.source.describe()} -> {b.target.describe()} "
                               f"repeats bindings[{seen[key]}]")
        seen[key] = i
    return bindings


def save_mapping(path: str | os.PathLike, bindings: Iterable[Binding]) -> Path:
    """Write `bindings` as the mapping file at `path`, atomically (the folder is made if missing);
    a folder that cannot be written is one `SoundvjError` line and the old file stays."""
    path = Path(path).expanduser()
    bindings = tuple(bindings)
    if len(bindings) > MAX_BINDINGS:
        raise SoundvjError(f"{path}: {len(bindings)} bindings; at most {MAX_BINDINGS}")
    doc = {"version": MAPPING_VERSION, "bindings": [b.to_dict() for b in bindings]}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "w") as fh:
            yaml.safe_dump(doc, fh, sort_keys=False, allow_unicode=True, default_flow_style=None)
    except OSError as e:
        raise SoundvjError(f"{path}: cannot write the mapping file ({one_line(e)})") from None
    return path
