"""Versioned, validated YAML presets: named looks that set a subset of the performer's parameters.

File format (see presets/README.md):

    version: 1
    name: storm            # optional, defaults to the file stem
    description: "..."     # optional
    params: {alpha: 0.7}   # any subset of core.params.NAMES

Version 2 adds `modulations:`, a list of at most 64 mappings (`core.control.modulation`):

    version: 2
    params: {noise: 0.2}
    modulations:
      - {target: noise, source: onset, depth: 0.8}          # a noise burst on each kick
      - {target: rotate_deg, source: saw, depth: 180, beats: 4}  # one turn a bar

A preset only ever changes the keys it sets, so it can be layered over CLI flags or the current UI
state; likewise `Preset.modulations` is None when the file has no `modulations:` (a version-1 file
reads exactly as before) and leaves the current matrix alone, while a list, even an empty one,
replaces it. Every problem is one `SoundvjError` line naming the file and the key.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.atomic_write import atomic_open
from core.control.modulation import Modulation, ModulationMatrix
from core.errors import SoundvjError, one_line, short_repr, suggest
from core.params import NAMES, Params, Value, check_known_names, validate_values
from core.plain_yaml import read_plain_yaml

SUPPORTED_VERSIONS = (1, 2)
CURRENT_VERSION = 2
PLAIN_VERSION = 1  # what a preset without modulations is saved as, so older readers still take it
TOP_LEVEL_KEYS = ("version", "name", "description", "params", "modulations")
VERSION_OF_KEY = {"modulations": 2}  # top-level keys newer than version 1
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "presets"
USER_DIR_ENV = "SOUNDVJ_PRESETS_DIR"  # os.pathsep-separated folders, searched before the shipped one
SUFFIXES = (".yaml", ".yml")
# The shipped presets are a few hundred bytes; a larger file is a mistake (or an attack on the parser).
MAX_PRESET_BYTES = 64 * 1024


@dataclass(frozen=True)
class Preset:
    """A loaded preset. `values` holds only the keys the file sets (validated and coerced);
    `modulations` is None when the preset does not set them (see the module docstring)."""

    name: str
    description: str = ""
    path: Path | None = None
    values: dict[str, Value] = field(default_factory=dict, hash=False)  # dicts are unhashable
    modulations: tuple[Modulation, ...] | None = None

    def __post_init__(self) -> None:
        source = str(self.path) if self.path else f"preset {self.name!r}"
        if not isinstance(self.name, str) or not self.name.strip():
            raise SoundvjError(f"{source}: name must be a non-empty string, got {short_repr(self.name)}")
        if not isinstance(self.description, str):
            raise SoundvjError(f"{source}: description must be a string, got {type(self.description).__name__}")
        # A private copy: the dataclass is frozen, and callers' dicts must not alias it.
        object.__setattr__(self, "values", validate_values(self.values, source))
        if self.modulations is not None:
            matrix = ModulationMatrix(self.modulations)  # checks the entries and the count
            object.__setattr__(self, "modulations", matrix.modulations)

    @property
    def matrix(self) -> ModulationMatrix | None:
        """The modulations as a `ModulationMatrix`, or None when the preset does not set them."""
        return None if self.modulations is None else ModulationMatrix(self.modulations)

    def apply(self, base: Params) -> Params:
        """`base` with exactly this preset's keys replaced."""
        return base.replace(**self.values)


def preset_dirs() -> list[Path]:
    """Folders searched for bare preset names: user folders (env var) first, then the shipped one."""
    user = [Path(p).expanduser() for p in os.environ.get(USER_DIR_ENV, "").split(os.pathsep) if p.strip()]
    return [*user, SHIPPED_DIR]


def _is_bare_name(ref: str | os.PathLike) -> bool:
    if isinstance(ref, Path):
        return False
    text = os.fspath(ref)
    return "/" not in text and os.sep not in text and not text.lower().endswith(SUFFIXES)


def preset_files(folder: Path) -> list[Path]:
    """The preset files (`.yaml`/`.yml`) directly in `folder`, sorted by name; [] if it is not a folder.

    The one listing rule for presets: bare-name lookup, `list_presets` and the live app's preset
    menu all see the same files."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())


def _available_names() -> list[str]:
    return sorted({p.stem for d in preset_dirs() for p in preset_files(d)})


def resolve_preset_path(ref: str | os.PathLike) -> Path:
    """A path is used as is; a bare name is looked up in `preset_dirs()` (first match wins)."""
    if not _is_bare_name(ref):
        path = Path(ref).expanduser()
        if not path.is_file():
            raise SoundvjError(f"{path}: no such preset file")
        return path
    name = os.fspath(ref)
    for folder in preset_dirs():
        for suffix in SUFFIXES:
            if (folder / f"{name}{suffix}").is_file():
                return folder / f"{name}{suffix}"
    available = _available_names()
    close = suggest(name, available) if available else ""
    hint = "available: " + (", ".join(available) or "none")
    if close.startswith("did you mean"):
        hint = f"{close} ({hint})"
    raise SoundvjError(f"preset {name!r}: not found in {', '.join(map(str, preset_dirs()))}; {hint}")


def _parse_yaml(path: Path) -> Any:
    return read_plain_yaml(path, MAX_PRESET_BYTES, "a preset", "preset",
                           too_large_hint="presets are a few hundred bytes")


def _check_version(doc: Mapping, source: str) -> None:
    supported = ", ".join(map(str, SUPPORTED_VERSIONS))
    if "version" not in doc:
        raise SoundvjError(f"{source}: missing 'version' (supported versions: {supported})")
    version = doc["version"]
    # `version: true` would compare equal to 1; only a real integer counts.
    if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
        raise SoundvjError(
            f"{source}: version {short_repr(version)} is not supported (supported versions: {supported})"
        )


def _check_top_level_keys(doc: Mapping, source: str) -> None:
    for key in doc:
        if key in TOP_LEVEL_KEYS:
            needed = VERSION_OF_KEY.get(key, 1)
            if doc["version"] < needed:
                raise SoundvjError(f"{source}: {key!r} needs 'version: {needed}' (the file says version {doc['version']})")
            continue
        if key in NAMES:  # the most likely slip: a parameter written at the top level
            raise SoundvjError(f"{source}: {key!r} is a parameter; put it under 'params:'")
        raise SoundvjError(
            f"{source}: unknown top-level key {short_repr(str(key))}; {suggest(str(key)[:100], TOP_LEVEL_KEYS)}"
        )


def load_preset(path_or_name: str | os.PathLike, base: Params | None = None) -> Preset:
    """Load and validate a preset file or a bare preset name.

    If `base` is given the preset is also applied to it once, so a preset that loads is known to
    combine with that base; the returned `Preset` is the same either way.
    """
    path = resolve_preset_path(path_or_name)
    source = str(path)
    doc = _parse_yaml(path)
    if doc is None:
        raise SoundvjError(f"{source}: file is empty; expected a mapping with 'version' and 'params'")
    if not isinstance(doc, Mapping):
        kind = type(doc).__name__
        raise SoundvjError(f"{source}: top level must be a mapping with 'version' and 'params', got {kind}")
    _check_version(doc, source)
    _check_top_level_keys(doc, source)
    params = doc.get("params")
    if params is None:
        params = {}  # a preset with no params is allowed (a named "defaults" look)
    if not isinstance(params, Mapping):
        kind = type(params).__name__
        raise SoundvjError(f"{source}: 'params' must be a mapping of parameter names to values, got {kind}")
    modulations = None
    if "modulations" in doc:
        items = doc["modulations"]
        if items is None:
            items = []  # `modulations:` with nothing under it: no modulations
        modulations = ModulationMatrix.from_list(items, f"{source}: modulations").modulations
    preset = Preset(
        name=doc.get("name", path.stem),
        description=doc.get("description") or "",
        path=path,
        values=dict(params),
        modulations=modulations,
    )
    if base is not None:
        preset.apply(base)
    return preset


def list_presets() -> list[Preset]:
    """Every preset in the user folders and the shipped folder; a user file shadows a shipped one
    with the same stem, matching how bare names resolve."""
    seen: set[str] = set()
    found: list[Preset] = []
    for folder in preset_dirs():
        for path in preset_files(folder):
            if path.stem in seen:
                continue
            seen.add(path.stem)
            found.append(load_preset(path))
    return sorted(found, key=lambda p: p.name.lower())


def save_preset(
    path: str | os.PathLike,
    params: Params,
    name: str | None = None,
    description: str = "",
    only: Iterable[str] | None = None,
    modulations: Iterable[Modulation] | None = None,
) -> Path:
    """Write `params` (or just the `only` keys) as a preset, atomically: version 1 without
    `modulations`, version 2 with them (a list, even empty, or a `ModulationMatrix`).

    The YAML goes to a temp file in the same folder and is renamed over `path` only once fully
    written (`core.atomic_write`), so a crash or error never leaves a half-written preset (or
    destroys the old one).
    """
    path = Path(path).expanduser()
    keys = NAMES if only is None else tuple(only)
    check_known_names(keys, source=str(path))
    name = name or path.stem
    preset = Preset(
        name=name, description=description, path=path, values={k: getattr(params, k) for k in keys},
        modulations=None if modulations is None else tuple(modulations),
    )
    version = PLAIN_VERSION if preset.modulations is None else CURRENT_VERSION
    doc: dict[str, Any] = {"version": version, "name": preset.name}
    if preset.description:
        doc["description"] = preset.description
    doc["params"] = {k: preset.values[k] for k in NAMES if k in preset.values}  # registry order
    if preset.modulations is not None:
        doc["modulations"] = [m.to_dict() for m in preset.modulations]

    folder = path.parent
    if not folder.is_dir():
        raise SoundvjError(f"{path}: the folder {folder} does not exist")
    try:
        with atomic_open(path, "w") as fh:
            yaml.safe_dump(doc, fh, sort_keys=False, allow_unicode=True)
    except OSError as e:  # a read-only folder, a full disk: one line, and the old preset stays as it was
        raise SoundvjError(f"{path}: cannot write in {folder} ({one_line(e)})") from None
    return path
