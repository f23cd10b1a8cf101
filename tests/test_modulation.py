"""Modulators and the modulation matrix (core.control.modulation): the performer's examples (noise
on each kick, psi with the bass, a turn per bar), the LFO shapes and rates, clamping, what may be a
target, and the one-line errors of a modulation read from a file."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.audio.mel import MelConfig, MelSpectrogramFrontEnd
from core.control.beat_clock import BeatClock
from core.control.modulation import MAX_MODULATIONS, MODULATABLE, SOURCES, Modulation, ModulationMatrix
from core.control.sound_features import SoundFeatures, SoundFeatureTracker
from core.errors import SoundvjError
from core.params import NAMES, PARAMS, Params, spec
from tests.click_tracks import SAMPLE_RATE, beat_track

MEL = MelConfig()


def clock_at_120() -> BeatClock:
    clock = BeatClock()
    clock.set_tempo(120.0, t=0.0, beat=0.0)
    return clock


def test_noise_bursts_on_each_kick():
    """onset -> noise: on a kick track the noise jumps to base + depth at each kick's onset and
    decays by e every `decay` seconds until the next kick; between kicks it is near the base."""
    samples, kicks = beat_track(120, 4.0, snr_db=30.0, kind="kick", first=0.8)  # after the floor's own onset
    padded = torch.nn.functional.pad(torch.from_numpy(samples), (MEL.n_fft, 0))
    columns = MelSpectrogramFrontEnd(MEL)(padded)[:, 1:]
    tracker = SoundFeatureTracker(MEL)
    matrix = ModulationMatrix((Modulation("noise", "onset", 1.0, decay=0.1),))
    base = Params(noise=0.2)
    noise = []
    for end in range(4, columns.shape[1] + 1, 4):  # a video frame's worth of columns at a time
        features = tracker.push_columns(columns[:, end - 4 : end], end * MEL.hop)
        noise.append((features.time, matrix.apply(base, features, None, features.time).noise))
    times, values = np.array(noise).T
    for kick in kicks:
        just_after = values[(times > kick) & (times < kick + 0.05)]
        assert just_after.max() > 0.2 + 0.6, kick
        before = values[(times > kick - 0.15) & (times < kick - 0.05)]
        assert before.max() < 0.2 + 0.1, kick
    # The decay itself, exactly: 0.1 s after an onset the pulse is 1/e.
    features = SoundFeatures(time=5.0, last_onset=5.0)
    assert matrix.apply(base, features, None, 5.0).noise == pytest.approx(1.2)
    assert matrix.apply(base, features, None, 5.1).noise == pytest.approx(0.2 + math.exp(-1))


def test_psi_breathes_with_the_bass():
    """low -> psi: a bass tone swelling and fading moves psi with it, while a loud treble tone
    of the same shape does not."""
    t = np.arange(4 * SAMPLE_RATE) / SAMPLE_RATE
    swell = 0.5 - 0.5 * np.cos(2 * np.pi * t / 2.0)  # two breaths
    matrix = ModulationMatrix((Modulation("psi", "low", 0.5),))

    def psi_over_time(frequency: float) -> np.ndarray:
        samples = (0.3 * swell * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
        padded = torch.nn.functional.pad(torch.from_numpy(samples), (MEL.n_fft, 0))
        columns = MelSpectrogramFrontEnd(MEL)(padded)[:, 1:]
        tracker = SoundFeatureTracker(MEL)
        out = []
        for end in range(4, columns.shape[1] + 1, 4):
            f = tracker.push_columns(columns[:, end - 4 : end], end * MEL.hop)
            out.append(matrix.apply(Params(psi=0.5), f, None, f.time).psi)
        return np.array(out)

    bass = psi_over_time(60.0)
    loud_peak, quiet_trough = bass[len(bass) // 4], bass[len(bass) // 2 - 2]  # t = 1 s and t = 2 s
    assert loud_peak > 0.5 + 0.4 and quiet_trough < loud_peak - 0.1
    treble = psi_over_time(5000.0)
    assert treble.max() < 0.5 + 0.05


def test_rotation_turns_once_a_bar():
    """saw over 4 beats -> rotate_deg with depth 180: at 120 BPM the image turns through the whole
    circle every 2 s, linearly, and starts over on the bar."""
    matrix = ModulationMatrix((Modulation("rotate_deg", "saw", 180.0, beats=4),))
    clock = clock_at_120()
    angles = [matrix.apply(Params(), None, clock, t).rotate_deg for t in np.arange(0.0, 2.0, 0.25)]
    assert angles == pytest.approx([-180.0 + 45.0 * i for i in range(8)])
    assert matrix.apply(Params(), None, clock, 2.0).rotate_deg == pytest.approx(-180.0)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("sine", [0.0, 1.0, 0.0, -1.0]),
        ("saw", [-1.0, -0.5, 0.0, 0.5]),
        ("square", [1.0, 1.0, -1.0, -1.0]),
    ],
)
def test_lfo_shapes_over_one_cycle(source, expected):
    m = Modulation("pan_x", source, 1.0, beats=2)
    clock = clock_at_120()  # 2 beats = 1 s
    assert [m.value(None, clock, t) for t in (0.0, 0.25, 0.5, 0.75)] == pytest.approx(expected, abs=1e-12)


def test_lfo_offset_shifts_the_cycle():
    clock = clock_at_120()
    plain = Modulation("pan_x", "sine", 1.0, beats=1)
    shifted = Modulation("pan_x", "sine", 1.0, beats=1, offset=0.25)
    assert shifted.value(None, clock, 0.0) == pytest.approx(plain.value(None, clock, 0.125))


@pytest.mark.parametrize("beats", [0.25, 1.0, 16.0])
def test_lfo_rate_from_a_quarter_beat_to_four_bars(beats):
    """One cycle every `beats` beats: the saw wraps exactly then."""
    m = Modulation("pan_x", "saw", 1.0, beats=beats)
    clock = clock_at_120()
    period = beats * 0.5
    assert m.value(None, clock, 0.3 * period) == pytest.approx(-0.4)
    assert m.value(None, clock, 1.3 * period) == pytest.approx(-0.4)


def test_sample_and_hold_holds_within_a_cycle_and_is_the_same_in_a_replay():
    clock = clock_at_120()
    m = Modulation("pan_y", "sample_hold", 1.0, beats=1)
    per_beat = [[m.value(None, clock, beat * 0.5 + dt) for dt in (0.01, 0.2, 0.45)] for beat in range(64)]
    assert all(len(set(v)) == 1 for v in per_beat)
    values = np.array([v[0] for v in per_beat])
    assert len(set(values)) == 64 and values.min() >= -1.0 and values.max() < 1.0
    assert abs(values.mean()) < 0.3
    again = Modulation("pan_y", "sample_hold", 1.0, beats=1)  # a fresh object: a replay
    assert [again.value(None, clock, beat * 0.5 + 0.1) for beat in range(64)] == list(values)
    other_target = Modulation("pan_x", "sample_hold", 1.0, beats=1)
    assert [other_target.value(None, clock, b * 0.5 + 0.1) for b in range(64)] != list(values)


def test_modulations_on_one_target_add_up_and_clamp_to_the_range():
    matrix = ModulationMatrix((
        Modulation("psi", "low", 0.4),
        Modulation("psi", "high", 0.3),
    ))
    features = SoundFeatures(low=0.5, high=1.0)
    assert matrix.apply(Params(psi=0.5), features, None, 0.0).psi == pytest.approx(0.5 + 0.2 + 0.3)
    assert matrix.apply(Params(psi=1.2), features, None, 0.0).psi == spec("psi").maximum
    down = ModulationMatrix((Modulation("psi", "level", -1.5),))
    assert down.apply(Params(psi=0.5), SoundFeatures(level=1.0), None, 0.0).psi == spec("psi").minimum


def test_untouched_parameters_keep_their_values_and_the_input_is_not_changed():
    base = Params(alpha=0.3, noise=0.5, gain_db=6.0, window_seconds=0.5, seed=7, fps=30.0)
    matrix = ModulationMatrix((Modulation("noise", "envelope", 1.0),))
    out = matrix.apply(base, SoundFeatures(envelope=0.5), None, 0.0)
    assert out.diff(base) == {"noise": (1.0, 0.5)}
    assert base.noise == 0.5  # a new snapshot; the old one is untouched


def test_a_null_alpha_group_is_modulated_from_the_alpha_it_stands_for():
    matrix = ModulationMatrix((Modulation("alpha_fine", "onset_strength", 0.25),))
    out = matrix.apply(Params(alpha=0.4), SoundFeatures(onset_strength=1.0), None, 0.0)
    assert out.alphas() == pytest.approx((0.4, 0.4, 0.65))


def test_without_features_or_clock_the_sources_read_zero():
    matrix = ModulationMatrix((Modulation("noise", "onset", 1.0), Modulation("psi", "sine", 0.5, beats=1)))
    assert matrix.apply(Params(), None, None, 3.3) == Params()


def test_modulations_never_touch_what_the_sound_models_hear_or_restart_the_stream():
    """The sound models' input depends on gain_db and window_seconds; seed and fps restart the
    stream. None of them can be a target, so no matrix can change them, whatever its sources do."""
    heard_or_restarting = {s.name for s in PARAMS if s.group == "audio" or not s.live}
    assert heard_or_restarting == {"gain_db", "window_seconds", "seed", "fps"}
    assert not heard_or_restarting & set(MODULATABLE)
    assert set(MODULATABLE) | heard_or_restarting == set(NAMES)
    for name in heard_or_restarting:
        with pytest.raises(SoundvjError, match="restarts the stream|changes what the sound models hear"):
            Modulation(name, "low", 1.0)
    everything = ModulationMatrix(tuple(
        Modulation(target, source, spec(target).maximum - spec(target).minimum,
                   **({"beats": 0.25} if source in ("sine", "saw", "square", "sample_hold") else {}))
        for target in MODULATABLE for source in ("onset", "high", "saw")
    ))
    loud = SoundFeatures(time=1.0, level=1.0, low=1.0, mid=1.0, high=1.0, envelope=1.0, onset_strength=1.0, last_onset=1.0)
    base = Params(gain_db=-12.0, window_seconds=2.0, seed=5, fps=50.0)
    out = everything.apply(base, loud, clock_at_120(), 1.1)
    for name in heard_or_restarting:
        assert getattr(out, name) == getattr(base, name)


def test_dict_round_trip_keeps_the_options_that_apply():
    items = [
        Modulation("noise", "onset", 0.8, decay=0.35),
        Modulation("rotate_deg", "saw", 180.0, beats=4.0, offset=0.5),
        Modulation("psi", "low", -0.4),
    ]
    dicts = [m.to_dict() for m in items]
    assert dicts[0] == {"target": "noise", "source": "onset", "depth": 0.8, "decay": 0.35}
    assert dicts[2] == {"target": "psi", "source": "low", "depth": -0.4}
    assert [Modulation.from_dict(d) for d in dicts] == items
    matrix = ModulationMatrix(tuple(items))
    assert ModulationMatrix.from_list(matrix.to_list()) == matrix


@pytest.mark.parametrize(
    "item, fragment",
    [
        ({"target": "nosie", "source": "low", "depth": 1}, "[1].target = 'nosie': not a parameter; did you mean 'noise'?"),
        ({"target": "gain_db", "source": "low", "depth": 1}, "[1].target = 'gain_db': 'gain_db' changes what the sound models hear"),
        ({"target": "seed", "source": "low", "depth": 1}, "'seed' restarts the stream"),
        ({"target": "noise", "source": "kick", "depth": 1}, "[1].source = 'kick': unknown source"),
        ({"target": "noise", "source": "low", "depth": 2.5}, "[1].depth = 2.5: expected a number in [-2, 2]"),
        ({"target": "noise", "source": "low", "depth": ".nan"}, "[1].depth = '.nan'"),
        ({"target": "noise", "source": "low", "depth": True}, "[1].depth = True"),
        ({"target": "noise", "source": "saw", "depth": 1, "beats": 32}, "[1].beats = 32: expected a number in [0.25, 16]"),
        ({"target": "noise", "source": "saw", "depth": 1, "offset": 1.0}, "[1].offset = 1.0: expected a number in [0, 1)"),
        ({"target": "noise", "source": "low", "depth": 1, "beats": 2}, "[1].beats: applies to the sine / saw / square / sample_hold sources only"),
        ({"target": "noise", "source": "low", "depth": 1, "decay": 0.5}, "[1].decay: applies to the onset source only"),
        ({"target": "noise", "source": "low"}, "[1]: missing 'depth'"),
        ({"target": "noise", "source": "low", "depth": 1, "rate": 2}, "[1]: unknown key 'rate'"),
        (["noise", "low", 1], "[1]: expected a mapping with target, source and depth, got list"),
    ],
)
def test_a_bad_modulation_is_a_one_line_error_naming_its_place_and_field(item, fragment):
    good = {"target": "psi", "source": "low", "depth": 0.1}
    with pytest.raises(SoundvjError) as err:
        ModulationMatrix.from_list([good, item], "look.yaml: modulations")
    message = str(err.value)
    assert message.startswith("look.yaml: modulations[1]") and fragment in message and "\n" not in message, message


def test_the_matrix_holds_at_most_64_modulations():
    one = Modulation("psi", "low", 0.1)
    assert len(ModulationMatrix((one,) * MAX_MODULATIONS)) == MAX_MODULATIONS == 64
    with pytest.raises(SoundvjError, match="65 modulations; at most 64"):
        ModulationMatrix((one,) * 65)
    with pytest.raises(SoundvjError, match="look.yaml: modulations: 65 modulations"):
        ModulationMatrix.from_list([one.to_dict()] * 65, "look.yaml: modulations")


def test_editing_the_matrix_gives_new_matrices():
    matrix = ModulationMatrix((Modulation("psi", "low", 0.1), Modulation("rotate_deg", "saw", 90.0, beats=4)))
    deeper = matrix.replaced(0, depth=0.3)
    assert deeper.modulations[0].depth == 0.3 and matrix.modulations[0].depth == 0.1
    to_audio = matrix.replaced(1, source="envelope")  # the LFO's beats do not carry over
    assert to_audio.modulations[1].to_dict() == {"target": "rotate_deg", "source": "envelope", "depth": 90.0}
    assert matrix.removed(0).targets == ("rotate_deg",)
    assert matrix.added(Modulation("noise", "onset", 0.5)).targets == ("noise", "psi", "rotate_deg")
    with pytest.raises(SoundvjError, match="modulation 0.depth = 5"):
        matrix.replaced(0, depth=5)
    with pytest.raises(SoundvjError, match="no modulation 2"):
        matrix.removed(2)


def test_every_source_has_a_value_in_its_range():
    clock = clock_at_120()
    features = SoundFeatures(time=2.0, level=0.7, low=0.2, mid=0.5, high=0.9, envelope=0.6,
                             onset_strength=0.4, last_onset=1.9)
    for source in SOURCES:
        options = {"beats": 0.5} if source in ("sine", "saw", "square", "sample_hold") else {}
        m = Modulation("pan_x", source, 1.0, **options)
        for t in np.linspace(2.0, 4.0, 37):
            value = m.value(features, clock, float(t))
            low = -1.0 if options else 0.0
            assert low <= value <= 1.0, (source, t, value)
