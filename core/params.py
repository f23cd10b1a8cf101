"""The performer's parameters: ONE registry that presets, UI sliders, CLI flags and tests all read.

`PARAMS` describes each knob (type, default, range, group, label, unit, whether it can change while
playing). `Params` is the validated value object holding one setting of every knob. Every check of a
user-supplied value goes through `ParamSpec.check`, so a preset, a flag and a slider are held to the
same rules and produce the same one-line `SoundvjError`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from core.errors import SoundvjError, format_number, short_repr, suggest

GROUPS = ("motion", "image", "audio", "timing")  # display order for the UI

Value = float | int | None


@dataclass(frozen=True)
class ParamSpec:
    """One knob: what it is, what it accepts, and how the UI/CLI should present it."""

    name: str
    kind: Literal["float", "int"]
    default: Value
    minimum: float | int
    maximum: float | int
    group: str
    label: str
    description: str
    unit: str = ""
    live: bool = True  # False: changing it restarts the stream (frame clock / latent sequence)
    nullable: bool = False  # None allowed; its meaning is given in `null_meaning`
    null_meaning: str = ""

    def __post_init__(self) -> None:
        # These are programmer errors in the registry itself, so plain ValueError, not SoundvjError.
        if self.kind not in ("float", "int"):
            raise ValueError(f"ParamSpec {self.name}: kind must be 'float' or 'int', got {self.kind!r}")
        if self.group not in GROUPS:
            raise ValueError(f"ParamSpec {self.name}: group {self.group!r} not in {GROUPS}")
        if not self.minimum < self.maximum:
            raise ValueError(f"ParamSpec {self.name}: minimum must be below maximum")
        if self.nullable and not self.null_meaning:
            raise ValueError(f"ParamSpec {self.name}: a nullable spec must say what null means")
        self.check(self.default, source=f"ParamSpec {self.name}")

    @property
    def range_text(self) -> str:
        return f"[{format_number(self.minimum)}, {format_number(self.maximum)}]"

    @property
    def cli_flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any, source: str, key: str | None = None) -> Value:
        """Return `value` coerced to this spec's type, or raise a one-line `SoundvjError`.

        `source` names where the value came from (a file, "command line"); `key` overrides how the
        parameter is named in the message (e.g. the CLI flag).
        """
        key = key or self.name
        where = f"{source}: {key} = {short_repr(value)}"
        if value is None:
            if self.nullable:
                return None
            raise SoundvjError(f"{where}: must be a number in {self.range_text}, not null")
        # bool is an int subclass; `alpha: yes` in YAML must not silently become 1.0.
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            expected = "a whole number" if self.kind == "int" else "a number"
            if self.nullable:
                expected += f" or null ({self.null_meaning})"
            raise SoundvjError(f"{where}: must be {expected} in {self.range_text}, not {type(value).__name__}")
        if isinstance(value, numbers.Integral):
            # Compare exactly: float() of a 400-digit integer raises OverflowError.
            if not self.minimum <= int(value) <= self.maximum:
                raise SoundvjError(f"{where}: out of range; allowed {self.range_text}")
        elif not math.isfinite(float(value)):
            raise SoundvjError(f"{where}: must be a finite number in {self.range_text}")
        if self.kind == "int":
            if not isinstance(value, numbers.Integral):
                if not float(value).is_integer():
                    raise SoundvjError(f"{where}: must be a whole number in {self.range_text}")
            coerced: float | int = int(value)
        else:
            coerced = float(value)
        if not self.minimum <= coerced <= self.maximum:
            raise SoundvjError(f"{where}: out of range; allowed {self.range_text}")
        return coerced


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "alpha", "float", 0.4, 0.0, 1.0, "motion", "Style change",
        "Blend toward the new sound latent each frame; larger = more style change per frame "
        "(official inference uses 0.4).",
    ),
    ParamSpec(
        "alpha_coarse", "float", None, 0.0, 1.0, "motion", "Coarse change",
        "Blend for the coarse styles 0-3 (roughly: layout).",
        nullable=True, null_meaning="null = use alpha",
    ),
    ParamSpec(
        "alpha_middle", "float", None, 0.0, 1.0, "motion", "Middle change",
        "Blend for the middle styles 4-7 (roughly: shapes).",
        nullable=True, null_meaning="null = use alpha",
    ),
    ParamSpec(
        "alpha_fine", "float", None, 0.0, 1.0, "motion", "Fine change",
        "Blend for the fine styles 8-15 (roughly: colour, texture).",
        nullable=True, null_meaning="null = use alpha",
    ),
    ParamSpec(
        "noise", "float", 0.3, 0.0, 2.0, "motion", "Noise",
        "Std of the 512-d noise vector fed into the stepper's last FC layer.",
    ),
    ParamSpec(
        "focus", "float", 4.0, 0.0, 10.0, "motion", "Scene focus",
        "How firmly the picture settles on the kind of sound it hears most: 1 blends the model's kinds "
        "of scene as it learned them, higher commits to the likeliest, 0 blends all alike. Models "
        "without kinds of scene ignore it.",
    ),
    ParamSpec(
        "seed", "int", 0, 0, 2**31 - 1, "motion", "Seed",
        "Seed for the first latent and the noise stream.",
        live=False,
    ),
    ParamSpec(
        "psi", "float", 0.7, 0.0, 1.5, "image", "Truncation",
        "Truncation toward the average latent (w_avg); lower = safer, higher = wilder.",
    ),
    ParamSpec(
        "rotate_deg", "float", 0.0, -180.0, 180.0, "image", "Rotate",
        "Rotation of the StyleGAN3 input transform.",
        unit="deg",
    ),
    ParamSpec(
        "pan_x", "float", 0.0, -1.0, 1.0, "image", "Pan X",
        "Horizontal translation of the StyleGAN3 input transform, in image widths.",
        unit="widths",
    ),
    ParamSpec(
        "pan_y", "float", 0.0, -1.0, 1.0, "image", "Pan Y",
        "Vertical translation of the StyleGAN3 input transform, in image widths.",
        unit="widths",
    ),
    ParamSpec(
        "gain_db", "float", 0.0, -40.0, 40.0, "audio", "Input gain",
        "Input gain: shifts the sound level the sound models hear (digital silence stays silent).",
        unit="dB",
    ),
    ParamSpec(
        "window_seconds", "float", 1.0, 0.1, 4.0, "audio", "Window",
        "Seconds of audio each frame sees, ending at the frame's time.",
        unit="s",  # live: the windower keeps mel history for the longest window and just re-slices
    ),
    ParamSpec(
        "fps", "float", 24.0, 1.0, 120.0, "timing", "Frame rate",
        "Frames generated per second.",
        unit="fps", live=False,
    ),
)

_BY_NAME: dict[str, ParamSpec] = {s.name: s for s in PARAMS}
NAMES: tuple[str, ...] = tuple(_BY_NAME)


def spec(name: str) -> ParamSpec:
    """The registry entry for `name` (unknown names raise with a suggestion)."""
    check_known_names([name], source="parameter registry")
    return _BY_NAME[name]


def check_known_names(keys: Iterable[Any], source: str, what: str = "parameter") -> None:
    for key in keys:
        if key not in _BY_NAME:
            name = short_repr(key) if isinstance(key, str) else short_repr(str(key))
            raise SoundvjError(f"{source}: unknown {what} {name}; {suggest(str(key)[:100], NAMES)}")


def validate_values(values: Mapping[Any, Any], source: str) -> dict[str, Value]:
    """Check names and values of a (partial) mapping; return it coerced, in registry order."""
    if not isinstance(values, Mapping):
        raise SoundvjError(f"{source}: expected a mapping of parameter names to values, got {type(values).__name__}")
    check_known_names(values, source)
    return {s.name: s.check(values[s.name], source) for s in PARAMS if s.name in values}


def _default(name: str) -> Any:
    return _BY_NAME[name].default


@dataclass(frozen=True)
class Params:
    """One validated setting of every knob. Field names are exactly the registry's names."""

    alpha: float = _default("alpha")
    alpha_coarse: float | None = _default("alpha_coarse")
    alpha_middle: float | None = _default("alpha_middle")
    alpha_fine: float | None = _default("alpha_fine")
    noise: float = _default("noise")
    focus: float = _default("focus")
    seed: int = _default("seed")
    psi: float = _default("psi")
    rotate_deg: float = _default("rotate_deg")
    pan_x: float = _default("pan_x")
    pan_y: float = _default("pan_y")
    gain_db: float = _default("gain_db")
    window_seconds: float = _default("window_seconds")
    fps: float = _default("fps")

    def __post_init__(self) -> None:
        coerced = validate_values({f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, "Params")
        for name, value in coerced.items():
            object.__setattr__(self, name, value)  # frozen: the only sanctioned write

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], source: str = "<mapping>") -> Params:
        """Defaults overridden by `mapping`; errors name `source`."""
        return cls(**validate_values(mapping, source))

    def replace(self, **changes: Any) -> Params:
        """A copy with `changes` applied (validated; unknown names rejected)."""
        return dataclasses.replace(self, **validate_values(changes, "Params.replace"))

    def to_dict(self) -> dict[str, Value]:
        return {name: getattr(self, name) for name in NAMES}

    def alphas(self) -> tuple[float, float, float]:
        """(coarse, middle, fine) blend factors, each falling back to `alpha` when unset."""
        return tuple(  # type: ignore[return-value]
            self.alpha if a is None else a for a in (self.alpha_coarse, self.alpha_middle, self.alpha_fine)
        )

    def diff(self, other: Params) -> dict[str, tuple[Value, Value]]:
        """{name: (self's value, other's value)} for every parameter that differs."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {n: (mine[n], theirs[n]) for n in NAMES if mine[n] != theirs[n]}

    def affects_reset(self, other: Params) -> bool:
        """True if going from self to other restarts the stream (a non-live parameter changed)."""
        return any(not _BY_NAME[n].live for n in self.diff(other))


# --- command line --------------------------------------------------------------------------------

class _NullFlag:
    """Marks `--alpha-coarse none` (explicitly unset), distinct from argparse's None (flag not given)."""

    def __repr__(self) -> str:
        return "none"


NULL_FLAG = _NullFlag()


def _cli_type(s: ParamSpec):
    def parse(text: str) -> float | int | _NullFlag:
        if s.nullable and text.strip().lower() in ("none", "null"):
            return NULL_FLAG
        try:
            return int(text) if s.kind == "int" else float(text)
        except ValueError:
            kind = "a whole number" if s.kind == "int" else "a number"
            extra = " or 'none'" if s.nullable else ""
            raise argparse.ArgumentTypeError(
                f"expected {kind}{extra} in {s.range_text}, got {short_repr(text)}"
            ) from None

    parse.__name__ = s.kind  # argparse shows this name in "invalid <name> value" messages
    return parse


def add_cli_arguments(parser: argparse.ArgumentParser, names: Iterable[str] | None = None) -> None:
    """Add `--alpha`, `--window-seconds`, ... for `names` (default: all) with range and default in help.

    Defaults are None so `params_from_cli` can tell "not given" from "given the default value".
    """
    chosen = NAMES if names is None else tuple(names)
    check_known_names(chosen, source="add_cli_arguments")
    for name in chosen:
        s = _BY_NAME[name]
        unit = f" {s.unit}" if s.unit else ""
        # On the command line the unset value is spelled "none" (YAML's is "null").
        default = s.null_meaning.replace("null", "none") if s.default is None else f"default {format_number(s.default)}"
        restart = "" if s.live else " Restarts the stream."
        help_text = f"{s.description}{restart} Range {s.range_text}{unit}; {default}."
        parser.add_argument(
            s.cli_flag, dest=name, type=_cli_type(s), default=None,
            metavar="X|none" if s.nullable else "N" if s.kind == "int" else "X",
            help=help_text.replace("%", "%%"),
        )


def params_from_cli(args: argparse.Namespace, base: Params, source: str = "command line") -> Params:
    """`base` with only the flags that were actually given applied (range-checked, naming the flag)."""
    changes: dict[str, Value] = {}
    for s in PARAMS:
        given = getattr(args, s.name, None)
        if given is None:
            continue
        changes[s.name] = None if given is NULL_FLAG else s.check(given, source, key=s.cli_flag)
    return base.replace(**changes)


def params_markdown_table() -> str:
    """The parameter table as Markdown (presets/README.md embeds it; a test keeps them identical)."""
    rows = [
        "| name | type | default | range | unit | group | live | description |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in PARAMS:
        default = "null" if s.default is None else format_number(s.default)
        desc = s.description + (f" ({s.null_meaning})" if s.nullable else "")
        rows.append(
            f"| `{s.name}` | {s.kind} | {default} | {s.range_text} | {s.unit} | {s.group} | "
            f"{'yes' if s.live else 'no (restarts)'} | {desc} |"
        )
    return "\n".join(rows)
