"""The one exception type a user is meant to read, and the helpers that word its messages.

`SoundvjError` carries a single line that names the file or field at fault and what was expected.
The CLI prints it and exits with code 2; anything else is a bug and keeps its traceback.

The helpers keep every message short and on one line whatever it quotes: `one_line` turns an error
(or any text, e.g. a name read from a damaged file) into one printable line, `short_repr` bounds the
repr of a user's value, `suggest` offers the closest valid name, `format_number` prints a number the
way a user typed it.
"""

from __future__ import annotations

import difflib
import numbers
import reprlib
from collections.abc import Iterable
from typing import Any


class SoundvjError(Exception):
    """A problem with the user's input (a file, a flag, a preset), worded for the user."""


def one_line(what: BaseException | object, limit: int = 200, first_line_only: bool = False) -> str:
    """`what` as one printable line of at most `limit` characters.

    For an exception: its `strerror` where it has one (an `OSError`'s readable part, without the
    errno and path that the caller names itself), else its text, else its type's name. Runs of
    whitespace (newlines included) become one space, unless `first_line_only` keeps just the first
    line (for errors whose later lines are a library's dump). Characters that are not printable
    become '?', so text read from a damaged file cannot move the terminal's cursor.
    """
    if isinstance(what, BaseException):
        text, fallback = str(getattr(what, "strerror", None) or what), type(what).__name__
    else:
        text, fallback = str(what), ""
    text = text.strip()
    if first_line_only and text:
        text = text.splitlines()[0]
    clean = " ".join("".join(ch if ch.isprintable() or ch.isspace() else "?" for ch in text).split())
    if not clean:
        return fallback
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def format_number(x: float | int) -> str:
    """Short, exact-enough form for messages and help: 0 not 0.0, 2147483647 not 2.14748e+09."""
    if isinstance(x, numbers.Integral):
        return str(int(x))
    return f"{float(x):.6g}"


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 40, 40
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 4
_MAX_REPR = 80


def short_repr(value: Any) -> str:
    """repr() for messages, bounded in length and in work whatever the value (a shared-reference
    bomb, a 5000-digit integer whose repr() Python refuses, a 50 kB string)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        bits = int(value).bit_length()
        if bits > 64:  # exact digits are noise here, and repr() fails past 4300 digits
            return f"{'-' if value < 0 else ''}<an integer of about {int(bits * 0.30103) + 1} digits>"
    try:
        text = _SHORT.repr(value)
    except Exception:  # noqa: BLE001 - a message must never fail on the value it describes
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def suggest(key: str, valid: Iterable[str]) -> str:
    """'did you mean 'x'?' for the closest valid name, or the list of valid names."""
    valid = list(valid)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return "valid: " + ", ".join(valid)
