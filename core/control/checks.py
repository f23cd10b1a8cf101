"""The one number check of the control settings (analysis, clock, modulations): a finite real in a
range, or a one-line `SoundvjError` naming the field, the value and what was expected."""

from __future__ import annotations

import math
import numbers
from typing import Any

from core.errors import SoundvjError, format_number, short_repr


def checked_number(
    label: str, value: Any, lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False, hi_open: bool = False
) -> float:
    """`value` as a float if it is a finite real number within the range (brackets as the flags
    say); else raise "<label> = <value>: expected ...". Booleans, strings, NaN, infinities and
    integers too large for a float are refused (a 400-digit integer must not raise OverflowError)."""
    x: float | None = None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            x = float(value)
        except OverflowError:
            x = None
        if x is not None and not math.isfinite(x):
            x = None
    in_range = x is not None and (lo < x if lo_open else lo <= x) and (x < hi if hi_open else x <= hi)
    if not in_range:
        kind = "a finite number" if x is None else "a number"
        if math.isinf(lo) and math.isinf(hi):
            expected = kind
        else:
            expected = (f"{kind} in {'(' if lo_open else '['}{format_number(lo)}, "
                        f"{format_number(hi)}{')' if hi_open else ']'}")
        raise SoundvjError(f"{label} = {short_repr(value)}: expected {expected}")
    return x  # type: ignore[return-value]
