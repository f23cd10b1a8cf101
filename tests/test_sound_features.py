"""The streaming sound analysis (core.control.sound_features): onsets on time, bands where they
belong, the envelope's time constants, and live (chunked, windowed) equal to offline (whole clip)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from core.audio.mel import MelConfig, MelSpectrogramFrontEnd
from core.audio.windows import StreamingWindower, WindowConfig
from core.control.sound_features import FeatureSettings, SoundFeatures, SoundFeatureTracker
from core.errors import SoundvjError
from tests.click_tracks import SAMPLE_RATE, beat_track

MEL = MelConfig()


def live_features(samples: np.ndarray, settings: FeatureSettings | None = None, seed: int = 0,
                  window_seconds: float = 1.0) -> list[SoundFeatures]:
    """The render worker's way: audio arrives in uneven chunks, the windower takes them, and the
    tracker reads the windower's newest window after each chunk."""
    rng = np.random.default_rng(seed)
    windower = StreamingWindower(MEL, WindowConfig(fps=24.0, window_seconds=window_seconds))
    tracker = SoundFeatureTracker(MEL, settings)
    out, at = [], 0
    while at < samples.size:
        size = int(rng.integers(300, 3000))
        windower.push(samples[at : at + size])
        at += size
        out.append(tracker.update(windower.latest(), windower.samples_seen))
    return out


def clip_columns(samples: np.ndarray) -> torch.Tensor:
    """A whole clip's mel columns on the windower's grid: column m ends at sample m * hop (m >= 1)."""
    padded = torch.nn.functional.pad(torch.from_numpy(samples), (MEL.n_fft, 0))
    return MelSpectrogramFrontEnd(MEL)(padded)[:, 1:]


def all_onsets(features: list[SoundFeatures]) -> np.ndarray:
    return np.array([t for f in features for t in f.onsets])


def sine(frequency: float, seconds: float, dbfs: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (10 ** (dbfs / 20) * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


@pytest.mark.parametrize("bpm", [90, 120, 150])
def test_onsets_of_a_click_track_on_a_noise_floor_land_within_20_ms_of_the_clicks(bpm):
    """Every click gives exactly one onset within 20 ms; nothing else fires except the noise
    floor's own start (the sound appearing from silence at t = 0 is an onset too)."""
    samples, clicks = beat_track(bpm, 12.0, snr_db=20.0)
    onsets = all_onsets(live_features(samples))
    later = onsets[onsets > 0.1]
    assert np.all(onsets[onsets <= 0.1] < 0.03)
    nearest = np.abs(later[:, None] - clicks[None, :]).min(axis=0)
    assert nearest.max() < 0.020, f"a click's nearest onset is {nearest.max() * 1000:.1f} ms away"
    assert later.size == clicks.size, f"{later.size} onsets for {clicks.size} clicks"


def test_a_kick_is_an_onset_too():
    """A bass drum's slower, low attack (no broadband click) still gives one onset per kick, on time."""
    samples, kicks = beat_track(120, 8.0, snr_db=30.0, kind="kick")
    onsets = all_onsets(live_features(samples))
    later = onsets[onsets > 0.1]
    assert later.size == kicks.size
    assert np.abs(later - kicks).max() < 0.020


def test_live_chunks_and_offline_whole_clip_give_the_same_features():
    """Replay equals live: a whole clip's columns pushed at the same end samples as the live
    windower's updates give the same levels, envelope, flux and onsets (to float rounding)."""
    samples, _ = beat_track(120, 6.0, snr_db=20.0, kind="kick", seed=3)
    samples = samples + sine(440.0, 6.0, -30.0) * (np.arange(samples.size) > 2 * SAMPLE_RATE)
    live = live_features(samples, seed=7)
    columns = clip_columns(samples)
    tracker = SoundFeatureTracker(MEL)
    offline = []
    for f in live:
        m = round(f.time * SAMPLE_RATE) // MEL.hop
        offline.append(tracker.push_columns(columns[:, :m], m * MEL.hop))
    assert len(offline) == len(live) > 100
    for a, b in zip(live, offline):
        assert a.time == b.time
        assert a.onsets == pytest.approx(b.onsets, abs=1e-9)
        for name in ("level_db", "low_db", "mid_db", "high_db", "envelope", "flux", "onset_strength"):
            assert getattr(a, name) == pytest.approx(getattr(b, name), abs=1e-3), name


def test_an_update_without_new_columns_changes_nothing_and_repeats_no_onset():
    """At a frame rate above the mel column rate some frames bring no new column: the levels stay,
    and the onsets of the last update are not reported again."""
    tracker = SoundFeatureTracker(MEL)
    samples, _ = beat_track(120, 0.5, snr_db=30.0, first=0.2)
    columns = clip_columns(samples)
    end = columns.shape[1] * MEL.hop
    first = tracker.push_columns(columns, end)
    assert first.onsets and first.flux_columns
    again = tracker.push_columns(columns, end)
    assert again.onsets == () and again.flux_columns == ()
    assert again == dataclasses.replace(first, onsets=(), flux_columns=())
    assert tracker.push_columns(columns[:, :-3], end - 3 * MEL.hop) is again  # older columns: already seen


@pytest.mark.parametrize(
    "frequency, band", [(80.0, "low"), (1000.0, "mid"), (6000.0, "high")]
)
def test_a_sine_reads_in_its_band_at_its_level(frequency, band):
    """A -20 dBFS sine reads about -20 dB in its band and in the overall level (dB re a full-scale
    sine, like the mel front end), and at least 30 dB less in the other bands."""
    tracker = SoundFeatureTracker(MEL)
    columns = clip_columns(sine(frequency, 1.0, -20.0))
    f = tracker.push_columns(columns, columns.shape[1] * MEL.hop)
    levels = {"low": f.low_db, "mid": f.mid_db, "high": f.high_db}
    assert levels[band] == pytest.approx(-20.0, abs=2.0)
    assert f.level_db == pytest.approx(-20.0, abs=2.0)
    for other, level in levels.items():
        if other != band:
            assert level < -50.0, (other, level)
    assert getattr(f, band) == pytest.approx(1 - 20 / MEL.top_db, abs=2 / MEL.top_db)


def test_crossovers_move_what_counts_as_bass():
    """With the low/mid crossover at 100 Hz instead of 200 Hz, a 150 Hz tone is mid, not low."""
    columns = clip_columns(sine(150.0, 0.5, -20.0))
    end = columns.shape[1] * MEL.hop
    default = SoundFeatureTracker(MEL).push_columns(columns, end)
    moved = SoundFeatureTracker(MEL, FeatureSettings(low_mid_hz=100.0)).push_columns(columns, end)
    assert default.low_db > default.mid_db + 20
    assert moved.mid_db > moved.low_db + 20


def test_envelope_rises_with_attack_and_falls_with_release():
    """A quiet tone -> 30 dB louder -> quiet again: the envelope covers 1 - 1/e of the step about
    `attack` seconds after the level steps up, and falls back by that much about `release` seconds
    after it steps down. (The level itself steps over the 46 ms Hann window; the step counts from
    where the level is halfway.)"""
    settings = FeatureSettings(attack=0.3, release=1.0)
    quiet = sine(1000.0, 7.0, -40.0)
    loud = sine(1000.0, 7.0, -10.0)
    at = np.arange(quiet.size)
    samples = np.where((at >= 2 * SAMPLE_RATE) & (at < 4 * SAMPLE_RATE), loud, quiet)
    columns = clip_columns(samples)
    tracker = SoundFeatureTracker(MEL, settings)
    times, envelope, level = [], [], []
    for m in range(1, columns.shape[1] + 1):
        f = tracker.push_columns(columns[:, m - 1 : m], m * MEL.hop)
        times.append(f.time)
        envelope.append(f.envelope)
        level.append(f.level)
    times, envelope, level = np.array(times), np.array(envelope), np.array(level)
    low = envelope[(times > 1.5) & (times < 2.0)].mean()
    top = envelope[(times > 3.5) & (times < 4.0)].mean()
    assert low == pytest.approx(1 - 40 / MEL.top_db, abs=0.03)
    assert top == pytest.approx(1 - 10 / MEL.top_db, abs=0.03)
    step = top - low
    up = times[np.argmax(level > low + step / 2)]
    down = times[np.argmax((times > 3.0) & (level < low + step / 2))]
    rise = times[np.argmax(envelope > low + (1 - math.exp(-1)) * step)] - up
    assert rise == pytest.approx(0.3, abs=0.03)
    fall = times[np.argmax((times > 4.0) & (envelope < top - (1 - math.exp(-1)) * step))] - down
    assert fall == pytest.approx(1.0, abs=0.05)


def test_refractory_time_merges_close_hits():
    """Two clicks 40 ms apart: one onset with a 80 ms refractory time, two with 20 ms."""
    samples, _ = beat_track(60, 3.0, snr_db=30.0, first=1.0)
    second, _ = beat_track(60, 3.0, snr_db=30.0, first=1.04, seed=1)
    samples = samples + second
    columns = clip_columns(samples)
    end = columns.shape[1] * MEL.hop

    def onsets_near_1s(refractory: float) -> int:
        f = SoundFeatureTracker(MEL, FeatureSettings(refractory=refractory)).push_columns(columns, end)
        return sum(1 for t in f.onsets if 0.95 < t < 1.1)

    assert onsets_near_1s(0.08) == 1
    assert onsets_near_1s(0.02) == 2


def test_onset_source_values_and_strength():
    """The onset's audio time is kept (`last_onset`), and a hit's onset strength is near full scale."""
    samples, clicks = beat_track(120, 3.0, snr_db=30.0)
    columns = clip_columns(samples)
    f = SoundFeatureTracker(MEL).push_columns(columns, columns.shape[1] * MEL.hop)
    assert f.last_onset == pytest.approx(clicks[-1], abs=0.02)
    tracker = SoundFeatureTracker(MEL)
    strengths = [tracker.push_columns(columns[:, : m], m * MEL.hop).onset_strength for m in range(1, columns.shape[1])]
    assert max(strengths) > 0.5 and np.median(strengths) < 0.2


def test_updates_further_apart_than_a_window_count_the_lost_columns_and_invent_no_onset():
    samples = (0.01 * np.random.default_rng(0).standard_normal(3 * SAMPLE_RATE)).astype(np.float32)
    columns = clip_columns(samples)
    tracker = SoundFeatureTracker(MEL)
    tracker.push_columns(columns[:, :50], 50 * MEL.hop)
    f = tracker.push_columns(columns[:, 150:200], 200 * MEL.hop)
    assert tracker.skipped_columns == 100
    assert f.onsets == ()


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"attack": -1.0}, "sound features.attack = -1.0"),
        ({"release": math.nan}, "sound features.release = nan"),
        ({"low_mid_hz": 3000.0}, "must be below mid_high_hz"),
        ({"refractory": "0.1"}, "sound features.refractory = '0.1'"),
        ({"onset_full_scale": 0.0}, "expected a number in (0, 1]"),
    ],
)
def test_bad_settings_are_one_line_errors_naming_the_field(kwargs, fragment):
    with pytest.raises(SoundvjError) as err:
        FeatureSettings(**kwargs)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_crossovers_that_leave_a_band_empty_are_refused():
    with pytest.raises(SoundvjError, match="leave the high band without any"):
        SoundFeatureTracker(MEL, FeatureSettings(mid_high_hz=30000.0))


def test_wrong_shaped_columns_are_refused():
    with pytest.raises(SoundvjError, match=r"expected mel columns \[128, k\]"):
        SoundFeatureTracker(MEL).update(np.zeros((64, 10)), 10 * MEL.hop)
