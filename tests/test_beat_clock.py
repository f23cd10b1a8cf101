"""The beat clock (core.control.beat_clock): tempo and phase from a click track, tap tempo, an
external clock, and who wins when several set it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.audio.mel import MelConfig, MelSpectrogramFrontEnd
from core.control.beat_clock import BeatClock, BeatClockSettings
from core.control.sound_features import SoundFeatureTracker
from core.errors import SoundvjError
from tests.click_tracks import beat_track

MEL = MelConfig()
FRAME_COLUMNS = 4  # about one video frame at 24 fps (86 mel columns a second)


def follow(samples: np.ndarray, clock: BeatClock, on_update=None) -> list[tuple[float, float]]:
    """Run the analysis and the clock over a clip, a video frame's worth of columns at a time, as
    the render thread does; returns (audio time, bpm) after each update."""
    padded = torch.nn.functional.pad(torch.from_numpy(samples), (MEL.n_fft, 0))
    columns = MelSpectrogramFrontEnd(MEL)(padded)[:, 1:].numpy()
    tracker = SoundFeatureTracker(MEL)
    history = []
    for end in range(FRAME_COLUMNS, columns.shape[1] + 1, FRAME_COLUMNS):
        features = tracker.push_columns(columns[:, end - FRAME_COLUMNS : end], end * MEL.hop)
        clock.observe(features)
        if on_update is not None:
            on_update(features.time)
        history.append((features.time, clock.bpm))
    return history


def phase_error(clock: BeatClock, t: float) -> float:
    """How far (in beats, signed) `t` is from the clock's nearest beat."""
    return (clock.phase_at(t) + 0.5) % 1.0 - 0.5


@pytest.mark.parametrize("bpm", [90, 120, 150])
@pytest.mark.parametrize("kind", ["click", "kick"])
def test_tempo_of_a_beat_track_on_a_noise_floor_within_1_percent_with_beats_on_the_hits(bpm, kind):
    """After 8 s of a steady track at 20 dB over the noise floor the clock reads the tempo within
    1 % and stays there, and its beats fall within 20 ms of the hits."""
    samples, hits = beat_track(bpm, 16.0, snr_db=20.0 if kind == "click" else 30.0, kind=kind)
    clock = BeatClock()
    history = follow(samples, clock)
    settled = [b for t, b in history if t > 8.0]
    assert clock.tempo_source == "audio"
    assert max(abs(b / bpm - 1) for b in settled) < 0.01, (min(settled), max(settled))
    late = hits[hits > 10.0]
    errors_ms = [abs(phase_error(clock, t)) * 60 / clock.bpm * 1000 for t in late]
    assert max(errors_ms) < 20.0, errors_ms


def test_a_tempo_change_is_followed():
    """120 BPM, then 100 BPM: within 10 s of the change the clock reads 100 within 1 %."""
    first, _ = beat_track(120, 12.0, snr_db=25.0)
    second, _ = beat_track(100, 14.0, snr_db=25.0, seed=1, first=0.0)
    clock = BeatClock()
    history = follow(np.concatenate([first, second]), clock)
    assert abs(np.mean([b for t, b in history if 10 < t < 12]) / 120 - 1) < 0.01
    assert abs(clock.bpm / 100 - 1) < 0.01


def test_the_same_update_twice_counts_once():
    """A caller that hands the clock the same features again (a frame without a new mel column)
    does not double the onsets: the clock reads the same tempo and phase as without the repeats."""
    samples, _ = beat_track(120, 10.0, snr_db=25.0)
    once, twice = BeatClock(), BeatClock()
    follow(samples, once)
    padded = torch.nn.functional.pad(torch.from_numpy(samples), (MEL.n_fft, 0))
    columns = MelSpectrogramFrontEnd(MEL)(padded)[:, 1:].numpy()
    tracker = SoundFeatureTracker(MEL)
    for end in range(FRAME_COLUMNS, columns.shape[1] + 1, FRAME_COLUMNS):
        features = tracker.push_columns(columns[:, end - FRAME_COLUMNS : end], end * MEL.hop)
        twice.observe(features)
        twice.observe(features)
    assert twice.bpm == once.bpm and twice.beat_at(10.0) == once.beat_at(10.0)


def test_noise_alone_moves_nothing():
    """Without a beat the follower finds no periodicity and the clock keeps its default tempo."""
    samples = (0.05 * np.random.default_rng(0).standard_normal(10 * 44100)).astype(np.float32)
    clock = BeatClock(bpm=97.0)
    follow(samples, clock)
    assert clock.bpm == 97.0 and clock.tempo_source == "default"


def test_tap_tempo_is_the_median_interval_and_each_tap_is_a_beat():
    clock = BeatClock()
    assert clock.tap(10.0) is None  # one tap: a beat, no tempo yet
    assert clock.phase_at(10.0) == pytest.approx(0.0)
    for i, jitter in enumerate([0.01, -0.01, 0.12, 0.0]):  # one bad tap among good ones
        bpm = clock.tap(10.0 + 0.5 * (i + 1) + jitter)
    assert bpm == pytest.approx(120.0, rel=0.03)
    assert clock.tempo_source == "tap"
    last = 12.0
    assert phase_error(clock, last) == pytest.approx(0.0, abs=1e-9)
    assert phase_error(clock, last + 0.5 * 60 / clock.bpm) == pytest.approx(-0.5, abs=1e-9)


def test_a_pause_starts_a_new_tap_run_and_a_double_hit_is_ignored():
    clock = BeatClock()
    for t in (0.0, 0.5, 1.0, 1.5):
        clock.tap(t)
    assert clock.bpm == pytest.approx(120.0)
    assert clock.tap(5.0) is None  # after a pause: a new run, the tempo stays until the second tap
    assert clock.bpm == pytest.approx(120.0)
    assert clock.tap(5.05) is None  # faster than 300 BPM: a double hit
    assert clock.ignored_taps == 1
    assert clock.tap(5.75) == pytest.approx(80.0)


def test_tapping_keeps_the_beat_count_continuous():
    """A tap puts the nearest whole beat on the tap; the count never jumps by a beat or more."""
    clock = BeatClock(bpm=120.0)
    before = clock.beat_at(3.1)
    clock.tap(3.1)
    assert abs(clock.beat_at(3.1) - before) <= 0.5
    assert clock.beat_at(3.1) == round(before)


def test_set_tempo_places_the_beat_for_an_external_clock():
    clock = BeatClock()
    clock.set_tempo(128.0, t=4.0, beat=33.25)
    state = clock.state_at(5.0)
    assert state.bpm == 128.0 and state.source == "external"
    assert state.beat == pytest.approx(33.25 + 128.0 / 60.0)
    assert state.phase == pytest.approx(state.beat % 1.0)


def test_an_external_clock_holds_the_audio_follower_off_while_it_plays():
    """Link sets the tempo every frame: a 150 BPM track does not move a 128 BPM Link tempo. When
    the external clock stops, the follower takes over after `manual_hold_seconds`."""
    samples, _ = beat_track(150, 20.0, snr_db=25.0)
    clock = BeatClock(BeatClockSettings(manual_hold_seconds=2.0))

    def link_until_10s(t: float) -> None:
        if t < 10.0:
            clock.set_tempo(128.0, t, beat=t * 128.0 / 60.0)

    history = follow(samples, clock, on_update=link_until_10s)
    assert all(b == 128.0 for t, b in history if t < 10.0)
    assert clock.tempo_source == "audio" and abs(clock.bpm / 150 - 1) < 0.01


def test_follow_audio_off_keeps_the_tapped_tempo():
    samples, _ = beat_track(150, 12.0, snr_db=25.0)
    clock = BeatClock(BeatClockSettings(manual_hold_seconds=0.0))
    clock.follow_audio = False
    clock.tap(0.0)
    clock.tap(0.6)
    follow(samples, clock)
    assert clock.bpm == pytest.approx(100.0) and clock.tempo_source == "tap"


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda: BeatClock(bpm=0.0), "bpm = 0.0"),
        (lambda: BeatClock().set_tempo(float("nan"), 1.0), "set_tempo: bpm = nan"),
        (lambda: BeatClock().set_tempo(120.0, float("inf")), "set_tempo: time = inf"),
        (lambda: BeatClock().tap("now"), "tap: time = 'now'"),
        (lambda: BeatClockSettings(min_bpm=100.0, max_bpm=120.0), "factor of 1.5"),
        (lambda: BeatClockSettings(tap_count=2.5), "tap_count = 2.5"),
        (lambda: BeatClockSettings(tempo_window_seconds=2.5), "three beats"),
    ],
)
def test_bad_input_is_a_one_line_error(make, fragment):
    with pytest.raises(SoundvjError) as err:
        make()
    assert fragment in str(err.value) and "\n" not in str(err.value)
