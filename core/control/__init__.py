"""Playing with the rig, the core side: what the sound does, where the beat is, and what moves on it.

No Qt, no threads, no I/O: every object here is stepped by its owner (the render thread, an offline
replay, a test) with explicit audio times, so live and offline replay give the same numbers for the
same audio. All times are *audio time*: seconds of input audio since the stream started
(sample index / sample rate), the timebase the windower's mel grid lives on. The caller converts
anything that arrives in wall time (a tap from a key, OSC or MIDI; an Ableton Link beat) into audio
time before handing it over.

API, by module (each name is also importable from `core.control`):

`core.control.sound_features`
    `FeatureSettings` (frozen, validated): `low_mid_hz`, `mid_high_hz` (band crossovers), `attack`,
        `release` (envelope follower, seconds), `onset_threshold_seconds`, `onset_threshold_ratio`,
        `onset_threshold_offset`, `refractory` (seconds), `onset_full_scale` (flux that reads 1.0).
        Bad values: a one-line `SoundvjError` naming the field.
    `SoundFeatureTracker(mel_config, settings=FeatureSettings())`: causal, streaming.
        `.update(window, end_sample) -> SoundFeatures`: `window` is the windower's newest mel window
            [n_mels, W] (before `gain_db`, so modulated parameters never feed back into the analysis),
            `end_sample` is `StreamingWindower.samples_seen`. Only the mel columns not seen before are
            analysed (found from `end_sample // hop`), so calling it once per video frame, or more
            often, or after skipped frames (up to W columns), gives the same numbers. With no new
            column it returns the previous features without their `onsets` / `flux_columns`.
            A model with another mel config needs a new tracker (the column shape is checked).
        `.push_columns(columns, end_sample) -> SoundFeatures`: the same for just the new columns
            [n_mels, k] whose last one ends at `end_sample` (offline replay of a whole clip's mel).
        `.features` (the newest `SoundFeatures`), `.reset()`.
    `SoundFeatures` (frozen): `time` (audio time of the newest column's end), `level_db`, `low_db`,
        `mid_db`, `high_db` (dB re a full-scale sine, >= -top_db) and the same as `level`, `low`,
        `mid`, `high` in [0, 1] (0 = -top_db, 1 = 0 dB), `envelope` [0, 1], `flux` (raw spectral flux
        of the newest column), `onset_strength` [0, 1], `onsets` (audio times of the onsets found in
        this update), `last_onset` (audio time of the newest onset so far, or None), `flux_columns`
        (the flux of every new column, oldest first; the beat clock's input), `column_seconds`.

`core.control.beat_clock`
    `BeatClockSettings` (frozen, validated): `min_bpm`/`max_bpm` (60-200), `preferred_bpm` (120),
        `tempo_window_seconds` (8), `retune_seconds`, `min_periodicity`, `phase_gain`,
        `tap_reset_seconds` (2), `tap_count` (8), `manual_hold_seconds` (8).
    `BeatClock(settings=BeatClockSettings(), bpm=120.0)`:
        `.tap(t) -> float | None`: tap tempo (median of the last taps' intervals; a pause longer than
            `tap_reset_seconds` starts a new run); the tap is a beat. Returns the tempo once a run
            has two taps.
        `.set_tempo(bpm, t, beat=0.0)`: an external clock (Ableton Link): at audio time `t` the beat
            position is `beat`.
        `.observe(features)`: follow the tempo and phase from the audio (autocorrelation of the onset
            strength over the last ~8 s, phase locked to onsets), when `follow_audio` is True and no
            tap / set_tempo came within `manual_hold_seconds`. Features not newer than the last
            observed are ignored, so calling it every frame is safe.
        `.reset()` (a new stream), `.resume(state, t)` (continue a `ClockState` read elsewhere at audio
            time `t`: a replay of a set log started mid-show), `.ignored_taps`, `.estimate_period()`.
        `.bpm`, `.tempo_source` ("default" | "tap" | "audio" | "external"), `.follow_audio`,
        `.beat_at(t) -> float` (beats since the anchor, continuous), `.phase_at(t) -> float` [0, 1),
        `.state_at(t) -> ClockState(bpm, beat, phase, source)`.

`core.control.modulation`
    `SOURCES`: "onset" (a pulse of 1 on each onset decaying over `decay` seconds), "onset_strength",
        "envelope", "level", "low", "mid", "high" (all in [0, 1]), and beat-synced LFOs "sine", "saw",
        "square", "sample_hold" (in [-1, 1], one cycle every `beats` beats, 0.25 to 16).
    `MODULATABLE`: the registry parameters a modulation may move (live ones outside the "audio"
        group: modulations never change what the sound models hear, and never restart the stream).
    `Modulation(target, source, depth, beats=1.0, offset=0.0, decay=0.2)` (frozen, validated):
        `.from_dict(mapping, source="<where>") -> Modulation`, `.to_dict() -> dict` (target,
        source, depth and the options that apply to the source), `.value(features, clock, t) -> float` (the source's value, before depth).
    `ModulationMatrix(modulations=())` (frozen, at most `MAX_MODULATIONS` = 64):
        `.apply(params, features, clock, t) -> Params`: each target = base + sum(depth x source),
            clamped to the registry's range (int parameters rounded); untouched parameters keep their
            value. `features`/`clock` may be None (audio sources / LFOs then read 0).
        `.from_list(items, source) / .to_list()`, `.added(m)`, `.removed(index)`,
        `.replaced(index, **changes)`, `.targets`, `len()`, iteration. Errors are one-line
        `SoundvjError`s ("<source>[i].depth = 5: expected a number in [-2, 2]").
    `MODULATABLE` today: alpha, alpha_coarse, alpha_middle, alpha_fine, noise, psi, rotate_deg,
        pan_x, pan_y.

`core.control.checks`: `checked_number(label, value, lo, hi)`, the one number check of this package.

`core.presets` (version 2): a preset may carry `modulations:` (a list of `Modulation.to_dict()`
    mappings); `Preset.modulations` is a tuple of `Modulation`, or None when the file does not say
    (a version-1 file, or version 2 without the key): None leaves the current matrix as it is, a
    tuple (even empty) replaces it; `Preset.matrix` is the same as a `ModulationMatrix` (or None).
    `save_preset(..., modulations=...)` writes version 2; without modulations it still writes 1.
    The shipped `pulse` preset is the version-2 example.
"""

from core.control.beat_clock import BeatClock, BeatClockSettings, ClockState
from core.control.modulation import MAX_MODULATIONS, MODULATABLE, SOURCES, Modulation, ModulationMatrix
from core.control.sound_features import FeatureSettings, SoundFeatures, SoundFeatureTracker

__all__ = [
    "MAX_MODULATIONS", "MODULATABLE", "SOURCES", "BeatClock", "BeatClockSettings", "ClockState",
    "FeatureSettings", "Modulation", "ModulationMatrix", "SoundFeatureTracker", "SoundFeatures",
]
