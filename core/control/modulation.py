"""Modulators and the modulation matrix: parameters that move with the sound and the beat.

A `Modulation` moves one registry parameter by `depth` x the value of one source:
- audio sources, in [0, 1], read from `SoundFeatures`: "onset" (1 at each onset, decaying by e
  every `decay` seconds: a hit), "onset_strength", "envelope", "level", "low", "mid", "high";
- LFOs, in [-1, 1], read from the `BeatClock`: "sine", "saw" (rising), "square", "sample_hold" (a new
  value each cycle), one cycle every `beats` beats (1/4 beat to 4 bars), shifted by `offset` cycles.
  The sample-and-hold value is a hash of the cycle number and the target, so live and replay agree.

`ModulationMatrix.apply(params, features, clock, t)` gives each modulated parameter
base + sum(depth x source), clamped to the registry's range (whole-number parameters rounded); a
null alpha_coarse/middle/fine modulates from the `alpha` it stands for. Only `MODULATABLE` parameters
can be targets: the live ones outside the "audio" group, so a modulation never changes what the
sound models hear (gain, window length) and never restarts the stream (seed, fps).

Examples: noise bursts on each kick `Modulation("noise", "onset", 0.8)`, psi breathing with the
bass `Modulation("psi", "low", 0.4)`, a turn per bar `Modulation("rotate_deg", "saw", 180, beats=4)`.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

from core.control.beat_clock import BeatClock
from core.control.checks import checked_number
from core.control.sound_features import SoundFeatures
from core.errors import SoundvjError, short_repr, suggest
from core.params import NAMES, PARAMS, Params, spec

AUDIO_SOURCES = ("onset", "onset_strength", "envelope", "level", "low", "mid", "high")
LFO_SOURCES = ("sine", "saw", "square", "sample_hold")
SOURCES = AUDIO_SOURCES + LFO_SOURCES
MODULATABLE: tuple[str, ...] = tuple(s.name for s in PARAMS if s.live and s.group != "audio")
MAX_MODULATIONS = 64
BEATS_RANGE = (0.25, 16.0)  # an LFO cycle: a quarter beat to four bars of four
DECAY_RANGE = (0.01, 4.0)  # seconds
KEYS = ("target", "source", "depth", "beats", "offset", "decay")
_OPTION_SOURCES = {"beats": LFO_SOURCES, "offset": LFO_SOURCES, "decay": ("onset",)}
_ALPHA_FALLBACK = ("alpha_coarse", "alpha_middle", "alpha_fine")  # null = use alpha
_SPECS = {name: spec(name) for name in MODULATABLE}


def _why_not_modulatable(name: str) -> str:
    s = spec(name)
    if not s.live:
        return f"{name!r} restarts the stream when it changes"
    return f"{name!r} changes what the sound models hear"


def _number(where: str, key: str, value: Any, lo: float, hi: float, hi_open: bool = False) -> float:
    return checked_number(f"{where}.{key}", value, lo, hi, hi_open=hi_open)


def _check_fields(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The one validation of a modulation's fields; returns them coerced. `where` starts each message."""
    target, source = values["target"], values["source"]
    if not isinstance(target, str) or target not in MODULATABLE:
        if isinstance(target, str) and target in NAMES:
            allowed = ", ".join(MODULATABLE)
            raise SoundvjError(f"{where}.target = {target!r}: {_why_not_modulatable(target)}; modulate one of {allowed}")
        shown = short_repr(target) if isinstance(target, str) else f"{short_repr(target)} ({type(target).__name__})"
        raise SoundvjError(f"{where}.target = {shown}: not a parameter; {suggest(str(target)[:100], MODULATABLE)}")
    if not isinstance(source, str) or source not in SOURCES:
        raise SoundvjError(f"{where}.source = {short_repr(source)}: unknown source; {suggest(str(source)[:100], SOURCES)}")
    s = spec(target)
    span = float(s.maximum) - float(s.minimum)
    out = {
        "target": target,
        "source": source,
        "depth": _number(where, "depth", values["depth"], -span, span),
        "beats": _number(where, "beats", values["beats"], *BEATS_RANGE),
        "offset": _number(where, "offset", values["offset"], 0.0, 1.0, hi_open=True),
        "decay": _number(where, "decay", values["decay"], *DECAY_RANGE),
    }
    for option, sources in _OPTION_SOURCES.items():
        if source not in sources and out[option] != _DEFAULTS[option]:
            raise SoundvjError(
                f"{where}.{option}: applies to the {' / '.join(sources)} source{'s' if len(sources) > 1 else ''} "
                f"only, not {source!r}"
            )
    return out


@dataclass(frozen=True)
class Modulation:
    """`target` moves by `depth` (in the target's units) x `source`; see the module docstring."""

    target: str
    source: str
    depth: float
    beats: float = 1.0
    offset: float = 0.0
    decay: float = 0.2

    def __post_init__(self) -> None:
        checked = _check_fields({f.name: getattr(self, f.name) for f in fields(self)}, f"modulation {self.target!r}"
                                if isinstance(self.target, str) else "modulation")
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        # A per-target salt for sample-and-hold, stable across runs and machines (unlike hash()).
        object.__setattr__(self, "_salt", zlib.crc32(self.target.encode()))

    @classmethod
    def from_dict(cls, mapping: Any, source: str = "modulation") -> Modulation:
        """A modulation from a mapping like `to_dict()`'s; errors start with `source` (e.g.
        "look.yaml: modulations[2]") and name the field."""
        if not isinstance(mapping, Mapping):
            raise SoundvjError(
                f"{source}: expected a mapping with target, source and depth, got {type(mapping).__name__}"
            )
        for key in mapping:
            if key not in KEYS:
                raise SoundvjError(f"{source}: unknown key {short_repr(str(key))}; {suggest(str(key)[:100], KEYS)}")
        for key in ("target", "source", "depth"):
            if key not in mapping:
                raise SoundvjError(f"{source}: missing {key!r} (a modulation needs target, source and depth)")
        values = {**_DEFAULTS, **mapping}
        checked = _check_fields(values, source)
        return cls(**checked)

    def to_dict(self) -> dict[str, Any]:
        """target, source, depth and the options that apply to the source (a preset's entry)."""
        out: dict[str, Any] = {"target": self.target, "source": self.source, "depth": self.depth}
        for option, sources in _OPTION_SOURCES.items():
            if self.source in sources:
                out[option] = getattr(self, option)
        return out

    @property
    def is_lfo(self) -> bool:
        return self.source in LFO_SOURCES

    def value(self, features: SoundFeatures | None, clock: BeatClock | None, t: float) -> float:
        """The source's value at audio time `t` (before depth): [0, 1] for audio, [-1, 1] for LFOs;
        0 when the features (audio sources) or the clock (LFOs) are missing."""
        source = self.source
        if source in LFO_SOURCES:
            if clock is None:
                return 0.0
            cycle = clock.beat_at(t) / self.beats + self.offset
            where = cycle - math.floor(cycle)
            if source == "sine":
                return math.sin(2.0 * math.pi * where)
            if source == "saw":
                return 2.0 * where - 1.0
            if source == "square":
                return 1.0 if where < 0.5 else -1.0
            return _hash_unit(math.floor(cycle), self._salt)  # type: ignore[attr-defined]
        if features is None:
            return 0.0
        if source == "onset":
            last = features.last_onset
            if last is None or t < last:
                return 0.0
            return math.exp(-(t - last) / self.decay)
        return float(getattr(features, source))


_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Modulation) if f.name in ("beats", "offset", "decay")}


def _hash_unit(cycle: int, salt: int) -> float:
    """A value in [-1, 1) that depends only on (cycle, salt): splitmix64 of the pair."""
    x = (cycle * 0x9E3779B97F4A7C15 + salt) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 31
    return (x >> 11) / float(1 << 52) - 1.0


@dataclass(frozen=True)
class ModulationMatrix:
    """An immutable set of modulations (at most `MAX_MODULATIONS`), applied to parameter snapshots.

    Immutable so the control side can build a new matrix and hand it to the render thread in one
    reference (a latest-value slot), the way parameter snapshots travel.
    """

    modulations: tuple[Modulation, ...] = ()

    def __post_init__(self) -> None:
        items = tuple(self.modulations)
        for i, m in enumerate(items):
            if not isinstance(m, Modulation):
                raise SoundvjError(f"modulation matrix: entry {i} is a {type(m).__name__}, not a Modulation")
        if len(items) > MAX_MODULATIONS:
            raise SoundvjError(f"modulation matrix: {len(items)} modulations; at most {MAX_MODULATIONS}")
        object.__setattr__(self, "modulations", items)

    @classmethod
    def from_list(cls, items: Any, source: str = "modulations") -> ModulationMatrix:
        """From a list of mappings (a preset's `modulations:`); errors name `source[i]` and the field."""
        if not isinstance(items, (list, tuple)):
            raise SoundvjError(f"{source}: expected a list of modulations, got {type(items).__name__}")
        if len(items) > MAX_MODULATIONS:
            raise SoundvjError(f"{source}: {len(items)} modulations; at most {MAX_MODULATIONS}")
        return cls(tuple(Modulation.from_dict(item, f"{source}[{i}]") for i, item in enumerate(items)))

    def to_list(self) -> list[dict[str, Any]]:
        return [m.to_dict() for m in self.modulations]

    def __len__(self) -> int:
        return len(self.modulations)

    def __iter__(self) -> Iterator[Modulation]:
        return iter(self.modulations)

    @property
    def targets(self) -> tuple[str, ...]:
        """The parameters this matrix moves, in registry order."""
        moved = {m.target for m in self.modulations}
        return tuple(n for n in NAMES if n in moved)

    def added(self, modulation: Modulation) -> ModulationMatrix:
        return ModulationMatrix((*self.modulations, modulation))

    def removed(self, index: int) -> ModulationMatrix:
        self._check_index(index)
        return ModulationMatrix(self.modulations[:index] + self.modulations[index + 1:])

    def replaced(self, index: int, **changes: Any) -> ModulationMatrix:
        """A copy with modulation `index`'s fields changed (validated, e.g. depth from a knob)."""
        self._check_index(index)
        old = self.modulations[index]
        for key in changes:
            if key not in KEYS:
                raise SoundvjError(f"modulation {index}: unknown field {short_repr(key)}; {suggest(key[:100], KEYS)}")
        fields_now = _full_dict(old)
        if "source" in changes:  # options of the old source do not carry over to a new one
            fields_now = {k: v for k, v in fields_now.items() if k not in _OPTION_SOURCES}
        new = Modulation.from_dict({**fields_now, **changes}, f"modulation {index}")
        return ModulationMatrix(self.modulations[:index] + (new,) + self.modulations[index + 1:])

    def _check_index(self, index: int) -> None:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self.modulations):
            raise SoundvjError(f"modulation matrix: no modulation {short_repr(index)} (it has {len(self.modulations)})")

    def apply(self, params: Params, features: SoundFeatures | None, clock: BeatClock | None, t: float) -> Params:
        """`params` with each target at base + sum(depth x source) at audio time `t`, clamped to
        the registry's range; parameters no modulation targets keep their values."""
        if not self.modulations:
            return params
        sums: dict[str, float] = {}
        for m in self.modulations:
            sums[m.target] = sums.get(m.target, 0.0) + m.depth * m.value(features, clock, t)
        changes: dict[str, float | int] = {}
        for name, delta in sums.items():
            s = _SPECS[name]
            base = getattr(params, name)
            if base is None:
                if name not in _ALPHA_FALLBACK:
                    continue
                base = params.alpha
            value = base + delta
            if not math.isfinite(value):
                continue
            value = min(max(value, s.minimum), s.maximum)
            changes[name] = round(value) if s.kind == "int" else value
        return params.replace(**changes)


def _full_dict(m: Modulation) -> dict[str, Any]:
    return {f.name: getattr(m, f.name) for f in fields(m)}
