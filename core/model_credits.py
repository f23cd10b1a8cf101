"""What a model says about its training data: class names and per-file credits from its metadata.

`soundvj train export --credits` stores the data set's credits (a JSON list of per-file entries with
`file`, `package`, `licence`, `credit`, `class`, `use`) as `training.credits`; a trained generator stores
its class names as `training.classes`. `soundvj info` shows a summary; `--credits` every entry.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

CLASSES_KEY = "training.classes"
CREDITS_KEY = "training.credits"


def _json(metadata: dict[str, str], key: str) -> Any:
    """The JSON value stored under `key`; None when absent or unreadable (a damaged file is not an error here)."""
    try:
        return json.loads(metadata[key]) if key in metadata else None
    except (TypeError, json.JSONDecodeError):
        return None


def class_names(metadata: dict[str, str]) -> list[str] | None:
    """The class names a class-conditional generator was trained on (class-index order), read from
    `CLASSES_KEY`; [] for an unconditional generator, None when the metadata does not say (or is damaged)."""
    names = _json(metadata, CLASSES_KEY)
    return [str(n) for n in names] if isinstance(names, list) else None


def credit_entries(metadata: dict[str, str]) -> list[dict]:
    """The per-file credit entries stored under `CREDITS_KEY` (a list, or the first list in an object)."""
    data = _json(metadata, CREDITS_KEY)
    if isinstance(data, dict):  # {"files": [...], ...} or similar: the first list of entries in it
        data = next((v for v in data.values() if isinstance(v, list)), [])
    return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []


def summary_lines(metadata: dict[str, str]) -> list[str]:
    """`info`'s lines: the classes, and the training data counted by package and licence."""
    lines = []
    names = class_names(metadata)
    if names:
        lines.append(f"classes:      {', '.join(names)}")
    entries = credit_entries(metadata)
    if entries:
        by_source = Counter((str(e.get("package", "?")), str(e.get("licence", "?"))) for e in entries)
        uses = Counter(str(e.get("use", "train")) for e in entries)
        lines.append(f"trained on:   {len(entries)} files ({', '.join(f'{n} {u}' for u, n in sorted(uses.items()))}); "
                     "`soundvj info MODEL --credits` lists each with its credit")
        for (package, licence), n in sorted(by_source.items()):
            lines.append(f"              {n:>3} from {package} ({licence})")
    return lines


def credit_lines(metadata: dict[str, str]) -> list[str]:
    """Every credited file: class, use, file, licence and the credit as its package states it."""
    out = []
    for e in credit_entries(metadata):
        where = f"{e.get('class', '?')}/{e.get('use', '?')}"
        out.append(f"{where:<18} {e.get('file', '?')}  [{e.get('licence', '?')}]  {e.get('credit', '')}".rstrip())
    return out
