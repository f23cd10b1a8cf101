"""The beat clock: tempo (BPM) and beat position at any audio time, from taps, the sound or a master.

The clock is a straight line: `beat_at(t) = beat_ref + (t - t_ref) * bpm / 60`. Whatever sets it
(a tap, an external clock, the audio follower) moves the anchor (t_ref, beat_ref) and the slope,
keeping the beat count continuous where it can, so beat-synced LFOs glide rather than jump.

Three ways to set it, all in audio time (see `core.control`):
- `tap(t)`: each tap is a beat. The tempo is 60 / the median interval of the last `tap_count` taps
  (the median shrugs off one bad tap); a pause longer than `tap_reset_seconds` starts a new run, and a
  first tap only puts the beat on the tap.
- `set_tempo(bpm, t, beat)`: an external master (Ableton Link) says where the beat is.
- `observe(features)`: the audio follower. It keeps the onset strength (spectral flux per mel column)
  and the onsets of the last `tempo_window_seconds`. Every `retune_seconds` of audio it takes the
  autocorrelation of the flux (smoothed over five columns) over the lags of `min_bpm`..`max_bpm`, weighted toward
  `preferred_bpm` by a log-normal of one octave (so a 120 BPM pulse is not read as 60), and refines
  the winning lag by a parabola through its neighbours. The onsets that fall on that grid then fix
  tempo and phase by a least-squares line (beat number -> onset time), which is far finer than the
  mel hop. The phase is pulled toward that grid by `phase_gain` per retune (fully on the first lock);
  a tempo change larger than 4 % must be seen twice in a row before it is taken (no octave flapping).
  A tap or `set_tempo` holds the follower off for `manual_hold_seconds` (Link calls it every frame,
  so it holds for as long as Link plays).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, fields

import numpy as np

from core.control.checks import checked_number
from core.control.sound_features import SoundFeatures
from core.errors import SoundvjError, format_number, short_repr

ANY_BPM = (20.0, 300.0)  # the tempos a tap or an external clock may set
SOURCES = ("default", "tap", "audio", "external")
_SMALL_TEMPO_CHANGE = 0.04  # relative; larger audio-followed changes must repeat before they are taken
_REPEAT_AGREEMENT = 0.02  # how close the repeat must be
_SMOOTHING = np.hanning(7)[1:-1] / np.hanning(7)[1:-1].sum()  # five columns, a Hann bump
_GRID_TOLERANCE = 0.12  # an onset within this fraction of a beat of the grid counts as on the beat


def _finite(where: str, name: str, value: object, lo: float = -math.inf, hi: float = math.inf) -> float:
    return checked_number(f"{where}: {name}", value, lo, hi)


@dataclass(frozen=True)
class BeatClockSettings:
    """How the clock follows taps and the audio (see the module docstring)."""

    min_bpm: float = 60.0
    max_bpm: float = 200.0
    preferred_bpm: float = 120.0
    tempo_window_seconds: float = 8.0
    retune_seconds: float = 0.25
    min_periodicity: float = 0.3  # autocorrelation peak / energy below this: no beat to follow (noise ~0.1)
    phase_gain: float = 0.5
    tap_reset_seconds: float = 2.0
    tap_count: int = 8
    manual_hold_seconds: float = 8.0

    def __post_init__(self) -> None:
        where = "beat clock"
        limits = {
            "min_bpm": ANY_BPM, "max_bpm": ANY_BPM, "preferred_bpm": ANY_BPM,
            "tempo_window_seconds": (2.0, 60.0), "retune_seconds": (0.01, 10.0),
            "min_periodicity": (0.0, 1.0), "phase_gain": (0.0, 1.0),
            "tap_reset_seconds": (0.25, 10.0), "tap_count": (2, 64), "manual_hold_seconds": (0.0, 3600.0),
        }
        for f in fields(self):
            lo, hi = limits[f.name]
            value = _finite(where, f.name, getattr(self, f.name), lo, hi)
            if f.name == "tap_count":
                if not float(value).is_integer():
                    raise SoundvjError(f"{where}: tap_count = {short_repr(getattr(self, f.name))}: expected a whole number")
                value = int(value)
            object.__setattr__(self, f.name, value)
        if not self.min_bpm * 1.5 <= self.max_bpm:
            raise SoundvjError(
                f"{where}: min_bpm = {format_number(self.min_bpm)} and max_bpm = {format_number(self.max_bpm)}: "
                "the range must span at least a factor of 1.5"
            )
        if self.tempo_window_seconds < 3 * 60.0 / self.min_bpm:
            raise SoundvjError(
                f"{where}: tempo_window_seconds = {format_number(self.tempo_window_seconds)}: "
                f"must hold at least three beats at min_bpm ({format_number(180.0 / self.min_bpm)} s)"
            )


@dataclass(frozen=True)
class ClockState:
    """The clock read at one audio time: tempo, beat position (continuous), phase in [0, 1), who set it."""

    bpm: float
    beat: float
    phase: float
    source: str


class BeatClock:
    """Tempo and beat position at any audio time; see the module docstring."""

    def __init__(self, settings: BeatClockSettings | None = None, bpm: float = 120.0) -> None:
        self.settings = settings if settings is not None else BeatClockSettings()
        self._bpm = _finite("beat clock", "bpm", bpm, *ANY_BPM)
        self._t_ref = 0.0
        self._beat_ref = 0.0
        self.tempo_source = "default"
        self.follow_audio = True
        self.ignored_taps = 0  # taps closer together than the fastest tempo allows (a double hit)
        self._taps: list[float] = []
        self._manual_at: float | None = None
        self._reset_history(512 / 44100)

    # -- reading ----------------------------------------------------------------------------------

    @property
    def bpm(self) -> float:
        return self._bpm

    def beat_at(self, t: float) -> float:
        """The beat position at audio time `t` (beats since the clock's zero; whole numbers are beats)."""
        return self._beat_ref + (t - self._t_ref) * self._bpm / 60.0

    def phase_at(self, t: float) -> float:
        """Where in the beat `t` falls, in [0, 1): 0 on the beat."""
        return self.beat_at(t) % 1.0

    def state_at(self, t: float) -> ClockState:
        beat = self.beat_at(t)
        return ClockState(bpm=self._bpm, beat=beat, phase=beat % 1.0, source=self.tempo_source)

    # -- setting ----------------------------------------------------------------------------------

    def tap(self, t: float) -> float | None:
        """A tap at audio time `t`, on a beat. Returns the tapped tempo once the run has two taps."""
        t = _finite("tap", "time", t)
        s = self.settings
        if self._taps and not 0.0 <= t - self._taps[-1] <= s.tap_reset_seconds:
            self._taps = []  # a pause (or time going back: a new stream) starts a new run
        if self._taps and t - self._taps[-1] < 60.0 / ANY_BPM[1]:
            self.ignored_taps += 1
            return None
        beat = round(self.beat_at(t))
        self._taps = [*self._taps[-(s.tap_count - 1):], t]
        bpm = None
        if len(self._taps) >= 2:
            bpm = min(max(60.0 / float(np.median(np.diff(self._taps))), ANY_BPM[0]), ANY_BPM[1])
            self._bpm = bpm
        self._t_ref, self._beat_ref = t, float(beat)
        self.tempo_source = "tap"
        self._manual_at = t
        self._candidate = None
        return bpm

    def set_tempo(self, bpm: float, t: float, beat: float = 0.0) -> None:
        """An external clock: at audio time `t` the tempo is `bpm` and the beat position is `beat`."""
        self._bpm = _finite("set_tempo", "bpm", bpm, *ANY_BPM)
        self._t_ref = _finite("set_tempo", "time", t)
        self._beat_ref = _finite("set_tempo", "beat", beat)
        self.tempo_source = "external"
        self._manual_at = self._t_ref
        self._candidate = None

    def resume(self, state: ClockState, t: float) -> None:
        """Continue a clock read elsewhere: at audio time `t` the tempo is `state.bpm` and the beat
        position `state.beat`, as set by `state.source` (a replay of a set log that started mid-show).
        Taps and the audio history start empty; the follower is free to retune."""
        self._bpm = _finite("resume", "bpm", state.bpm, *ANY_BPM)
        self._t_ref = _finite("resume", "time", t)
        self._beat_ref = _finite("resume", "beat", state.beat)
        self.tempo_source = state.source if state.source in SOURCES else "default"
        self._taps = []
        self._manual_at = None
        self._candidate = None

    def reset(self) -> None:
        """Forget taps and the audio history (a new stream); the tempo stays, the beat restarts at 0."""
        self._t_ref, self._beat_ref = 0.0, 0.0
        self._taps = []
        self._manual_at = None
        self._reset_history(self._column_seconds)

    # -- following the audio ----------------------------------------------------------------------

    def _reset_history(self, column_seconds: float) -> None:
        s = self.settings
        self._column_seconds = column_seconds
        # The lags (in columns) of min_bpm..max_bpm, weighted by a log-normal of one octave around
        # preferred_bpm: the octave preference.
        self._lags = np.arange(max(1, math.floor(60.0 / s.max_bpm / column_seconds)),
                               math.ceil(60.0 / s.min_bpm / column_seconds) + 1)
        self._lag_weights = np.exp(-0.5 * np.log2(60.0 / (self._lags * column_seconds) / s.preferred_bpm) ** 2)
        size = max(8, round(self.settings.tempo_window_seconds / column_seconds))
        self._flux = np.zeros(size)
        self._flux_at = 0
        self._flux_count = 0
        self._onsets: deque[float] = deque()
        self._since_retune = 0
        self._candidate: float | None = None
        self._observed_until = -math.inf

    def observe(self, features: SoundFeatures) -> None:
        """Take one update of the sound analysis; steer the clock when following the audio. An
        update that is not newer than the last one taken is ignored (its columns are in already)."""
        if features.column_seconds != self._column_seconds:
            self._reset_history(features.column_seconds)
        if features.time <= self._observed_until:
            return
        self._observed_until = features.time
        for flux in features.flux_columns:
            self._flux[self._flux_at] = flux
            self._flux_at = (self._flux_at + 1) % self._flux.size
        self._flux_count = min(self._flux.size, self._flux_count + len(features.flux_columns))
        self._onsets.extend(features.onsets)
        oldest = features.time - self.settings.tempo_window_seconds
        while self._onsets and self._onsets[0] < oldest:
            self._onsets.popleft()
        self._since_retune += len(features.flux_columns)
        if self._since_retune * self._column_seconds < self.settings.retune_seconds:
            return
        self._since_retune = 0
        held = self._manual_at is not None and features.time - self._manual_at < self.settings.manual_hold_seconds
        if self.follow_audio and not held:
            self._follow(features.time)

    def estimate_period(self) -> float | None:
        """The beat period (seconds) the flux history's autocorrelation suggests, or None (too little
        history, or no periodicity above `min_periodicity`)."""
        s, col, lags = self.settings, self._column_seconds, self._lags
        hi = int(lags[-1])
        n = self._flux_count
        if n < 3 * hi:
            return None
        flux = np.roll(self._flux, -self._flux_at)[-n:]
        # Smoothed over a few columns: onsets land on the column grid, so a beat of 34.5 columns
        # alternates 34 and 35 and its unsmoothed peak splits in two, losing to the octave below.
        flux = np.convolve(flux - flux.mean(), _SMOOTHING, mode="same")
        size = 1 << (2 * n - 1).bit_length()
        spectrum = np.fft.rfft(flux, size)
        ac = np.fft.irfft(spectrum * np.conj(spectrum), size)[: hi + 2] / (n - np.arange(hi + 2))
        if ac[0] <= 0:
            return None
        lag = int(lags[int(np.argmax(ac[lags] * self._lag_weights))])
        if ac[lag] < s.min_periodicity * ac[0]:
            return None
        before, peak, after = ac[lag - 1], ac[lag], ac[lag + 1]
        curve = before - 2 * peak + after
        shift = 0.5 * (before - after) / curve if curve < 0 else 0.0
        return (lag + min(max(shift, -0.5), 0.5)) * col

    def _fit_grid(self, period: float) -> tuple[float, float] | None:
        """(period, time of a beat) from the onsets on the grid of `period`, by least squares."""
        if len(self._onsets) < 4:
            return None
        times = np.fromiter(self._onsets, dtype=np.float64)
        anchor = times[-1]
        for _ in range(2):
            beat_numbers = np.round((times - anchor) / period)
            on_grid = np.abs(times - anchor - beat_numbers * period) < _GRID_TOLERANCE * period
            if on_grid.sum() < 4:
                return None
            k, t = beat_numbers[on_grid], times[on_grid]
            if k.max() - k.min() < 3:
                return None
            k_mean, t_mean = k.mean(), t.mean()  # least squares t = intercept + slope * k
            slope = float(((k - k_mean) * (t - t_mean)).sum() / ((k - k_mean) ** 2).sum())
            intercept = float(t_mean - slope * k_mean)
            if abs(slope / period - 1.0) > _SMALL_TEMPO_CHANGE:
                return None
            period, anchor = float(slope), float(intercept)
        return period, anchor

    def _follow(self, now: float) -> None:
        period = self.estimate_period()
        if period is None:
            return
        grid = self._fit_grid(period)
        if grid is not None:
            period = grid[0]
        s = self.settings
        bpm = min(max(60.0 / period, s.min_bpm), s.max_bpm)
        first_lock = self.tempo_source != "audio"
        if not first_lock and abs(bpm / self._bpm - 1.0) > _SMALL_TEMPO_CHANGE:
            if self._candidate is None or abs(bpm / self._candidate - 1.0) > _REPEAT_AGREEMENT:
                self._candidate = bpm
                return
        self._candidate = None
        beat = self.beat_at(now)
        if grid is not None:
            wanted = ((now - grid[1]) / grid[0]) % 1.0
            error = (wanted - beat % 1.0 + 0.5) % 1.0 - 0.5
            beat += error if first_lock else s.phase_gain * error
        self._t_ref, self._beat_ref, self._bpm = now, beat, bpm
        self.tempo_source = "audio"
