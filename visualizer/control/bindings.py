"""Bindings: which control source moves which target, and how a control's value maps onto the target.

A `Binding` joins a `ControlSource` (a MIDI CC or note, an OSC address, a key, a modulator: the
sound's onsets, the beat or bar of the beat clock, or a band level) to a `ControlTarget`
(a registry parameter, a preset by number or name, the next/previous preset, tap, record, freeze,
the fade time). Targets with a range (a parameter, the fade time) take the control's value: a CC's
0..127 (or an OSC fader's 0..1) becomes x in [0, 1], which is inverted if asked, shaped by the curve,
and spread over [minimum, maximum] (by default the parameter's whole registry range). The other
targets are actions: they fire when the control is pressed (a note on, a key, an OSC message with no
argument or one >= 0.5, a CC going from below half to half or above).

Everything here is plain frozen data checked when it is made, so a binding read from the mapping file,
made by MIDI learn or built in a test is held to the same rules, with one-line `SoundvjError`s.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal

from core.errors import SoundvjError, format_number, short_repr, suggest
from core.params import NAMES, spec

SOURCE_KINDS = ("cc", "note", "osc", "key", "modulator")
# What a modulator source follows: events fire an action each time they happen; levels (0..1) move a
# parameter or fire an action when they rise past half.
MODULATOR_EVENTS = ("onset", "beat", "bar")
MODULATOR_LEVELS = ("level", "low", "mid", "high", "envelope", "onset_strength")
MODULATOR_SIGNALS = (*MODULATOR_EVENTS, *MODULATOR_LEVELS)
ACTIONS = ("next_preset", "previous_preset", "tap", "record", "freeze")
TARGET_KINDS = ("param", "preset", "fade", *ACTIONS)
CURVES = ("linear", "exp", "log")
MAX_FADE_SECONDS = 30.0  # the crossfade time a control can set; the window's fade box has the same range
RESERVED_OSC_PREFIX = "/soundvj/"  # the built-in addresses; a binding cannot take them over
MAX_OSC_ADDRESS = 200
MAX_KEY_NAME = 20
CURVE_STEEPNESS = 4.0  # "exp": x -> (2^(k x) - 1) / (2^k - 1); "log" is its inverse
PRESS_LEVEL = 0.5  # a control at or above half way counts as pressed (buttons send 0/127 or 0/1)

SourceKind = Literal["cc", "note", "osc", "key", "modulator"]
Curve = Literal["linear", "exp", "log"]


def _whole_number(value: Any, lo: int, hi: int, where: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= int(value) <= hi:
        raise SoundvjError(f"{where}: {what} = {short_repr(value)}: must be a whole number in [{lo}, {hi}]")
    return int(value)


@dataclass(frozen=True)
class ControlSource:
    """Where a control comes from.

    `kind` "cc" or "note": `number` 0-127 and `channel` 1-16 (None: any channel). "osc": `address`
    (not under /soundvj/, which the built-in table owns). "key": `key`, a key's name as the window
    reports it, compared without case. "modulator": `signal`, one of MODULATOR_SIGNALS.
    """

    kind: SourceKind
    number: int | None = None
    channel: int | None = None
    address: str | None = None
    key: str | None = None
    signal: str | None = None

    def __post_init__(self) -> None:
        where = "binding source"
        if self.kind not in SOURCE_KINDS:
            raise SoundvjError(f"{where}: kind {short_repr(self.kind)}; {suggest(str(self.kind), SOURCE_KINDS)}")
        extra = {"number": self.number, "channel": self.channel, "address": self.address, "key": self.key,
                 "signal": self.signal}
        needs = {"cc": ("number", "channel"), "note": ("number", "channel"), "osc": ("address",), "key": ("key",),
                 "modulator": ("signal",)}
        for name, value in extra.items():
            if name not in needs[self.kind] and value is not None:
                raise SoundvjError(f"{where}: a {self.kind} source has no {name!r}")
        if self.kind in ("cc", "note"):
            _whole_number(self.number, 0, 127, where, f"{self.kind} number")
            if self.channel is not None:
                _whole_number(self.channel, 1, 16, where, "channel")
        elif self.kind == "osc":
            address = self.address
            if (not isinstance(address, str) or not address.startswith("/") or len(address) > MAX_OSC_ADDRESS
                    or not address.isascii() or not address.isprintable() or " " in address or "#" in address):
                raise SoundvjError(f"{where}: osc address {short_repr(address)}: must start with '/', "
                                   f"printable ASCII without spaces or '#', at most {MAX_OSC_ADDRESS} characters")
            if address.startswith(RESERVED_OSC_PREFIX) or address == RESERVED_OSC_PREFIX.rstrip("/"):
                raise SoundvjError(f"{where}: osc address {address}: {RESERVED_OSC_PREFIX}... is the built-in "
                                   "table (see docs/controllers.md); bind another address")
        elif self.kind == "modulator":
            if self.signal not in MODULATOR_SIGNALS:
                raise SoundvjError(f"{where}: modulator {short_repr(self.signal)}; "
                                   f"{suggest(str(self.signal)[:100], MODULATOR_SIGNALS)}")
        else:
            key = self.key
            if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_NAME or not key.isprintable():
                raise SoundvjError(f"{where}: key {short_repr(key)}: must be a key name of 1-{MAX_KEY_NAME} "
                                   "printable characters")
            object.__setattr__(self, "key", key.strip().lower())

    def matches(self, other: ControlSource) -> bool:
        """True if an event from `other` (always with its channel) is for this source (channel None = any)."""
        if self.kind != other.kind:
            return False
        if self.kind in ("cc", "note"):
            return self.number == other.number and self.channel in (None, other.channel)
        return self.address == other.address and self.key == other.key and self.signal == other.signal

    def describe(self) -> str:
        """How a performer reads it: "CC 21 (ch 1)", "note 36 (any channel)", "OSC /1/fader1", "key t"."""
        if self.kind in ("cc", "note"):
            channel = "any channel" if self.channel is None else f"ch {self.channel}"
            return f"{'CC' if self.kind == 'cc' else 'note'} {self.number} ({channel})"
        if self.kind == "osc":
            return f"OSC {self.address}"
        if self.kind == "modulator":
            return f"modulator {self.signal}"
        return f"key {self.key}"

    def to_dict(self) -> dict[str, Any]:
        """The mapping file's form: {cc: 21, channel: 1}, {note: 36}, {osc: /x}, {key: t}."""
        if self.kind in ("cc", "note"):
            out: dict[str, Any] = {self.kind: self.number}
            if self.channel is not None:
                out["channel"] = self.channel
            return out
        return {self.kind: {"osc": self.address, "key": self.key, "modulator": self.signal}[self.kind]}

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> ControlSource:
        """Read the mapping file's form (see `to_dict`); errors name `where`."""
        if not isinstance(doc, dict):
            raise SoundvjError(f"{where}: source must be a mapping like {{cc: 21}}, {{note: 36}}, "
                               f"{{osc: /fader1}} or {{key: t}}, got {type(doc).__name__}")
        kinds = [k for k in doc if k in SOURCE_KINDS]
        unknown = [k for k in doc if k not in SOURCE_KINDS and k != "channel"]
        if unknown:
            raise SoundvjError(f"{where}: unknown source key {short_repr(str(unknown[0]))}; "
                               f"{suggest(str(unknown[0])[:100], (*SOURCE_KINDS, 'channel'))}")
        if len(kinds) != 1:
            raise SoundvjError(f"{where}: source needs exactly one of {', '.join(SOURCE_KINDS)}, got {len(kinds)}")
        kind = kinds[0]
        try:
            if kind in ("cc", "note"):
                return cls(kind, number=doc[kind], channel=doc.get("channel"))
            if "channel" in doc:
                raise SoundvjError(f"a {kind} source has no 'channel'")
            if kind == "modulator":
                return cls(kind, signal=doc[kind])
            return cls(kind, address=doc[kind]) if kind == "osc" else cls(kind, key=doc[kind])
        except SoundvjError as e:
            raise SoundvjError(f"{where}: {str(e).removeprefix('binding source: ')}") from None


@dataclass(frozen=True)
class ControlTarget:
    """What a control moves: `kind` "param" (`param` names a registry parameter), "preset" (`preset`:
    a number from 1, in the preset list's order, or a name), "fade" (the crossfade time, seconds), or
    an action: "next_preset", "previous_preset", "tap", "record" (start/stop), "freeze" (on/off)."""

    kind: str
    param: str | None = None
    preset: int | str | None = None

    def __post_init__(self) -> None:
        where = "binding target"
        if self.kind not in TARGET_KINDS:
            raise SoundvjError(f"{where}: {short_repr(self.kind)}; {suggest(str(self.kind)[:100], TARGET_KINDS)}")
        if self.kind == "param":
            if self.param not in NAMES:
                raise SoundvjError(f"{where}: unknown parameter {short_repr(self.param)}; "
                                   f"{suggest(str(self.param)[:100], NAMES)}")
        elif self.param is not None:
            raise SoundvjError(f"{where}: a {self.kind} target has no parameter")
        if self.kind == "preset":
            p = self.preset
            if isinstance(p, str):
                if not p.strip() or len(p) > 100 or not p.isprintable():
                    raise SoundvjError(f"{where}: preset name {short_repr(p)}: must be 1-100 printable characters")
            else:
                _whole_number(p, 1, 999, where, "preset number")
        elif self.preset is not None:
            raise SoundvjError(f"{where}: a {self.kind} target has no preset")

    @property
    def continuous(self) -> bool:
        """True for targets that take a value (a parameter, the fade time); False for actions."""
        return self.kind in ("param", "fade")

    def value_range(self) -> tuple[float, float]:
        """The range a control's value spreads over by default: the registry's, or [0, 30] s of fade."""
        if self.kind == "param":
            s = spec(self.param)
            return float(s.minimum), float(s.maximum)
        if self.kind == "fade":
            return 0.0, MAX_FADE_SECONDS
        raise ValueError(f"{self.kind} is an action; it has no range")

    def describe(self) -> str:
        """"psi", "preset 3", "preset storm", "fade time", "next preset", ..."""
        if self.kind == "param":
            return str(self.param)
        if self.kind == "preset":
            return f"preset {self.preset}"
        if self.kind == "fade":
            return "fade time"
        return self.kind.replace("_", " ")

    def to_yaml(self) -> Any:
        """The mapping file's form: {param: psi}, {preset: 3}, fade, tap, next_preset, ..."""
        if self.kind == "param":
            return {"param": self.param}
        if self.kind == "preset":
            return {"preset": self.preset}
        return self.kind

    @classmethod
    def from_yaml(cls, doc: Any, where: str) -> ControlTarget:
        """Read the mapping file's form (see `to_yaml`); errors name `where`."""
        try:
            if isinstance(doc, str):
                if doc in ("param", "preset"):
                    raise SoundvjError(f"{doc!r} needs a value, e.g. {{param: psi}} or {{preset: 2}}")
                return cls(doc)
            if isinstance(doc, dict) and len(doc) == 1:
                (key, value), = doc.items()
                if key == "param":
                    return cls("param", param=value)
                if key == "preset":
                    return cls("preset", preset=value)
                raise SoundvjError(f"unknown target key {short_repr(str(key))}; {suggest(str(key)[:100], ('param', 'preset'))}")
        except SoundvjError as e:
            raise SoundvjError(f"{where}: {str(e).removeprefix('binding target: ')}") from None
        raise SoundvjError(f"{where}: target must be {{param: NAME}}, {{preset: N or NAME}} or one of "
                           f"{', '.join(k for k in TARGET_KINDS if k not in ('param', 'preset'))}; "
                           f"got {short_repr(doc)}")


def shape(x: float, curve: str) -> float:
    """`x` in [0, 1] through the curve: "linear" as is, "exp" slow then fast (fine control at the low
    end, for knobs whose effect grows quickly), "log" fast then slow. Both ends stay put."""
    if curve == "exp":
        return (2.0 ** (CURVE_STEEPNESS * x) - 1.0) / (2.0 ** CURVE_STEEPNESS - 1.0)
    if curve == "log":
        return math.log2(1.0 + x * (2.0 ** CURVE_STEEPNESS - 1.0)) / CURVE_STEEPNESS
    return x


@dataclass(frozen=True)
class Binding:
    """A source bound to a target, with how the source's value maps onto the target's range.

    `minimum`/`maximum` (None: the target's own range) must lie in that range; `invert` turns the
    control round; `curve` shapes the travel. They are refused on action targets, where they mean
    nothing.
    """

    source: ControlSource
    target: ControlTarget
    minimum: float | None = None
    maximum: float | None = None
    invert: bool = False
    curve: Curve = "linear"

    def __post_init__(self) -> None:
        where = f"binding {self.source.describe()} -> {self.target.describe()}"
        if not isinstance(self.invert, bool):
            raise SoundvjError(f"{where}: invert = {short_repr(self.invert)}: must be true or false")
        if self.curve not in CURVES:
            raise SoundvjError(f"{where}: curve {short_repr(self.curve)}; {suggest(str(self.curve)[:100], CURVES)}")
        if not self.target.continuous:
            if self.minimum is not None or self.maximum is not None or self.invert or self.curve != "linear":
                raise SoundvjError(f"{where}: min, max, invert and curve apply to a parameter or the fade time, "
                                   f"not to {self.target.describe()}")
            return
        lo, hi = self.target.value_range()
        for name in ("minimum", "maximum"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) \
                    or not lo <= float(value) <= hi:
                raise SoundvjError(f"{where}: {name[:3]} = {short_repr(value)}: must be a number in "
                                   f"[{format_number(lo)}, {format_number(hi)}]")
            object.__setattr__(self, name, float(value))
        if self.low >= self.high:
            raise SoundvjError(f"{where}: min ({format_number(self.low)}) must be below max "
                               f"({format_number(self.high)}); use invert to turn the control round")

    @property
    def low(self) -> float:
        """The value at the control's bottom (before invert)."""
        return self.target.value_range()[0] if self.minimum is None else self.minimum

    @property
    def high(self) -> float:
        """The value at the control's top (before invert)."""
        return self.target.value_range()[1] if self.maximum is None else self.maximum

    def value_for(self, x: float) -> float:
        """The target value for a control at `x` in [0, 1] (outside it is clamped; NaN is the caller's to refuse)."""
        x = min(1.0, max(0.0, x))
        if self.invert:
            x = 1.0 - x
        return self.low + (self.high - self.low) * shape(x, self.curve)

    def to_dict(self) -> dict[str, Any]:
        """The mapping file's form of this binding (options only when they differ from the defaults)."""
        out: dict[str, Any] = {"source": self.source.to_dict(), "target": self.target.to_yaml()}
        if self.minimum is not None:
            out["min"] = self.minimum
        if self.maximum is not None:
            out["max"] = self.maximum
        if self.invert:
            out["invert"] = True
        if self.curve != "linear":
            out["curve"] = self.curve
        return out

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> Binding:
        """Read one entry of the mapping file's `bindings:` list; errors name `where`."""
        keys = ("source", "target", "min", "max", "invert", "curve")
        if not isinstance(doc, dict):
            raise SoundvjError(f"{where}: expected a mapping with 'source' and 'target', got {type(doc).__name__}")
        for key in doc:
            if key not in keys:
                raise SoundvjError(f"{where}: unknown key {short_repr(str(key))}; {suggest(str(key)[:100], keys)}")
        for key in ("source", "target"):
            if key not in doc:
                raise SoundvjError(f"{where}: missing {key!r}")
        source = ControlSource.from_dict(doc["source"], where)
        target = ControlTarget.from_yaml(doc["target"], where)
        try:
            return cls(source, target, minimum=doc.get("min"), maximum=doc.get("max"),
                       invert=doc.get("invert", False), curve=doc.get("curve", "linear"))
        except SoundvjError as e:
            raise SoundvjError(f"{where}: {e}") from None
