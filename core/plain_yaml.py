"""Reading the small YAML files a performer writes by hand (presets, the controller mapping).

Such a file never needs YAML's aliases, and aliases let a few hundred bytes stand for billions of
values ("billion laughs"). A key repeated in one mapping would silently win over the first. So the
reader refuses both, refuses a file over a size limit before parsing it, and turns every failure
(unreadable, not UTF-8, bad YAML, nested too deeply, a number Python will not convert) into one
`SoundvjError` line that names the file and, where YAML knows it, the line and column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from core.errors import SoundvjError, one_line, short_repr


class PlainYamlLoader(yaml.SafeLoader):
    """YAML's safe loader without aliases and without duplicate keys; `what` names the kind of file
    in the messages ("a preset", "a mapping file")."""

    what = "this file"

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{short_repr(event.anchor)[1:-1]}) are not allowed in {self.what}",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _value_node in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:
                    continue  # unhashable: the base class reports it
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {short_repr(key)}", key_node.start_mark
                    )
        return super().construct_mapping(node, deep=deep)


PlainYamlLoader.add_constructor("tag:yaml.org,2002:map", PlainYamlLoader.construct_yaml_map)

_LOADERS: dict[str, type[PlainYamlLoader]] = {}


def _loader_for(what: str) -> type[PlainYamlLoader]:
    if what not in _LOADERS:
        _LOADERS[what] = type("PlainYamlLoader", (PlainYamlLoader,), {"what": what})
    return _LOADERS[what]


def read_plain_yaml(path: str | Path, max_bytes: int, what: str, kind: str, too_large_hint: str = "") -> Any:
    """The YAML document in `path`, read as described above.

    `what` names the kind of file with its article ("a preset"), `kind` without it ("preset"), for
    the messages; `too_large_hint` is added to the size error (e.g. what such files usually weigh)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
        if len(raw) > max_bytes:
            hint = f"; {too_large_hint}" if too_large_hint else ""
            raise SoundvjError(f"{path}: too large for {what} (over {max_bytes // 1024} kB{hint})")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SoundvjError(f"{path}: cannot read {kind} ({one_line(e)})") from None
    try:
        return yaml.load(text, Loader=_loader_for(what))  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or one_line(e, first_line_only=True)
        raise SoundvjError(f"{path}: invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise SoundvjError(f"{path}: invalid YAML: nested too deeply for {what}") from None
    except ValueError as e:  # e.g. an integer past Python's 4300-digit conversion limit
        raise SoundvjError(f"{path}: invalid YAML: {short_repr(str(e))[1:-1]}") from None
