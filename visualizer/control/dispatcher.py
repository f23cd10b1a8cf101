"""The dispatcher: the one entry point every control source calls (OSC thread, MIDI thread, keys, UI).

It looks a source's event up in the bindings, turns the value into the target's (through the
binding's min/max/invert/curve), checks it against the registry, and hands the effect to the
`ControlSurface` (the `LiveSession`), whose methods post parameter snapshots and events into the
render worker's mailboxes and return at once. So a source thread never waits on a frame and never
touches the pipeline.

Every value goes through `core.params`: a number outside the range is clamped to it, anything else
that the registry refuses (NaN, inf, a string, a fraction for a whole-number knob) is dropped. Both
are counted and reported by `RateLimitedReporter` as one-line messages; no public method raises, so
a bad packet or a bug in a target can never end the thread that called.

MIDI learn is a mode of the dispatcher: `learn(target)` arms it, and the next CC or note on that
arrives (or a message with a value to an OSC address nothing is bound to) is bound to that target,
replacing what that control did and what another control of its kind did for that target; the
mapping file is saved, and the value applied. Bindings live apart from presets, so they keep
working whatever preset loads.
"""

from __future__ import annotations

import math
import numbers
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from core.control import MODULATABLE, SOURCES, ModulationMatrix
from core.errors import SoundvjError, format_number, one_line, short_repr, suggest
from core.params import NAMES, Params, Value, spec
from core.presets import Preset
from visualizer.control.bindings import (
    MAX_FADE_SECONDS,
    PRESS_LEVEL,
    Binding,
    ControlSource,
    ControlTarget,
)
from visualizer.control.mapping_file import load_mapping, save_mapping
from visualizer.control.reporting import RateLimitedReporter
from visualizer.control.sink_thread import SinkThread

BEATS_PER_BAR = 4  # a bar for the "bar" modulator source, as Ableton Link's quantum

MIDI_FULL_SCALE = 127.0


class ControlSurface(Protocol):
    """What the dispatcher drives: `visualizer.session.LiveSession`. Every method returns at once."""

    presets: list[Preset]
    look: str
    fade_seconds: float

    def change_params(self, changes: Mapping[str, Value]) -> Params: ...

    def apply_preset(self, preset: Preset, fade_seconds: float | None = None) -> Params | None: ...

    def tap(self, at: float | None = None) -> None: ...

    def toggle_recording(self) -> None: ...

    def toggle_freeze(self) -> bool: ...

    def message(self, text: str) -> None: ...

    def set_modulation_depth(self, target: str, source: str, depth: float) -> ModulationMatrix: ...


class MidiMessage(Protocol):
    """A CC or note event as the MIDI input delivers it (`visualizer.control.midi.MidiEvent`)."""

    kind: str  # "cc", "note_on", "note_off"
    channel: int  # 1-16
    number: int  # 0-127
    value: int  # 0-127 (velocity for notes)
    received_at: float  # time.monotonic() at arrival


def _index(bindings: Sequence[Binding]) -> dict[tuple, tuple[Binding, ...]]:
    table: dict[tuple, list[Binding]] = {}
    for b in bindings:
        s = b.source
        key = (s.kind, s.number) if s.kind in ("cc", "note") else (s.kind, s.address or s.key or s.signal)
        table.setdefault(key, []).append(b)
    return {k: tuple(v) for k, v in table.items()}


class ControlDispatcher:
    """Routes control events to targets; see the module docstring. Safe to call from any thread."""

    def __init__(
        self,
        surface: ControlSurface,
        mapping_path: str | Path | None = None,
        reporter: RateLimitedReporter | None = None,
    ) -> None:
        self.surface = surface
        self.mapping_path = Path(mapping_path).expanduser() if mapping_path is not None else None
        self.reporter = reporter or RateLimitedReporter(surface.message)
        self.on_learned: Callable[[Binding], Any] | None = None  # e.g. the window's learn dialog
        self._lock = threading.Lock()  # guards the bindings' replacement and the learn target
        self._bindings: tuple[Binding, ...] = ()
        self._table: dict[tuple, tuple[Binding, ...]] = {}
        self._learning: ControlTarget | None = None
        self._pressed: dict[tuple, bool] = {}
        self._last_modulator_frame: tuple[Any, Any] | None = None  # the previous frame's (features, clock)
        self._action_targets: dict[str, ControlTarget] = {}  # (channel, cc number) -> pressed, for CCs that fire actions

    # -- bindings -----------------------------------------------------------------------------------

    @property
    def bindings(self) -> tuple[Binding, ...]:
        """The bindings in use, in the mapping file's order."""
        return self._bindings

    def set_bindings(self, bindings: Sequence[Binding], save: bool = False) -> bool:
        """Use `bindings` from now on; `save` also writes them to the mapping file (False, with a
        message, if that fails: the bindings are in use all the same)."""
        bindings = tuple(bindings)
        with self._lock:
            self._bindings, self._table = bindings, _index(bindings)
            self._pressed.clear()
        return self.save_mapping() if save else True

    def load_mapping(self, missing_ok: bool = True) -> bool:
        """(Re)read the mapping file. A broken file gives a message and the bindings in use stay;
        a missing one (with `missing_ok`) leaves them as they are silently. True if the file was read."""
        path = self.mapping_path
        if path is None:
            return False
        if missing_ok and not path.exists():
            return False
        try:
            bindings = load_mapping(path)
        except SoundvjError as e:
            kept = len(self._bindings)
            self.reporter.say(f"{e} (kept the {kept} binding{'s' if kept != 1 else ''} in use)")
            return False
        self.set_bindings(bindings)
        return True

    def save_mapping(self) -> bool:
        """Write the bindings in use to the mapping file; False (with a message) if that fails."""
        if self.mapping_path is None:
            return False
        try:
            save_mapping(self.mapping_path, self._bindings)
        except SoundvjError as e:
            self.reporter.say(str(e))
            return False
        return True

    def bind(self, binding: Binding, save: bool = True) -> None:
        """Add `binding`, replacing any binding of the same source to the same target."""
        kept = [b for b in self._bindings if (b.source, b.target) != (binding.source, binding.target)]
        self.set_bindings([*kept, binding], save=save)

    def unbind(self, target: ControlTarget, save: bool = True) -> int:
        """Remove every binding to `target`; returns how many went."""
        kept = [b for b in self._bindings if b.target != target]
        removed = len(self._bindings) - len(kept)
        if removed:
            self.set_bindings(kept, save=save)
        return removed

    # -- learn --------------------------------------------------------------------------------------

    def learn(self, target: ControlTarget) -> None:
        """Arm learn: the next CC, note on or unbound OSC address with a value is bound to `target`."""
        with self._lock:
            self._learning = target
        self.reporter.say(f"learn: move a control for {target.describe()}")

    def cancel_learn(self) -> None:
        """Disarm MIDI learn without binding anything."""
        with self._lock:
            self._learning = None

    @property
    def learning(self) -> ControlTarget | None:
        """The target waiting for a control, or None."""
        return self._learning

    def _take_learn(self, source: ControlSource) -> Binding | None:
        with self._lock:
            target, self._learning = self._learning, None
        if target is None:
            return None
        family = ("cc", "note") if source.kind in ("cc", "note") else (source.kind,)
        kept = [b for b in self._bindings
                if not b.source.matches(source) and not (b.target == target and b.source.kind in family)]
        binding = Binding(source, target)
        self.set_bindings([*kept, binding], save=True)
        self.reporter.say(f"learned {source.describe()} -> {target.describe()}")
        if self.on_learned is not None:
            try:
                self.on_learned(binding)
            except Exception as e:  # noqa: BLE001 - a UI callback's bug is a message, not a dead thread
                self.reporter.report("learn-callback", f"learn: {one_line(e)}")
        return binding

    # -- sources ------------------------------------------------------------------------------------

    def midi(self, event: MidiMessage) -> None:
        """A CC or note from the MIDI input (its thread). Learn takes it first if armed."""
        try:
            kind = event.kind
            if kind == "note_off":
                return
            source_kind = "cc" if kind == "cc" else "note" if kind == "note_on" else None
            if source_kind is None:
                self.reporter.report("midi-kind", f"MIDI: ignored a {short_repr(kind)} event")
                return
            source = ControlSource(source_kind, number=event.number, channel=event.channel)
            x = self._fraction(event.value, MIDI_FULL_SCALE, source)
            if x is None:
                return
            if self._learning is not None:
                self._take_learn(source)
            at = getattr(event, "received_at", None)
            matched = [b for b in self._table.get((source_kind, event.number), ()) if b.source.matches(source)]
            if source_kind == "cc":
                key = (event.channel, event.number)
                was, now_pressed = self._pressed.get(key, False), x >= PRESS_LEVEL
                self._pressed[key] = now_pressed
                fire = now_pressed and not was
            else:
                fire = True
            for b in matched:
                self._drive(b, x, fire, at, source.describe())
        except Exception as e:  # noqa: BLE001 - never into the MIDI thread
            self.reporter.report("midi-error", f"MIDI: event not applied ({type(e).__name__}: {one_line(e)})")

    def osc_bound(self, address: str, args: Sequence[Any]) -> bool:
        """A message to a non-built-in OSC address: drive its bindings (a fader's 0..1 as x; no
        argument or one >= 0.5 presses an action). False if nothing is bound there."""
        try:
            matched = self._table.get(("osc", address), ())
            if not matched and self._learning is not None and args:
                self._take_learn(ControlSource("osc", address=address))
                matched = self._table.get(("osc", address), ())
            if not matched:
                return False
            source = matched[0].source
            if args:
                x = self._fraction(args[0], 1.0, source)
                if x is None:
                    return True
            else:
                x = 1.0
            for b in matched:
                if b.target.continuous and not args:
                    self.reporter.report("osc-no-value", f"OSC {address}: {b.target.describe()} needs a value")
                    continue
                self._drive(b, x, x >= PRESS_LEVEL, None, source.describe())
            return True
        except Exception as e:  # noqa: BLE001 - never into the OSC thread
            self.reporter.report("osc-error", f"OSC {short_repr(address)}: not applied ({type(e).__name__}: {one_line(e)})")
            return True

    def key(self, name: str) -> bool:
        """A key pressed in the window; False if no binding uses it (the window's own keys then apply)."""
        try:
            matched = self._table.get(("key", name.strip().lower()), ())
            for b in matched:
                self._drive(b, 1.0, True, None, b.source.describe())
            return bool(matched)
        except Exception as e:  # noqa: BLE001
            self.reporter.report("key-error", f"key {short_repr(name)}: not applied ({one_line(e)})")
            return False

    def modulators(self, features: Any, clock: Any) -> None:
        """One rendered frame's analysis (`SoundFeatures`, `ClockState`) for the modulator bindings:
        an onset in the frame, a new beat or a new bar fires its action; a level (0..1) moves its
        parameter, or fires an action as it rises past half. Called for every frame in order, from the
        modulator thread (never the render thread: an action may start a recording)."""
        try:
            previous = self._last_modulator_frame
            self._last_modulator_frame = (features, clock)
            if previous is None or not any(k[0] == "modulator" for k in self._table):
                return
            old_features, old_clock = previous
            fired = {
                "onset": bool(getattr(features, "onsets", ())),
                "beat": clock is not None and old_clock is not None and math.floor(clock.beat) > math.floor(old_clock.beat),
                "bar": clock is not None and old_clock is not None
                and math.floor(clock.beat / BEATS_PER_BAR) > math.floor(old_clock.beat / BEATS_PER_BAR),
            }
            for (kind, signal), bindings in self._table.items():
                if kind != "modulator":
                    continue
                if signal in fired:
                    x, fire = (1.0 if fired[signal] else 0.0), fired[signal]
                else:
                    x = min(1.0, max(0.0, float(getattr(features, signal))))
                    fire = x >= PRESS_LEVEL > float(getattr(old_features, signal))
                for b in bindings:
                    if b.target.continuous or fire:
                        self._drive(b, x, fire, None, b.source.describe())
        except Exception as e:  # noqa: BLE001 - never into the modulator thread
            self.reporter.report("modulator-error", f"modulators: not applied ({type(e).__name__}: {one_line(e)})")

    # -- targets (the OSC table and the UI call these directly) -------------------------------------

    def set_param(self, name: Any, value: Any, source: str = "control") -> bool:
        """Set registry parameter `name` to `value` (in its own units): clamped to the range, refused
        if the registry refuses it; True if it was applied."""
        try:
            if name not in NAMES:
                self.reporter.report("unknown-param", f"{source}: unknown parameter {short_repr(name)}; "
                                     f"{suggest(str(name)[:100], NAMES)}")
                return False
            s = spec(name)
            if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value)):
                clamped = min(s.maximum, max(s.minimum, value))
                if clamped != value:
                    self.reporter.report(f"clamped:{name}", f"{source}: {name} = {format_number(value)} "
                                         f"clamped to {s.range_text}")
                    value = clamped
            try:
                checked = s.check(value, source)
            except SoundvjError as e:
                self.reporter.report(f"refused:{name}", str(e))
                return False
            self.surface.change_params({name: checked})
            return True
        except Exception as e:  # noqa: BLE001
            self.reporter.report("error", f"{source}: {name} not set ({type(e).__name__}: {one_line(e)})")
            return False

    def set_fade(self, seconds: Any, source: str = "control") -> bool:
        """Set the crossfade time used when a control picks a preset (clamped to [0, 30] s)."""
        if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) or not math.isfinite(float(seconds)):
            self.reporter.report("refused:fade", f"{source}: fade = {short_repr(seconds)}: must be seconds in "
                                 f"[0, {format_number(MAX_FADE_SECONDS)}]")
            return False
        value = min(MAX_FADE_SECONDS, max(0.0, float(seconds)))
        if value != seconds:
            self.reporter.report("clamped:fade", f"{source}: fade = {format_number(seconds)} clamped to "
                                 f"[0, {format_number(MAX_FADE_SECONDS)}]")
        self.surface.fade_seconds = value
        return True

    def pick_preset(self, which: Any, source: str = "control") -> bool:
        """Crossfade to a preset by number (from 1, in the preset list's order) or by name."""
        try:
            presets = list(self.surface.presets)
            preset = None
            if isinstance(which, numbers.Real) and not isinstance(which, bool) and math.isfinite(float(which)) \
                    and float(which).is_integer():
                number = int(which)
                preset = presets[number - 1] if 1 <= number <= len(presets) else None
                if preset is None:
                    self.reporter.report("no-preset", f"{source}: no preset {number} (there are {len(presets)})")
                    return False
            elif isinstance(which, str) and which.strip():
                wanted = which.strip().lower()
                preset = next((p for p in presets if p.name.lower() == wanted
                               or (p.path is not None and p.path.stem.lower() == wanted)), None)
                if preset is None:
                    names = [p.name for p in presets]
                    self.reporter.report("no-preset", f"{source}: no preset {short_repr(which)}; "
                                         f"{suggest(which[:100], names) if names else 'no presets loaded'}")
                    return False
            else:
                self.reporter.report("refused:preset", f"{source}: preset = {short_repr(which)}: must be a "
                                     "number from 1 or a preset's name")
                return False
            return self.surface.apply_preset(preset, self.surface.fade_seconds) is not None
        except Exception as e:  # noqa: BLE001
            self.reporter.report("error", f"{source}: preset not picked ({type(e).__name__}: {one_line(e)})")
            return False

    def set_modulation(self, target: Any, mod_source: Any, depth: Any, source: str = "control") -> bool:
        """Set the depth of `target` modulated by `mod_source` in the current matrix (0 removes it),
        clamped to +/- the target's range; True if it was applied."""
        try:
            if target not in MODULATABLE:
                self.reporter.report("refused:modulation", lambda: f"{source}: {short_repr(target)} cannot be "
                                     f"modulated; {suggest(str(target)[:100], MODULATABLE)}")
                return False
            if mod_source not in SOURCES:
                self.reporter.report("refused:modulation", lambda: f"{source}: unknown modulation source "
                                     f"{short_repr(mod_source)}; {suggest(str(mod_source)[:100], SOURCES)}")
                return False
            if isinstance(depth, bool) or not isinstance(depth, numbers.Real) or not math.isfinite(float(depth)):
                self.reporter.report("refused:modulation", f"{source}: depth {short_repr(depth)} is not a finite number")
                return False
            s = spec(target)
            span = float(s.maximum) - float(s.minimum)
            value = min(span, max(-span, float(depth)))
            if value != depth:
                self.reporter.report("clamped:modulation", f"{source}: depth {format_number(depth)} clamped to "
                                     f"[{format_number(-span)}, {format_number(span)}]")
            self.surface.set_modulation_depth(target, mod_source, value)
            return True
        except SoundvjError as e:
            self.reporter.report("refused:modulation", f"{source}: {e}")
            return False
        except Exception as e:  # noqa: BLE001
            self.reporter.report("error", f"{source}: modulation not set ({type(e).__name__}: {one_line(e)})")
            return False

    def target_for(self, kind: str) -> ControlTarget:
        """The `ControlTarget` of an action or the fade time by its kind ("tap", "next_preset", ...)."""
        target = self._action_targets.get(kind)
        if target is None:
            target = self._action_targets[kind] = ControlTarget(kind)
        return target

    def step_preset(self, step: int, source: str = "control") -> bool:
        """Crossfade to the preset `step` places after (or before) the current look, wrapping round."""
        presets = list(self.surface.presets)
        if not presets:
            self.reporter.report("no-preset", f"{source}: no presets loaded")
            return False
        names = [p.name for p in presets]
        if self.surface.look in names:
            index = (names.index(self.surface.look) + step) % len(presets)
        else:
            index = 0 if step > 0 else len(presets) - 1
        return self.pick_preset(index + 1, source)

    def perform(self, target: ControlTarget, value: float | None = None, at: float | None = None,
                source: str = "control") -> bool:
        """Do what `target` means: set a parameter or the fade time to `value` (their own units),
        pick a preset, or run an action. True if it took effect."""
        try:
            kind = target.kind
            if kind == "param":
                return self.set_param(target.param, value, source)
            if kind == "fade":
                return self.set_fade(value, source)
            if kind == "preset":
                return self.pick_preset(target.preset, source)
            if kind in ("next_preset", "previous_preset"):
                return self.step_preset(1 if kind == "next_preset" else -1, source)
            if kind == "tap":
                self.surface.tap(time.monotonic() if at is None else at)
            elif kind == "record":
                self.surface.toggle_recording()
            elif kind == "freeze":
                self.surface.toggle_freeze()
            return True
        except Exception as e:  # noqa: BLE001
            self.reporter.report("error", f"{source}: {target.describe()} failed ({type(e).__name__}: {one_line(e)})")
            return False

    # -- internals ----------------------------------------------------------------------------------

    def _fraction(self, value: Any, full_scale: float, source: ControlSource) -> float | None:
        """`value` / `full_scale` clamped to [0, 1]; None (reported) if it is not a finite number."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            self.reporter.report(f"refused:{source.kind}", f"{source.describe()}: value {short_repr(value)} "
                                 f"is not a number in [0, {format_number(full_scale)}]")
            return None
        x = float(value) / full_scale
        if not 0.0 <= x <= 1.0:
            self.reporter.report(f"clamped:{source.kind}", f"{source.describe()}: value {format_number(value)} "
                                 f"clamped to [0, {format_number(full_scale)}]")
            x = min(1.0, max(0.0, x))
        return x

    def _drive(self, binding: Binding, x: float, fire: bool, at: float | None, source: str) -> None:
        target = binding.target
        if target.continuous:
            value = binding.value_for(x)
            if target.kind == "param" and spec(target.param).kind == "int":
                value = round(value)
            self.perform(target, value, source=source)
        elif fire:
            self.perform(target, at=at, source=source)


class ModulatorFeed(SinkThread):
    """A frame sink that hands each rendered frame's analysis to `ControlDispatcher.modulators` on
    its own thread: `feed` (on the render thread) only appends to a bounded queue and returns, so a
    modulator binding that starts a recording or loads a preset never delays a frame."""

    QUEUE_FRAMES = 64  # a couple of seconds of frames; older ones are dropped if the thread lags

    def __init__(self, dispatcher: ControlDispatcher) -> None:
        super().__init__("soundvj-modulators")
        self.dispatcher = dispatcher
        self._frames: deque[tuple[Any, Any]] = deque(maxlen=self.QUEUE_FRAMES)

    def feed(self, frame: Any, audio: Any) -> None:
        """The render thread's hand-off: keep the frame's analysis, wake the thread, return."""
        features = getattr(frame, "features", None)
        if features is not None:
            self._frames.append((features, getattr(frame, "clock", None)))
            self.wake()

    def _drain(self) -> None:
        while self._frames and not self.stopping:
            self.dispatcher.modulators(*self._frames.popleft())
