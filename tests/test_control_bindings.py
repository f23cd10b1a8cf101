"""The control layer without sockets: bindings and their value mapping, the mapping file, the dispatcher
driving a real `LiveSession` (registry checks, presets, learn, rate-limited problems), and the render
worker's side (a knob during a preset fade, modulations from a preset, taps reaching the beat clock).

MIDI events are the MIDI input's own `MidiEvent`s, handed to the dispatcher as its thread would.
"""

import math
import os
import time

import pytest
import yaml

from core.control import ClockState, Modulation, ModulationMatrix, SoundFeatures
from core.errors import SoundvjError
from core.params import Params
from core.presets import Preset, save_preset
from tests.click_tracks import beat_track
from tests.live_helpers import wait_for
from tests.pipeline_helpers import tiny_model
from visualizer.control.bindings import Binding, ControlSource, ControlTarget, shape
from visualizer.control.config import ControlConfig, parse_host_port
from visualizer.control.dispatcher import ControlDispatcher
from visualizer.control.mapping_file import MAX_MAPPING_BYTES, load_mapping, save_mapping
from visualizer.control.midi import MidiEvent, MidiSettings
from visualizer.control.reporting import RateLimitedReporter
from visualizer.render_worker import ParamCommand, ParamCommandBox
from visualizer.session import LiveSession


def cc(number: int, value: int, channel: int = 1) -> MidiEvent:
    return MidiEvent("cc", channel, number, value, "test port", time.monotonic())


def note(number: int, velocity: int = 100, channel: int = 1) -> MidiEvent:
    return MidiEvent("note_on", channel, number, velocity, "test port", time.monotonic())


def psi_knob(**options) -> Binding:
    return Binding(ControlSource("cc", number=21, channel=1), ControlTarget("param", param="psi"), **options)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture
def session(model, tmp_path):
    """A session whose mapping file is in tmp_path, with two presets of its own; the worker is not
    started, so tests step it with `tick()`."""
    messages: list[str] = []
    s = LiveSession(model, Params(fps=24), control=ControlConfig(mapping_path=tmp_path / "mapping.yaml"),
                    on_message=messages.append)
    s.presets = [
        Preset("dark", values={"psi": 0.2, "alpha": 0.1}),
        Preset("bright", values={"psi": 1.3, "noise": 1.5}, modulations=()),
    ]
    s.test_messages = messages
    yield s
    s.stop()


# -- bindings -----------------------------------------------------------------------------------------


def test_value_mapping_spreads_a_control_over_min_max_with_invert_and_curves():
    linear = psi_knob()
    assert linear.value_for(0.0) == 0.0 and linear.value_for(1.0) == 1.5 and linear.value_for(0.5) == 0.75
    narrow = psi_knob(minimum=0.4, maximum=0.9)
    assert narrow.value_for(0.0) == 0.4 and narrow.value_for(1.0) == pytest.approx(0.9)
    inverted = psi_knob(minimum=0.4, maximum=0.9, invert=True)
    assert inverted.value_for(0.0) == pytest.approx(0.9) and inverted.value_for(1.0) == 0.4
    assert linear.value_for(7.0) == 1.5 and linear.value_for(-3.0) == 0.0  # clamped to the control's travel
    exp, log = psi_knob(curve="exp"), psi_knob(curve="log")
    assert exp.value_for(0.5) < linear.value_for(0.5) < log.value_for(0.5)
    xs = [i / 20 for i in range(21)]
    for curve in ("exp", "log"):
        ys = [shape(x, curve) for x in xs]
        assert ys[0] == 0.0 and ys[-1] == pytest.approx(1.0) and ys == sorted(ys)
    fade = Binding(ControlSource("osc", address="/fader/7"), ControlTarget("fade"))
    assert fade.value_for(1.0) == 30.0


@pytest.mark.parametrize("make, words", [
    (lambda: psi_knob(minimum=2.0), "min = 2"),
    (lambda: psi_knob(minimum=0.9, maximum=0.4), "must be below max"),
    (lambda: psi_knob(curve="cubic"), "curve 'cubic'"),
    (lambda: psi_knob(minimum=float("nan")), "min = nan"),
    (lambda: Binding(ControlSource("note", number=36), ControlTarget("tap"), invert=True), "not to tap"),
    (lambda: ControlSource("cc", number=128), "whole number in [0, 127]"),
    (lambda: ControlSource("cc", number=1, channel=0), "channel"),
    (lambda: ControlSource("osc", address="/soundvj/param/psi"), "built-in table"),
    (lambda: ControlSource("osc", address="fader"), "must start with '/'"),
    (lambda: ControlTarget("param", param="psy"), "did you mean 'psi'"),
    (lambda: ControlTarget("tapp"), "did you mean 'tap'"),
    (lambda: ControlTarget("preset", preset=0), "preset number"),
])
def test_bad_bindings_are_one_line_errors_naming_what_is_wrong(make, words):
    with pytest.raises(SoundvjError) as e:
        make()
    assert words in str(e.value) and "\n" not in str(e.value)


def test_config_checks_the_flags_in_one_place(tmp_path):
    assert parse_host_port("127.0.0.1:9001", "--osc-out") == ("127.0.0.1", 9001)
    assert parse_host_port("[::1]:9", "--osc-out") == ("::1", 9)
    for bad in ("9001", "host:", "host:99999", "a b:1"):
        with pytest.raises(SoundvjError, match="--osc-out"):
            parse_host_port(bad, "--osc-out")
    with pytest.raises(SoundvjError, match="--osc-port"):
        ControlConfig(osc_port=70000)
    with pytest.raises(SoundvjError, match="is a folder"):
        ControlConfig(mapping_path=tmp_path)


# -- the mapping file ---------------------------------------------------------------------------------


def test_mapping_file_round_trips_every_kind_of_binding(tmp_path):
    bindings = (
        psi_knob(minimum=0.3, maximum=1.2, curve="exp", invert=True),
        Binding(ControlSource("cc", number=7), ControlTarget("param", param="seed")),
        Binding(ControlSource("note", number=36, channel=10), ControlTarget("preset", preset=2)),
        Binding(ControlSource("note", number=37), ControlTarget("preset", preset="storm")),
        Binding(ControlSource("osc", address="/1/push1"), ControlTarget("next_preset")),
        Binding(ControlSource("osc", address="/1/fader2"), ControlTarget("fade"), maximum=8.0),
        Binding(ControlSource("key", key="B"), ControlTarget("tap")),
        Binding(ControlSource("cc", number=64), ControlTarget("record")),
        Binding(ControlSource("cc", number=65), ControlTarget("freeze")),
        Binding(ControlSource("cc", number=66), ControlTarget("previous_preset")),
    )
    path = save_mapping(tmp_path / "sub" / "mapping.yaml", bindings)
    assert load_mapping(path) == bindings
    doc = yaml.safe_load(path.read_text())
    assert doc["version"] == 1 and doc["bindings"][6] == {"source": {"key": "b"}, "target": "tap"}
    assert [p.name for p in path.parent.iterdir()] == ["mapping.yaml"]  # no temp file left behind


@pytest.mark.parametrize("text, words", [
    ("version: 1\nbindings:\n  - &a {source: {cc: 1}, target: tap}\n  - *a\n", "aliases"),
    ("version: 1\nversion: 1\nbindings: []\n", "duplicate key 'version'"),
    ("version: 1\nbindings:\n  - {source: {cc: 1, cc: 2}, target: tap}\n", "duplicate key 'cc'"),
    ("version: 3\nbindings: []\n", "version 3 is not supported"),
    ("bindings: []\n", "missing 'version'"),
    ("version: 1\nbindngs: []\n", "did you mean 'bindings'"),
    ("version: 1\nbindings: {cc: 1}\n", "'bindings' must be a list"),
    ("version: 1\nbindings:\n  - {source: {cc: 1}, target: {param: psy}}\n", "bindings[0]: unknown parameter 'psy'"),
    ("version: 1\nbindings:\n  - {source: {cc: 1}}\n", "bindings[0]: missing 'target'"),
    ("version: 1\nbindings:\n  - {source: {cc: 1, osc: /x}, target: tap}\n", "exactly one of"),
    ("version: 1\nbindings:\n  - {source: {cc: 1}, target: tap}\n  - {source: {cc: 1}, target: tap}\n",
     "bindings[1]: CC 1 (any channel) -> tap repeats bindings[0]"),
    ("version: 1\nbindings: [\n", "invalid YAML at line"),
    ("- just a list\n", "top level must be a mapping"),
])
def test_broken_mapping_files_are_one_line_errors_naming_the_file(tmp_path, text, words):
    path = tmp_path / "mapping.yaml"
    path.write_text(text)
    with pytest.raises(SoundvjError) as e:
        load_mapping(path)
    assert words in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_an_oversized_mapping_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "mapping.yaml"
    path.write_text("version: 1\n#" + "x" * MAX_MAPPING_BYTES + "\n")
    with pytest.raises(SoundvjError, match="too large"):
        load_mapping(path)


def test_a_broken_mapping_file_leaves_the_loaded_bindings_in_use(session):
    path = session.control.mapping_path
    save_mapping(path, [psi_knob()])
    assert session.control.load_mapping()
    path.write_text("version: 1\nbindings:\n  - {source: {cc: 300}, target: tap}\n")
    assert not session.control.load_mapping()
    assert session.control.bindings == (psi_knob(),)
    assert "kept the 1 binding in use" in session.test_messages[-1] and "cc number = 300" in session.test_messages[-1]
    session.control.midi(cc(21, 127))
    assert session.target.psi == 1.5  # and it still works


# -- the dispatcher on a real session ------------------------------------------------------------------


def test_a_cc_moves_a_parameter_through_the_binding_and_the_registry(session):
    session.control.set_bindings([psi_knob(minimum=0.5, maximum=1.0),
                                  Binding(ControlSource("cc", number=22), ControlTarget("param", param="seed"))])
    session.control.midi(cc(21, 127))
    assert session.target.psi == 1.0
    session.control.midi(cc(21, 0, channel=2))  # bound on channel 1 only
    assert session.target.psi == 1.0
    session.control.midi(cc(22, 64))  # any channel; a whole-number knob gets a whole number
    assert session.target.seed == round(64 / 127 * (2**31 - 1))
    frame = session.worker.tick()
    assert frame.params.psi == 1.0 and frame.base_params.psi == 1.0


def test_values_outside_the_registry_are_clamped_or_refused_and_counted(session):
    d = session.control
    assert d.set_param("psi", 9.0, "test")  # clamped
    assert session.target.psi == 1.5
    for bad in (float("nan"), float("inf"), "loud", True, None, [1]):
        assert not d.set_param("psi", bad, "test")
    assert not d.set_param("seed", 2.5, "test")  # a fraction for a whole number
    assert not d.set_param("psy", 1.0, "test")
    assert session.target.psi == 1.5 and session.target.seed == 0
    counts = d.reporter.counts
    assert counts["clamped:psi"] == 1 and counts["refused:psi"] == 6 and counts["refused:seed"] == 1
    assert counts["unknown-param"] == 1
    # One message per kind within the interval: the first clamp, the first refusal of each, the unknown name.
    assert len(session.test_messages) == 4 and all("\n" not in m for m in session.test_messages)


def test_the_reporter_says_the_first_problem_and_then_at_most_one_per_interval_with_the_count():
    said = []
    r = RateLimitedReporter(said.append, interval=0.2)
    for _ in range(50):
        r.report("nan", "OSC: NaN")
    r.report("unknown", "OSC: unknown")
    assert said == ["OSC: NaN", "OSC: unknown"] and r.counts == {"nan": 50, "unknown": 1}
    time.sleep(0.25)
    r.report("nan", "OSC: NaN")
    assert said[-1] == "OSC: NaN (and 49 more like it)" and r.total() == 52


def test_notes_pick_presets_and_ccs_fire_actions_once_per_press(session):
    d = session.control
    d.set_bindings([
        Binding(ControlSource("note", number=36), ControlTarget("preset", preset=2)),
        Binding(ControlSource("note", number=37), ControlTarget("preset", preset="DARK")),
        Binding(ControlSource("cc", number=64), ControlTarget("freeze")),
        Binding(ControlSource("note", number=38), ControlTarget("next_preset")),
    ])
    d.midi(note(36))
    assert session.look == "bright" and session.target.psi == 1.3
    d.midi(note(37))
    assert session.look == "dark" and session.target.psi == 0.2
    d.midi(note(38))
    assert session.look == "bright"
    d.midi(note(38))
    assert session.look == "dark"  # wraps round
    for value in (127, 127, 100, 0, 127):  # a button CC: press, held, held, release, press
        d.midi(cc(64, value))
    assert session.worker.frozen.is_set() is False  # toggled twice: two presses
    d.midi(cc(64, 0))
    d.midi(cc(64, 127))
    assert session.worker.frozen.is_set()


def test_learn_binds_the_next_cc_saves_it_and_the_mapping_survives_a_preset_load_and_a_restart(session, model):
    d = session.control
    d.learn(ControlTarget("param", param="noise"))
    d.midi(cc(30, 127, channel=3))
    assert d.learning is None and session.target.noise == 2.0
    assert load_mapping(d.mapping_path) == (Binding(ControlSource("cc", number=30, channel=3),
                                                    ControlTarget("param", param="noise")),)
    d.midi(cc(30, 0, channel=3))
    assert session.target.noise == 0.0
    # Learning another control for the same target replaces the first.
    d.learn(ControlTarget("param", param="noise"))
    d.midi(cc(31, 64, channel=3))
    assert [b.source.number for b in d.bindings] == [31]
    # A preset that sets noise loads; the knob keeps working afterwards.
    assert session.apply_preset(session.presets[1], fade_seconds=0.0) is not None
    assert session.target.noise == 1.5
    d.midi(cc(31, 127, channel=3))
    assert session.target.noise == 2.0 and session.target.psi == 1.3  # the preset's psi stays
    # A restart reads the same mapping file.
    again = LiveSession(model, Params(), control=ControlConfig(mapping_path=d.mapping_path))
    try:
        again.control.midi(cc(31, 0, channel=3))
        assert again.target.noise == 0.0
    finally:
        again.stop()


def test_a_mapping_file_that_cannot_be_written_is_a_message_and_the_binding_works(session, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    d = ControlDispatcher(session, blocker / "mapping.yaml")  # its folder is a file
    d.learn(ControlTarget("param", param="psi"))
    d.midi(cc(5, 127))
    assert session.target.psi == 1.5
    assert "cannot write the mapping file" in session.test_messages[-2]


def test_a_dispatcher_never_raises_into_the_calling_thread(session):
    class Broken:
        kind, channel, number, value, received_at = "cc", 1, 21, object(), 0.0

    session.control.set_bindings([psi_knob()])
    session.control.midi(Broken())  # a value that is not a number
    session.control.midi(MidiEvent("pitchwheel", 1, 0, 0, "p", 0.0))
    assert session.control.reporter.total() == 2


# -- the render worker's side --------------------------------------------------------------------------


def test_a_knob_moved_during_a_preset_fade_jumps_while_the_fade_goes_on(session):
    worker = session.worker
    worker.tick()
    session.apply_preset(session.presets[1], fade_seconds=30.0)  # psi 0.7 -> 1.3, noise 0.3 -> 1.5
    worker.tick()
    session.control.set_param("alpha", 0.9, "test")
    frame = worker.tick()
    assert frame.params.alpha == 0.9  # the knob is there at once
    assert 0.3 <= frame.params.noise < 1.0 and 0.7 <= frame.params.psi < 1.0  # the preset still fading
    assert worker.base_params.alpha == 0.9


def test_a_knob_posted_right_after_a_preset_keeps_the_preset_fade():
    box = ParamCommandBox()
    preset = Params(psi=1.3)
    box.put(ParamCommand(preset, 2.0, "bright"))
    box.put(ParamCommand(preset.replace(alpha=0.9), 0.0, "", cut=frozenset({"alpha"}), keep_fade=True))
    command = box.take()
    assert command == ParamCommand(preset.replace(alpha=0.9), 2.0, "bright", frozenset({"alpha"}), False)
    assert box.take() is None and box.merged == 1


def test_a_preset_with_modulations_moves_the_rendered_params_not_the_base(session):
    worker = session.worker
    session.apply_preset(Preset("turning", values={"rotate_deg": 0.0},
                                modulations=(Modulation("rotate_deg", "saw", 90.0),)), 0.0)
    frames = [worker.tick() for _ in range(6)]
    assert all(f.base_params.rotate_deg == 0.0 for f in frames)
    # No audio has arrived, so audio time stands at 0: the saw sits at the start of its cycle (-1).
    assert all(f.params.rotate_deg == pytest.approx(-90.0) for f in frames)
    session.apply_preset(session.presets[0], 0.0)  # a v1-style preset: the matrix stays
    assert len(session.modulations) == 1
    session.apply_preset(session.presets[1], 0.0)  # modulations=(): the matrix is emptied
    assert session.modulations == ModulationMatrix()
    assert worker.tick().params == worker.base_params


def test_taps_reach_the_beat_clock_and_the_status(session):
    worker = session.worker
    start = time.monotonic()
    for i in range(4):  # a tap every half second: 120 BPM (taps carry their own times)
        session.control.perform(ControlTarget("tap"), at=start + 0.5 * i)
    worker.tick()
    status, _ = worker.status.peek()
    assert status.bpm == pytest.approx(120.0, rel=0.01) and status.tempo_source == "tap"
    assert 0.0 <= status.beat_phase < 1.0


def test_a_pad_bound_to_tap_sets_the_tempo_from_the_notes_arrival_times(session):
    session.control.set_bindings([Binding(ControlSource("note", number=40, channel=10), ControlTarget("tap"))])
    start = time.monotonic()
    for i in range(4):  # 100 BPM: a hit every 0.6 s, stamped by the MIDI input when it arrived
        session.control.midi(MidiEvent("note_on", 10, 40, 90, "pads", start + 0.6 * i))
        session.control.midi(MidiEvent("note_off", 10, 40, 0, "pads", start + 0.6 * i + 0.1))
    session.worker.tick()
    status, _ = session.worker.status.peek()
    assert status.bpm == pytest.approx(100.0, rel=0.01) and status.tempo_source == "tap"


def test_modulator_bindings_round_trip_and_refuse_unknown_signals(tmp_path):
    binding = Binding(ControlSource("modulator", signal="onset"), ControlTarget("next_preset"))
    assert Binding.from_dict(binding.to_dict(), "b") == binding
    assert binding.to_dict()["source"] == {"modulator": "onset"}
    with pytest.raises(SoundvjError, match="modulator 'onsett'; did you mean 'onset'"):
        ControlSource.from_dict({"modulator": "onsett"}, "bindings[0]")
    with pytest.raises(SoundvjError, match="a modulator source has no 'key'"):
        ControlSource("modulator", signal="beat", key="b")


def test_modulator_events_fire_once_each_and_levels_move_parameters(session):
    """Frames' analysis as the modulator thread hands it over: an onset picks the next preset, each
    new bar taps, the bass level moves psi over the binding's range, and a level fires an action only
    as it rises past half."""
    session.control.set_bindings([
        Binding(ControlSource("modulator", signal="onset"), ControlTarget("next_preset")),
        Binding(ControlSource("modulator", signal="bar"), ControlTarget("tap")),
        Binding(ControlSource("modulator", signal="low"), ControlTarget("param", param="psi"), minimum=0.5, maximum=1.0),
        Binding(ControlSource("modulator", signal="high"), ControlTarget("freeze")),
    ])
    taps: list[float] = []
    session.tap = lambda at=None: taps.append(at)
    frames = [  # (onsets, low, high, beat)
        ((), 0.0, 0.0, 3.5), ((0.1,), 0.0, 0.0, 3.9), ((), 0.4, 0.7, 4.1), ((), 1.0, 0.9, 4.6),
        ((0.3,), 0.2, 0.2, 7.9), ((), 0.2, 0.6, 8.2),
    ]
    looks, psis = [], []
    for onsets, low, high, beat in frames:
        session.control.modulators(SoundFeatures(onsets=onsets, low=low, high=high),
                                   ClockState(bpm=120.0, beat=beat, phase=beat % 1.0, source="tap"))
        looks.append(session.look)
        psis.append(session.target.psi)
    assert looks == ["", "dark", "dark", "dark", "bright", "bright"]  # one preset step per onset
    assert len(taps) == 2  # bars start at beats 4 and 8
    assert psis[2:] == pytest.approx([0.7, 1.0, 0.6, 0.6])  # 0.5 + low x 0.5 (the first frame only primes)
    assert session.worker.frozen.is_set() is False  # high rose past half twice: frozen, then unfrozen
    assert session.control.reporter.total() == 0


def test_onsets_in_the_sound_step_the_presets_through_the_render_thread_and_the_modulator_thread(session):
    """End to end: a kick track reaches the render worker; its frames' onsets go through the
    modulator feed (a frame sink with its own thread) to a binding that picks the next preset."""
    session.control.set_bindings([Binding(ControlSource("modulator", signal="onset"), ControlTarget("next_preset"))])
    picked: list[str] = []
    apply_preset = session.apply_preset
    session.apply_preset = lambda preset, fade_seconds=None: (picked.append(preset.name),
                                                              apply_preset(preset, fade_seconds))[1]
    session.start_control()
    samples, hits = beat_track(120.0, 4.0, snr_db=30.0, kind="kick")
    block = session.sample_rate // 24
    for start in range(0, samples.size, block):  # as a sound card would: a frame's worth at a time
        session.ring.write(samples[start:start + block])
        session.worker.tick()
    assert wait_for(lambda: len(picked) >= len(hits) - 1, timeout=10.0), (picked, len(hits))
    assert len(picked) <= len(hits) and picked[:2] == ["dark", "bright"]
    assert session.control.reporter.total() == 0


def test_modulation_depth_from_a_control_edits_the_matrix(session):
    d = session.control
    assert d.set_modulation("psi", "low", 0.4, "test")
    assert d.set_modulation("psi", "low", 0.6, "test")
    assert [(m.target, m.source, m.depth) for m in session.modulations] == [("psi", "low", 0.6)]
    assert d.set_modulation("psi", "low", 99.0, "test")  # clamped to the range's span
    assert session.modulations.modulations[0].depth == 1.5
    assert not d.set_modulation("gain_db", "low", 1.0, "test")  # moves what the models hear: refused
    assert not d.set_modulation("psi", "wobble", 1.0, "test")
    assert not d.set_modulation("psi", "low", math.nan, "test")
    assert d.set_modulation("psi", "low", 0, "test")
    assert len(session.modulations) == 0


def test_presets_saved_with_modulations_load_back_into_the_session(session, tmp_path):
    path = save_preset(tmp_path / "wob.yaml", Params(psi=0.5), only=["psi"],
                       modulations=(Modulation("psi", "sine", 0.2),))
    session.apply_preset(str(path), 0.0)
    assert [(m.target, m.source) for m in session.modulations] == [("psi", "sine")]


@pytest.mark.skipif(not (os.environ.get("DISPLAY") or os.environ.get("QT_QPA_PLATFORM")),
                    reason="no display: run the tests through ./dev.sh test (it starts Xvfb)")
def test_the_window_taps_on_t_shows_the_tempo_and_passes_bound_keys_to_the_dispatcher(model, qtbot, tmp_path):
    from PyQt6 import QtCore  # the window's modules need a display

    from visualizer.main_window import MainWindow, delete_window_now

    session = LiveSession(model, Params(fps=24), control=ControlConfig(mapping_path=tmp_path / "mapping.yaml"))
    session.presets = [Preset("dark", values={"psi": 0.2}), Preset("bright", values={"psi": 1.3})]
    session.control.set_bindings([Binding(ControlSource("key", key="b"), ControlTarget("next_preset"))])
    window = MainWindow(session)
    try:
        window.show()
        qtbot.waitExposed(window)
        session.worker.start()
        for _ in range(4):
            qtbot.keyClick(window, QtCore.Qt.Key.Key_T)
            qtbot.wait(500)
        qtbot.waitUntil(lambda: "BPM tap" in window.status_tempo.text(), timeout=5000)
        assert float(window.status_tempo.text().split()[0]) == pytest.approx(120.0, rel=0.05)
        qtbot.keyClick(window, QtCore.Qt.Key.Key_B)
        assert session.look == "dark"
    finally:
        delete_window_now(window)


@pytest.mark.skipif(not (os.environ.get("DISPLAY") or os.environ.get("QT_QPA_PLATFORM")),
                    reason="no display: run the tests through ./dev.sh test (it starts Xvfb)")
def test_the_sliders_and_fade_box_follow_remote_changes_so_a_slider_move_does_not_undo_them(model, qtbot, tmp_path):
    from visualizer.main_window import MainWindow, delete_window_now  # the window's modules need a display

    session = LiveSession(model, Params(fps=24, psi=0.7), control=ControlConfig(mapping_path=tmp_path / "mapping.yaml"))
    window = MainWindow(session)
    try:
        window.show()
        qtbot.waitExposed(window)
        session.change_params({"psi": 0.3})  # as an OSC message or a MIDI knob does, from another thread
        session.fade_seconds = 4.0
        qtbot.waitUntil(lambda: window.param_panel.controls["psi"].value() == pytest.approx(0.3), timeout=3000)
        qtbot.waitUntil(lambda: window.fade_box.value() == pytest.approx(4.0), timeout=3000)
        window.param_panel.controls["alpha"].set_value(0.55)
        window.param_panel.controls["alpha"].edited.emit()  # the performer moves another slider
        assert session.target.psi == pytest.approx(0.3) and session.target.alpha == pytest.approx(0.55)
        window.fade_box.setValue(2.5)
        assert session.fade_seconds == pytest.approx(2.5)
    finally:
        delete_window_now(window)


def test_a_midi_port_that_is_not_there_is_a_message_and_the_session_plays_on(model, tmp_path):
    messages: list[str] = []
    session = LiveSession(model, Params(), on_message=messages.append,
                          control=ControlConfig(mapping_path=tmp_path / "m.yaml", midi=MidiSettings(port="no such port")))
    try:
        session.start_control()
        assert session.midi_in is not None and session.midi_in.state in ("unavailable", "waiting")
        assert any("MIDI" in m for m in messages)
        assert session.worker.tick().index == 0
    finally:
        session.stop()
    assert session.midi_in is None
