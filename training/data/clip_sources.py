"""`SOURCES.csv`, a clip folder's list of where each clip came from: clip,class,source,use[,sound].

`soundvj data demo` writes it in `clips/` beside `HOLDOUT.txt`. `source` is the package or recording
author, `sound` the recording (or span of one) the clip was cut from, `use` is `train`, `heldout` (a span or file of a training source that training never sees) or
`heldout-source` (a source the class never trains on). `eval --by-source` splits its numbers by use,
`data folds` holds out each source in turn, and E_I's choice of kind weighs every source alike.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple

from core.errors import SoundvjError

SOURCES_LIST = "SOURCES.csv"
USES = ("train", "heldout", "heldout-source")


class ClipSource(NamedTuple):
    """Where one clip came from; `recording` is the source when the list has no `sound` column."""

    source: str
    use: str
    recording: str


def clip_sources_path(dataset: str | Path) -> Path:
    """Where a dataset's list is: in the dataset folder, or next to a CSV dataset."""
    root = Path(dataset)
    return (root if root.is_dir() else root.parent) / SOURCES_LIST


def listed_source(table: dict[tuple[str, str], ClipSource], dataset: str | Path, label: str,
                  path: str | Path) -> ClipSource:
    """What the list says of the clip `label`/`path`'s file; a clip it leaves out is a one-line error."""
    name = Path(path).name
    if (label, name) not in table:
        raise SoundvjError(f"{dataset}: {label}/{name} is not in {SOURCES_LIST}; expected every clip listed")
    return table[(label, name)]


def read_clip_sources(dataset: str | Path) -> dict[tuple[str, str], ClipSource]:
    """(class, file name) -> (source, use, recording) of every clip the dataset's `SOURCES.csv` lists; a missing or
    bad list is a one-line error."""
    path = clip_sources_path(dataset)
    if not path.is_file():
        raise SoundvjError(f"{path} not found; expected the clip sources list `soundvj data demo` writes in its "
                           "clips/ folder")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"clip", "source", "use"} - set(reader.fieldnames or ())
            if missing:
                raise SoundvjError(f"{path}: no column {', '.join(sorted(missing))}; expected clip,class,source,use")
            table = {}
            for number, row in enumerate(reader, start=2):
                label, sep, name = (row["clip"] or "").partition("/")
                if not sep or not name or row["use"] not in USES:
                    raise SoundvjError(f"{path} line {number}: expected <class>/<file>,...,<source>,train|heldout|"
                                       f"heldout-source, got {row['clip']!r} use {row['use']!r}")
                table[(label, name)] = ClipSource(row["source"], row["use"], row.get("sound") or row["source"])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SoundvjError(f"{path}: cannot be read ({e})") from None
    return table
