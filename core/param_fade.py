"""Crossfading between two parameter snapshots (a preset switch that glides instead of jumping).

Numbers fade linearly over the fade's duration. A nullable alpha (alpha_coarse/middle/fine) that is
unset on one side fades from/to the value it stands for (`alpha`). Whole-number knobs (seed) and knobs
that restart the stream (fps) switch at the start: a seed cannot be halfway, so the pipeline
crossfades the *latent* of the old sequence into the new one instead (see `core.show_control`).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import SoundvjError
from core.params import NAMES, PARAMS, Params

_ALPHA_GROUPS = ("alpha_coarse", "alpha_middle", "alpha_fine")


def lerp_params(a: Params, b: Params, t: float) -> Params:
    """The snapshot a fraction `t` (0..1) of the way from `a` to `b`; t >= 1 gives exactly `b`."""
    if t >= 1.0:
        return b
    t = max(0.0, float(t))
    out: dict[str, float | int | None] = {}
    for s in PARAMS:
        x, y = getattr(a, s.name), getattr(b, s.name)
        if s.kind == "int" or not s.live:
            out[s.name] = y
        elif x is None and y is None:
            out[s.name] = None
        else:
            if s.name in _ALPHA_GROUPS:
                x = a.alpha if x is None else x
                y = b.alpha if y is None else y
            out[s.name] = x + (y - x) * t
    return Params(**{n: out[n] for n in NAMES})


@dataclass(frozen=True)
class ParamFade:
    """A fade from `start` to `target` beginning at monotonic time `t0`, lasting `seconds` (0: a cut)."""

    start: Params
    target: Params
    t0: float
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if not (self.seconds >= 0.0):
            raise SoundvjError(f"crossfade: expected seconds >= 0, got {self.seconds!r}")

    def progress(self, now: float) -> float:
        if self.seconds <= 0:
            return 1.0
        return min(1.0, max(0.0, (now - self.t0) / self.seconds))

    def at(self, now: float) -> Params:
        return lerp_params(self.start, self.target, self.progress(now))

    def done(self, now: float) -> bool:
        return self.progress(now) >= 1.0
