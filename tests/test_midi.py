"""MIDI input over real MIDI ports: a JACK server (dummy backend) started by the fixture, a virtual
output port in the test playing the controller, and the app's `MidiInput` listening on the JACK API.
Nothing is mocked: each message travels from the test's port through the JACK server into rtmidi's
callback, our queue and thread, and the handler.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.errors import SoundvjError
from core.params import Params, spec
from tests.jack_server import ControllerProcess, jack_server, start_jack_server  # noqa: F401 - the fixture
from tests.live_helpers import wait_for, write_wav
from tests.pipeline_helpers import tiny_model
from visualizer.control.bindings import ControlSource, ControlTarget
from visualizer.control.config import ControlConfig
from visualizer.control.mapping_file import load_mapping
from visualizer.control.midi import (
    MidiEvent,
    MidiInput,
    MidiSettings,
    add_midi_arguments,
    decode,
    describe_event,
    find_port,
    midi_settings_from_args,
    port_key,
)
from visualizer.session import InputChoice, LiveSession

mido = pytest.importorskip("mido", reason="the MIDI tests need the live extra's mido (pip install 'soundvj[live]')")

WAIT_S = 5.0


class Collected:
    """What a handler and the message sink saw, safe to read from the test thread."""

    def __init__(self) -> None:
        self.events: list[MidiEvent] = []
        self.messages: list[str] = []
        self.lock = threading.Lock()

    def event(self, event: MidiEvent) -> None:
        with self.lock:
            self.events.append(event)

    def message(self, text: str) -> None:
        with self.lock:
            self.messages.append(text)

    def said(self, fragment: str) -> bool:
        with self.lock:
            return any(fragment in m for m in self.messages)


def cc(control: int, value: int, channel: int = 0):
    """A CC as mido makes it: `channel` counts 0-15 there, while events and bindings say 1-16."""
    return mido.Message("control_change", control=control, value=value, channel=channel)


def jack_input(handler, on_message, port: str | None, rescan_seconds: float = 0.1) -> MidiInput:
    return MidiInput(handler, MidiSettings(port=port, api="jack", rescan_seconds=rescan_seconds),
                     on_message=on_message)


# -- decoding and port names (no MIDI system needed) ------------------------------------------------

def test_decode_turns_cc_and_notes_into_events_and_ignores_the_rest():
    """CC and note messages become events with channels numbered 1-16; a note-on at velocity 0 is
    a note-off (as controllers send it); clock and pitch bend are not control events."""
    assert decode([0xB3, 7, 100], "p", 1.0) == MidiEvent("cc", 4, 7, 100, "p", 1.0)
    assert decode([0x99, 36, 90], "p", 2.0) == MidiEvent("note_on", 10, 36, 90, "p", 2.0)
    assert decode([0x90, 36, 0], "p", 3.0).kind == "note_off"
    assert decode([0x80, 36, 64], "p", 3.0).kind == "note_off"
    assert decode([0xF8], "p", 4.0) is None
    assert decode([0xE0, 0, 64], "p", 4.0) is None


@pytest.mark.parametrize("data", [[0xB0, 200, 1], [0x07], [0xB0, 7]])
def test_decode_refuses_bytes_that_are_not_a_midi_message(data):
    """A data byte above 127, a lone data byte or a short message raise ValueError (the input
    thread counts and reports it; it never reaches the dispatcher)."""
    with pytest.raises(ValueError):
        decode(data, "p", 0.0)


def test_ports_are_found_by_name_without_alsas_changing_numbers():
    """A re-plugged ALSA device comes back under new client:port numbers; it is still the same port."""
    names = ["Midi Through:Midi Through Port-0 14:0", "nanoKONTROL2:nanoKONTROL2 MIDI 1 28:0"]
    assert port_key("nanoKONTROL2:nanoKONTROL2 MIDI 1 24:0") == "nanoKONTROL2:nanoKONTROL2 MIDI 1"
    assert find_port("nanoKONTROL2:nanoKONTROL2 MIDI 1 24:0", names) == 1
    assert find_port("Midi Through:Midi Through Port-0 14:0", names) == 0
    assert find_port("ctl:knobs", ["a:b", "ctl:knobs"]) == 1  # JACK names carry no numbers
    assert find_port("other", names) is None
    assert find_port("nanokontrol2", names) == 1  # a short name, any case, if only one port has it
    assert find_port("MIDI", names) is None  # in both names: a guess, so not found


@pytest.mark.parametrize("field, value, expected", [
    ("api", "oss", "api = 'oss': must be one of auto, alsa"),
    ("port", "  ", "port = '  ': must be a non-empty port name"),
    ("rescan_seconds", float("nan"), "rescan_seconds = nan"),
    ("queue_size", 3, "queue_size = 3: must be a whole number in [16, 65536]"),
])
def test_bad_midi_settings_are_one_line_errors_naming_the_field(field, value, expected):
    with pytest.raises(SoundvjError) as error:
        MidiSettings(**{field: value})
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_describe_event_reads_like_a_controller():
    assert describe_event(MidiEvent("cc", 1, 7, 100, "p", 0.0)) == "CC 7 = 100 (ch 1)"
    assert describe_event(MidiEvent("note_on", 10, 36, 90, "p", 0.0)) == "note 36 on, velocity 90 (ch 10)"


# -- no MIDI system ----------------------------------------------------------------------------------

def test_without_a_midi_system_the_input_says_so_and_nothing_raises(monkeypatch):
    """No JACK server under that name (and no ALSA sequencer on these machines): start, the picker,
    open and rescan all return; one message says MIDI is unavailable and the app plays on."""
    monkeypatch.setenv("JACK_DEFAULT_SERVER", "soundvj_no_such_server")
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    seen = Collected()
    midi = jack_input(seen.event, seen.message, port="ctl:knobs")
    with midi:
        assert midi.state == "unavailable"
        assert midi.list_ports() == []
        assert midi.open("ctl:knobs") is False
        assert midi.rescan() == "unavailable"
        assert "MIDI unavailable" in midi.status_text()
    assert seen.said("MIDI unavailable: jack: ") and seen.said("playing on without MIDI")
    assert all("\n" not in m for m in seen.messages)


# -- real ports over JACK ---------------------------------------------------------------------------

def test_the_picker_lists_ports_by_name_and_messages_arrive_from_the_chosen_one(jack_server):
    """A controller's port is listed by name, opened by name, and its CC and notes reach the
    handler on the input's thread, in order, with the port's name."""
    seen = Collected()
    knobs = jack_server.virtual_output("knobs", client_name="picker_ctl")
    other = jack_server.virtual_output("pads", client_name="picker_other")
    try:
        with jack_input(seen.event, seen.message, port=None) as midi:
            assert midi.state == "closed"
            assert {"picker_ctl:knobs", "picker_other:pads"} <= set(midi.list_ports())
            assert midi.open("picker_ctl:knobs") and midi.state == "open"
            assert jack_server.wait_connected("picker_ctl:knobs")
            other.send(cc(1, 1))  # not the chosen port: never arrives
            for value in (10, 20, 30):
                knobs.send(cc(7, value, channel=2))
            knobs.send(mido.Message("note_on", note=36, velocity=90, channel=9))
            assert wait_for(lambda: len(seen.events) == 4, WAIT_S), seen.events
            time.sleep(0.1)
            assert [(e.kind, e.channel, e.number, e.value) for e in seen.events] == [
                ("cc", 3, 7, 10), ("cc", 3, 7, 20), ("cc", 3, 7, 30), ("note_on", 10, 36, 90)]
            assert {e.port for e in seen.events} == {"picker_ctl:knobs"}
            assert midi.delivered == 4
            assert seen.said("MIDI: listening to 'picker_ctl:knobs' (jack)")
    finally:
        knobs.close()
        other.close()


def test_a_port_that_is_not_there_yet_opens_when_it_appears(jack_server):
    """The performer's saved port is not plugged in at start: a message says so, the input waits,
    and the periodic rescan opens the port when the controller appears."""
    seen = Collected()
    with jack_input(seen.event, seen.message, port="late_ctl:knobs") as midi:
        assert midi.state == "waiting"
        assert seen.said("MIDI: port 'late_ctl:knobs' not found")
        knobs = jack_server.virtual_output("knobs", client_name="late_ctl")
        try:
            assert wait_for(lambda: midi.state == "open", WAIT_S)
            assert seen.said("MIDI: listening to 'late_ctl:knobs' (jack)") and not seen.said("is back")
            assert jack_server.wait_connected("late_ctl:knobs")
            knobs.send(cc(1, 64))
            assert wait_for(lambda: len(seen.events) == 1, WAIT_S)
        finally:
            knobs.close()


def test_an_unplugged_port_is_found_again_by_rescan(jack_server):
    """Mid-set the controller goes away (its port closes): a message says so and nothing raises;
    when a port of the same name comes back the rescan opens it and messages flow again."""
    seen = Collected()
    knobs = jack_server.virtual_output("knobs", client_name="unplug_ctl")
    with jack_input(seen.event, seen.message, port="unplug_ctl:knobs", rescan_seconds=0) as midi:
        assert midi.state == "open" and jack_server.wait_connected("unplug_ctl:knobs")
        knobs.send(cc(7, 1))
        assert wait_for(lambda: len(seen.events) == 1, WAIT_S)
        knobs.close()  # unplugged
        assert wait_for(lambda: midi.rescan() == "waiting", WAIT_S)
        assert seen.said("MIDI: port 'unplug_ctl:knobs' went away; the mapping is kept")
        knobs = jack_server.virtual_output("knobs", client_name="unplug_ctl")  # plugged back in
        try:
            assert wait_for(lambda: midi.rescan() == "open", WAIT_S)
            assert seen.said("MIDI: port 'unplug_ctl:knobs' is back; listening again")
            assert jack_server.wait_connected("unplug_ctl:knobs")
            knobs.send(cc(7, 2))
            assert wait_for(lambda: len(seen.events) == 2, WAIT_S)
            assert seen.events[-1].value == 2
        finally:
            knobs.close()


def test_malformed_bytes_from_a_port_are_counted_and_reported_once(jack_server):
    """A JACK MIDI port carries whatever bytes a client writes: a data byte above 127, a lone data
    byte and a cut-off CC arrive as they are. Each is counted as malformed, one message says so (rate
    limited), none reaches the handler, and the next valid CC does."""
    seen = Collected()
    raw = jack_server.raw_output("raw", client_name="broken_ctl")
    try:
        with jack_input(seen.event, seen.message, port="broken_ctl:raw") as midi:
            assert jack_server.wait_connected("broken_ctl:raw")
            for data in ([0xB0, 200, 1], [0x07, 1], [0xB0, 7], [0xB0, 7, 42]):
                raw.send_message(data)
            assert wait_for(lambda: len(seen.events) == 1, WAIT_S)
            assert (seen.events[0].kind, seen.events[0].value) == ("cc", 42)
            assert midi.reporter.counts == {"midi-malformed": 3} and midi.received == 4
            malformed = [m for m in seen.messages if "malformed" in m]
            assert len(malformed) == 1  # the bytes, then mido's reason in brackets
            assert malformed[0].startswith("MIDI: ignored a malformed message from 'broken_ctl:raw': B0 C8 01 (")
    finally:
        raw.delete()


def test_a_burst_beyond_the_queue_drops_the_oldest_and_keeps_the_newest(jack_server):
    """A controller sends faster than the control layer takes (a slow handler, a 16-message queue):
    the queue stays bounded, the oldest messages are dropped and counted with one message, and the
    newest value (the one a performer's knob rests on) still arrives."""
    seen = Collected()

    def slow_handler(event: MidiEvent) -> None:
        time.sleep(0.002)
        seen.event(event)

    knobs = jack_server.virtual_output("knobs", client_name="burst_ctl")
    settings = MidiSettings(port="burst_ctl:knobs", api="jack", rescan_seconds=0.1, queue_size=16)
    try:
        with MidiInput(slow_handler, settings, on_message=seen.message) as midi:
            assert jack_server.wait_connected("burst_ctl:knobs")
            for i in range(600):  # 5,000 a second, in pieces JACK's per-cycle MIDI buffer carries whole
                knobs.send(cc(7, i % 100))
                if i % 25 == 24:
                    time.sleep(0.005)
            time.sleep(0.02)
            knobs.send(cc(7, 127))
            assert wait_for(lambda: seen.events and seen.events[-1].value == 127, WAIT_S), (
                midi.received, midi.dropped)
            time.sleep(0.2)
            assert midi.dropped > 0 and midi.received + midi.dropped == 601
            assert midi.delivered == len(seen.events) == midi.received
            values = [e.value for e in seen.events]
            assert values[-1] == 127 and values.count(127) == 1
            assert [m for m in seen.messages if "dropped" in m][0].startswith("MIDI: ")
            assert len([m for m in seen.messages if "dropped" in m]) == 1
    finally:
        knobs.close()


def test_a_handler_that_raises_is_counted_and_the_thread_goes_on(jack_server):
    """A broken dispatcher costs one rate-limited message, not the MIDI thread: the next
    messages are still delivered."""
    seen = Collected()

    def handler(event: MidiEvent) -> None:
        if event.value == 13:
            raise RuntimeError("boom")
        seen.event(event)

    knobs = jack_server.virtual_output("knobs", client_name="raise_ctl")
    try:
        with jack_input(handler, seen.message, port="raise_ctl:knobs") as midi:
            assert jack_server.wait_connected("raise_ctl:knobs")
            for value in (13, 13, 5):
                knobs.send(cc(7, value))
            assert wait_for(lambda: len(seen.events) == 1, WAIT_S)
            assert midi.reporter.counts == {"midi-handler": 2}
            assert [m for m in seen.messages if "was not applied" in m] == [
                "MIDI: cc 7 on channel 1 was not applied (boom)"]
    finally:
        knobs.close()


# -- the app's path: MIDI -> dispatcher -> registry -> render worker -------------------------------

class RigUnderTest:
    """A live session (tiny model, a looping noise file) configured as `soundvj live --mapping FILE
    --midi-port PORT --midi-api jack` configures it: the session opens the MIDI input into its
    dispatcher (`start_control`, or `start` when frames should render too)."""

    def __init__(self, mapping: Path, wav: Path, port: str, render: bool = False) -> None:
        midi = MidiSettings(port=port, api="jack", rescan_seconds=0.1)
        self.session = LiveSession(tiny_model(), Params(), InputChoice(file=str(wav), loop=True),
                                   control=ControlConfig(mapping_path=mapping, midi=midi))
        self.render = render
        self.midi: MidiInput | None = None

    def __enter__(self) -> RigUnderTest:
        if self.render:
            self.session.start()
        else:
            self.session.start_control()
        self.midi = self.session.midi_in
        return self

    def __exit__(self, *exc: object) -> None:
        if self.render:
            self.session.stop()
        else:
            self.session.stop_control()

    def said(self, fragment: str) -> bool:
        return any(fragment in m for m in list(self.session.messages))


@pytest.fixture
def noise_wav(tmp_path) -> Path:
    return write_wav(tmp_path / "noise.wav", 2.0)


def test_a_learned_cc_moves_the_parameter_into_the_frames(jack_server, tmp_path, noise_wav):
    """MIDI learn end to end: learn armed for psi, a CC arrives over JACK and is bound (and saved to
    the mapping file); the next values of that CC set psi through the registry (0..127 over psi's
    range) and the render worker's frames show it."""
    mapping = tmp_path / "mapping.yaml"
    knobs = jack_server.virtual_output("knobs", client_name="learn_ctl")
    try:
        with RigUnderTest(mapping, noise_wav, "learn_ctl:knobs", render=True) as rig:
            control, session = rig.session.control, rig.session
            assert jack_server.wait_connected("learn_ctl:knobs")
            control.learn(ControlTarget("param", param="psi"))
            knobs.send(cc(21, 0, channel=1))
            assert wait_for(lambda: rig.said("learned CC 21 (ch 2) -> psi"), WAIT_S), rig.session.messages
            assert control.learning is None
            assert [(b.source, b.target) for b in control.bindings] == [
                (ControlSource("cc", number=21, channel=2), ControlTarget("param", param="psi"))]
            assert load_mapping(mapping) == control.bindings  # saved at once
            knobs.send(cc(21, 127, channel=1))
            assert wait_for(lambda: session.target.psi == spec("psi").maximum, WAIT_S)
            knobs.send(cc(21, 50, channel=1))
            expected = 50 / 127 * spec("psi").maximum
            assert wait_for(lambda: session.target.psi == pytest.approx(expected), WAIT_S)
            assert wait_for(lambda: (f := session.worker.frames.peek()[0]) is not None
                            and f.params.psi == pytest.approx(expected), 20.0)
            knobs.send(cc(22, 127, channel=1))  # not bound: nothing moves
            time.sleep(0.2)
            assert session.target.psi == pytest.approx(expected)
    finally:
        knobs.close()


def test_a_note_picks_a_preset(jack_server, tmp_path, noise_wav):
    """A pad learned for preset 2 crossfades to it on every press, whatever look plays meanwhile."""
    knobs = jack_server.virtual_output("pads", client_name="note_ctl")
    try:
        with RigUnderTest(tmp_path / "mapping.yaml", noise_wav, "note_ctl:pads") as rig:
            session = rig.session
            assert len(session.presets) >= 2, "the shipped presets"
            second, first = session.presets[1], session.presets[0]
            assert jack_server.wait_connected("note_ctl:pads")
            session.control.learn(ControlTarget("preset", preset=2))
            knobs.send(mido.Message("note_on", note=40, velocity=100, channel=9))
            assert wait_for(lambda: session.look == second.name, WAIT_S)
            assert session.target == second.apply(Params())
            session.apply_preset(first)
            knobs.send(mido.Message("note_off", note=40, velocity=0, channel=9))
            knobs.send(mido.Message("note_on", note=40, velocity=1, channel=9))
            assert wait_for(lambda: session.look == second.name, WAIT_S)
            assert [b.source for b in session.control.bindings] == [ControlSource("note", number=40, channel=10)]
    finally:
        knobs.close()


def test_the_mapping_survives_a_preset_load_and_a_restart(jack_server, tmp_path, noise_wav):
    """A CC learned for psi still moves psi after a preset that sets psi has loaded, and after the
    app restarts (a new session reads the mapping file; no learn needed)."""
    mapping = tmp_path / "mapping.yaml"
    knobs = jack_server.virtual_output("knobs", client_name="keep_ctl")
    try:
        with RigUnderTest(mapping, noise_wav, "keep_ctl:knobs") as rig:
            session = rig.session
            assert jack_server.wait_connected("keep_ctl:knobs")
            session.control.learn(ControlTarget("param", param="psi"))
            knobs.send(cc(7, 0))
            assert wait_for(lambda: len(session.control.bindings) == 1, WAIT_S)
            preset = next(p for p in session.presets if "psi" in p.values and p.values["psi"] != 0)
            session.apply_preset(preset)
            assert session.target.psi == preset.values["psi"]
            knobs.send(cc(7, 0))
            assert wait_for(lambda: session.target.psi == 0.0, WAIT_S)
        with RigUnderTest(mapping, noise_wav, "keep_ctl:knobs") as rig:  # the app restarted
            assert rig.session.control.learning is None and len(rig.session.control.bindings) == 1
            assert rig.midi.state == "open" and jack_server.wait_connected("keep_ctl:knobs")
            knobs.send(cc(7, 127))
            assert wait_for(lambda: rig.session.target.psi == spec("psi").maximum, WAIT_S), (
                rig.midi.received, rig.midi.delivered, rig.session.messages, rig.session.control.bindings)
    finally:
        knobs.close()


def test_unplugged_mid_set_the_rig_plays_on_and_the_mapping_is_kept(jack_server, tmp_path, noise_wav):
    """The controller goes away while frames render: a message in the session's message line, the
    picture goes on, and when the controller is back the same CC moves the same parameter."""
    knobs = jack_server.virtual_output("knobs", client_name="replug_ctl")
    with RigUnderTest(tmp_path / "mapping.yaml", noise_wav, "replug_ctl:knobs", render=True) as rig:
        session = rig.session
        assert jack_server.wait_connected("replug_ctl:knobs")
        session.control.learn(ControlTarget("param", param="noise"))
        knobs.send(cc(1, 0))
        assert wait_for(lambda: len(session.control.bindings) == 1, WAIT_S)
        knobs.close()  # unplugged; the input's own periodic rescan notices
        assert wait_for(lambda: rig.said("MIDI: port 'replug_ctl:knobs' went away; the mapping is kept"), WAIT_S)
        frames_then = session.worker.frames_made
        assert wait_for(lambda: session.worker.frames_made > frames_then + 3, 20.0)
        knobs = jack_server.virtual_output("knobs", client_name="replug_ctl")
        assert wait_for(lambda: rig.said("MIDI: port 'replug_ctl:knobs' is back"), WAIT_S)
        assert jack_server.wait_connected("replug_ctl:knobs")
        knobs.send(cc(1, 127))
        assert wait_for(lambda: session.target.noise == spec("noise").maximum, WAIT_S)
        assert len(session.control.bindings) == 1
    knobs.close()


def test_without_a_midi_system_the_session_shows_a_message_and_plays_on(monkeypatch, tmp_path, noise_wav):
    """No MIDI system at all: the session's message line says so once and frames keep coming."""
    monkeypatch.setenv("JACK_DEFAULT_SERVER", "soundvj_no_such_server")
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    with RigUnderTest(tmp_path / "mapping.yaml", noise_wav, "ctl:knobs", render=True) as rig:
        assert rig.midi.state == "unavailable"
        assert wait_for(lambda: rig.session.worker.frames_made > 3, 20.0)
        assert [m for m in rig.session.messages if m.startswith("MIDI")] == [
            f"MIDI unavailable: {rig.midi.error}; playing on without MIDI"]


def test_the_cli_flags_make_midi_settings():
    parser = argparse.ArgumentParser()
    add_midi_arguments(parser)
    settings = midi_settings_from_args(parser.parse_args(["--midi-port", "ctl:knobs", "--midi-api", "jack"]))
    assert settings == MidiSettings(port="ctl:knobs", api="jack")
    assert midi_settings_from_args(parser.parse_args([])) == MidiSettings()
    with pytest.raises(SoundvjError, match=r"^--midi-port: port = ' ': must be a non-empty port name$"):
        midi_settings_from_args(parser.parse_args(["--midi-port", " "]))


def test_soundvj_live_refuses_an_empty_midi_port_in_one_line_exit_2():
    """The flag is checked before anything opens: one line naming it, exit code 2, no traceback."""
    done = subprocess.run([sys.executable, "-m", "core.cli", "live", "--midi-port", " "],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr == "soundvj: error: --midi-port: port = ' ': must be a non-empty port name\n"


def test_a_restarted_jack_server_is_found_again_by_reconnect(jack_server, monkeypatch, tmp_path):
    """The MIDI system itself goes away mid-set (a JACK server stopped, then started again): nothing
    raises, and `reconnect()` (the picker's answer) joins the new server and opens the port by name."""
    name = f"{jack_server.name}_restart"
    monkeypatch.setenv("JACK_DEFAULT_SERVER", name)
    server = start_jack_server(name, tmp_path)
    controller = None
    seen = Collected()
    try:
        controller = ControllerProcess(name, "restart_ctl", "knobs")
        with jack_input(seen.event, seen.message, port="restart_ctl:knobs", rescan_seconds=0) as midi:
            assert midi.state == "open" and server.wait_connected("restart_ctl:knobs")
            controller.send_cc(7, 1)
            assert wait_for(lambda: [e.value for e in seen.events] == [1], WAIT_S)
            controller.stop()
            server.stop()
            midi.rescan()  # our client of the dead server: no exception
            server = start_jack_server(name, tmp_path)
            controller = ControllerProcess(name, "restart_ctl", "knobs")
            assert midi.reconnect() == "open" and server.wait_connected("restart_ctl:knobs")
            controller.send_cc(7, 99)
            assert wait_for(lambda: [e.value for e in seen.events] == [1, 99], WAIT_S)
            assert seen.said("MIDI: listening to 'restart_ctl:knobs' (jack)")
    finally:
        if controller is not None:
            controller.stop()
        server.stop()
