"""What the sound does right now, per video frame: level, bands, an envelope, onset strength and onsets.

Everything is read from the log-mel columns the windower already computes for the sound models
(`core.audio.windows`: hop 512 at 44.1 kHz, so about 86 columns a second, each the last n_fft samples
up to its end), so the analysis costs no second FFT and sits on the same sample grid as the frames.
The tracker is causal and streaming: it keeps the last column it has seen (by index on that grid)
and analyses only the columns that are new, one by one. Feeding it every video frame's newest
window (live), or a whole clip's columns at once (offline replay), gives the same numbers.

Per column:
- band powers: the mel column turned back into power (full-scale-sine units, as `core.audio.mel`)
  and summed over the mel bands whose centre lies below `low_mid_hz` (low), between the crossovers
  (mid), above `mid_high_hz` (high), and over all bands (level);
- an envelope follower on the level (in [0, 1], 0 = -top_db, 1 = 0 dB) with `attack` / `release`
  time constants;
- spectral flux: the half-wave rectified rise of the log-mel column over the previous one, averaged
  over the bands (in the mel's [0, 1] units: 1 = every band rose by top_db);
- an onset when the flux exceeds an adaptive threshold (`onset_threshold_ratio` x the median flux
  over the last `onset_threshold_seconds`, plus `onset_threshold_offset`) and the previous onset is
  at least `refractory` seconds old. The first column that crosses the threshold usually sees the
  sound through the fading edge of its Hann window, in its last hop or so, so an onset's audio time
  is the column's end minus three quarters of a hop (`ONSET_LAG_HOPS`).

Per update, the levels are the mean power of the new columns (in dB and in [0, 1]); the envelope,
flux and onset strength are the newest column's; `onsets` lists the onsets found in this update.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections import deque
from dataclasses import dataclass, fields

import numpy as np
import torch

from core.audio.mel import MelConfig
from core.control.checks import checked_number
from core.errors import SoundvjError, format_number

_SECONDS_MAX = 60.0
ONSET_LAG_HOPS = 0.75  # an onset's time: this many hops before the end of the column that found it


@dataclass(frozen=True)
class FeatureSettings:
    """How the sound is read: band crossovers (Hz), envelope times and onset picking (seconds)."""

    low_mid_hz: float = 200.0
    mid_high_hz: float = 2000.0
    attack: float = 0.01
    release: float = 0.25
    onset_threshold_seconds: float = 1.0
    onset_threshold_ratio: float = 1.5
    onset_threshold_offset: float = 0.02
    refractory: float = 0.08
    onset_full_scale: float = 0.25  # the flux that reads 1.0 as onset strength

    def __post_init__(self) -> None:
        where = "sound features"
        limits = {
            "low_mid_hz": (1.0, 100_000.0, True), "mid_high_hz": (1.0, 100_000.0, True),
            "attack": (0.0, _SECONDS_MAX, False), "release": (0.0, _SECONDS_MAX, False),
            "onset_threshold_seconds": (0.05, _SECONDS_MAX, False),
            "onset_threshold_ratio": (0.0, 100.0, False), "onset_threshold_offset": (0.0, 1.0, False),
            "refractory": (0.0, _SECONDS_MAX, False), "onset_full_scale": (0.0, 1.0, True),
        }
        for f in fields(self):
            lo, hi, lo_open = limits[f.name]
            object.__setattr__(self, f.name, checked_number(f"{where}.{f.name}", getattr(self, f.name), lo, hi, lo_open))
        if not self.low_mid_hz < self.mid_high_hz:
            raise SoundvjError(
                f"{where}.low_mid_hz = {format_number(self.low_mid_hz)}: must be below mid_high_hz "
                f"= {format_number(self.mid_high_hz)}"
            )


@dataclass(frozen=True)
class SoundFeatures:
    """The analysis at audio time `time` (the newest mel column's end). See the module docstring."""

    time: float = 0.0
    level_db: float = -80.0
    low_db: float = -80.0
    mid_db: float = -80.0
    high_db: float = -80.0
    level: float = 0.0
    low: float = 0.0
    mid: float = 0.0
    high: float = 0.0
    envelope: float = 0.0
    flux: float = 0.0
    onset_strength: float = 0.0
    onsets: tuple[float, ...] = ()
    last_onset: float | None = None
    flux_columns: tuple[float, ...] = ()
    column_seconds: float = 512 / 44100  # the spacing of `flux_columns` (hop / sample rate)


def mel_band_centres_hz(mel_config: MelConfig) -> np.ndarray:
    """Centre frequency of each mel band of the front end (HTK scale from 0 Hz to Nyquist)."""
    def hz_to_mel(f: float) -> float:
        return 2595.0 * math.log10(1.0 + f / 700.0)

    mels = np.linspace(0.0, hz_to_mel(mel_config.sample_rate / 2), mel_config.n_mels + 2)
    return (700.0 * (10.0 ** (mels / 2595.0) - 1.0))[1:-1]


class SoundFeatureTracker:
    """Streaming, causal sound analysis on the windower's mel columns; see the module docstring."""

    def __init__(self, mel_config: MelConfig, settings: FeatureSettings | None = None) -> None:
        self.mel_config = mel_config
        self.settings = settings if settings is not None else FeatureSettings()
        s, c = self.settings, mel_config
        centres = mel_band_centres_hz(c)
        self._low = centres < s.low_mid_hz
        self._high = centres >= s.mid_high_hz
        self._mid = ~(self._low | self._high)
        for name, mask in (("low", self._low), ("mid", self._mid), ("high", self._high)):
            if not mask.any():
                raise SoundvjError(
                    f"sound features: the crossovers {format_number(s.low_mid_hz)} / "
                    f"{format_number(s.mid_high_hz)} Hz leave the {name} band without any of the "
                    f"{c.n_mels} mel bands (their centres run from {centres[0]:.0f} to {centres[-1]:.0f} Hz)"
                )
        self.column_seconds = c.hop / c.sample_rate
        self._attack = self._smoothing(s.attack)
        self._release = self._smoothing(s.release)
        self._threshold_size = max(1, round(s.onset_threshold_seconds / self.column_seconds))
        self.reset()

    def _smoothing(self, seconds: float) -> float:
        return math.exp(-self.column_seconds / seconds) if seconds > 0 else 0.0

    def reset(self) -> None:
        """Back to the start of a stream: mel column 0 (pre-start silence) seen, nothing heard."""
        self._last_column = 0
        self._previous = np.zeros(self.mel_config.n_mels, dtype=np.float64)
        self._envelope = 0.0
        # The flux of the last `_threshold_size` columns, in arrival order and sorted (for the median).
        self._recent_flux: deque[float] = deque([0.0] * self._threshold_size)
        self._recent_sorted = [0.0] * self._threshold_size
        self._last_onset: float | None = None
        self.skipped_columns = 0  # columns lost because updates came more than a window apart
        floor = -self.mel_config.top_db
        self.features = SoundFeatures(level_db=floor, low_db=floor, mid_db=floor, high_db=floor,
                                      column_seconds=self.column_seconds)

    @property
    def last_column(self) -> int:
        """Index (on the windower's mel grid) of the newest column analysed."""
        return self._last_column

    def update(self, window: torch.Tensor | np.ndarray, end_sample: int) -> SoundFeatures:
        """Analyse the not yet seen columns of `window` [n_mels, W], whose newest column ends at
        `end_sample` (the windower's `samples_seen`); returns (and keeps) the new `SoundFeatures`.
        When no column is new: the previous ones, without their onsets and flux columns."""
        return self.push_columns(window, end_sample)

    def push_columns(self, columns: torch.Tensor | np.ndarray, end_sample: int) -> SoundFeatures:
        """Analyse mel columns [n_mels, k] whose last one ends at `end_sample`; columns already seen
        are skipped, and a gap (columns that never arrived) restarts the flux from the next column."""
        if not isinstance(columns, torch.Tensor):
            columns = np.asarray(columns)
        c = self.mel_config
        shape = tuple(columns.shape)
        if len(shape) != 2 or shape[0] != c.n_mels:
            raise SoundvjError(f"sound features: expected mel columns [{c.n_mels}, k], got shape {shape}")
        newest = int(end_sample) // c.hop
        fresh = newest - self._last_column
        if fresh <= 0 or shape[1] == 0:
            return self._nothing_new()
        gap = fresh > shape[1]
        # Only the new columns are converted (a live window holds about 20 frames' worth).
        selected = columns[:, 0 if gap else shape[1] - fresh :]
        if isinstance(selected, torch.Tensor):
            selected = selected.detach().to("cpu").numpy()
        # NaN would stay in the envelope for good; the mel never has it, but a caller's array might.
        selected = np.nan_to_num(np.clip(np.asarray(selected, dtype=np.float64), 0.0, 1.0), nan=0.0)
        if gap:
            self.skipped_columns += fresh - shape[1]
            self._previous = selected[:, 0].copy()  # no flux across a gap: it would be a false onset
            selected = selected[:, 1:]
        self._last_column = newest
        if selected.shape[1] == 0:
            return self._nothing_new()
        return self._analyse(selected, newest)

    def _nothing_new(self) -> SoundFeatures:
        """The newest features without events: an update with no new column found no onset (so a
        caller that counts `onsets` or feeds `flux_columns` on never sees the same one twice)."""
        if self.features.onsets or self.features.flux_columns:
            self.features = dataclasses.replace(self.features, onsets=(), flux_columns=())
        return self.features

    def _median_flux(self) -> float:
        ordered, n = self._recent_sorted, len(self._recent_sorted)
        return ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])

    def _remember_flux(self, flux: float) -> None:
        oldest = self._recent_flux.popleft()
        del self._recent_sorted[bisect.bisect_left(self._recent_sorted, oldest)]
        self._recent_flux.append(flux)
        bisect.insort(self._recent_sorted, flux)

    def _analyse(self, x: np.ndarray, newest: int) -> SoundFeatures:
        c, s = self.mel_config, self.settings
        top_db = c.top_db
        k = x.shape[1]
        power = np.where(x > 0, 10.0 ** ((x - 1.0) * (top_db / 10.0)), 0.0)
        bands = np.stack([power.sum(0), power[self._low].sum(0), power[self._mid].sum(0), power[self._high].sum(0)])
        db = 10.0 * np.log10(np.maximum(bands, 1e-30))
        column_level = np.clip(db[0] / top_db + 1.0, 0.0, 1.0)
        previous = np.concatenate([self._previous[:, None], x[:, :-1]], axis=1)
        flux_columns = np.maximum(x - previous, 0.0).mean(0)
        self._previous = x[:, -1].copy()

        envelope = self._envelope
        onsets: list[float] = []
        first = newest - k + 1
        for j in range(k):
            level = float(column_level[j])
            a = self._attack if level > envelope else self._release
            envelope = level + a * (envelope - level)
            flux = float(flux_columns[j])
            threshold = s.onset_threshold_ratio * self._median_flux() + s.onset_threshold_offset
            self._remember_flux(flux)
            t = ((first + j) * c.hop - ONSET_LAG_HOPS * c.hop) / c.sample_rate
            if flux > threshold and (self._last_onset is None or t - self._last_onset >= s.refractory):
                onsets.append(t)
                self._last_onset = t
        self._envelope = envelope

        mean_db = 10.0 * np.log10(np.maximum(bands.mean(1), 1e-30))
        mean_db = np.maximum(mean_db, -top_db)
        normalised = np.clip(mean_db / top_db + 1.0, 0.0, 1.0)
        flux = float(flux_columns[-1])
        self.features = SoundFeatures(
            time=newest * c.hop / c.sample_rate,
            level_db=float(mean_db[0]), low_db=float(mean_db[1]), mid_db=float(mean_db[2]), high_db=float(mean_db[3]),
            level=float(normalised[0]), low=float(normalised[1]), mid=float(normalised[2]), high=float(normalised[3]),
            envelope=envelope, flux=flux, onset_strength=min(1.0, flux / s.onset_full_scale),
            onsets=tuple(onsets), last_onset=self._last_onset,
            flux_columns=tuple(float(f) for f in flux_columns), column_seconds=self.column_seconds,
        )
        return self.features
