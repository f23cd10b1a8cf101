"""The live window's rig panels, driven by pytest-qt on a (virtual) display: MIDI learn from a
parameter's context menu, the modulation panel, the MIDI port picker, and the window fitting a
1280x800 screen with its status bar in view.

The window, session, render thread, dispatcher and mapping file are the real ones; a right-click is
a real context-menu event sent to the slider; CCs reach the dispatcher through its MIDI entry point
(`ControlDispatcher.midi`, what the MIDI thread calls) or, in the port picker's test, over a real
JACK MIDI port from a JACK server the fixture starts and stops by its PID.
"""

import dataclasses
import os
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("PyQt6", reason="the live app needs PyQt6 (pip install 'soundvj[live]')")
if not (os.environ.get("DISPLAY") or os.environ.get("QT_QPA_PLATFORM")):
    pytest.skip("no display: run the tests through ./dev.sh test (it starts Xvfb)", allow_module_level=True)

from PyQt6 import QtCore, QtGui, QtWidgets  # noqa: E402

from core.params import Params, spec  # noqa: E402
from tests.jack_server import jack_server  # noqa: E402, F401 - the fixture
from tests.live_helpers import write_wav  # noqa: E402
from tests.pipeline_helpers import tiny_model  # noqa: E402
from visualizer.control.bindings import ControlSource, ControlTarget  # noqa: E402
from visualizer.control.config import ControlConfig  # noqa: E402
from visualizer.control.mapping_file import load_mapping  # noqa: E402
from visualizer.control.midi import MidiEvent, MidiSettings  # noqa: E402
from visualizer.main_window import MainWindow, delete_window_now  # noqa: E402
from visualizer.session import InputChoice, LiveSession  # noqa: E402

PULSE = Path(__file__).resolve().parents[1] / "presets" / "pulse.yaml"
SCREEN_FITS = QtCore.QSize(1280, 760)  # a 1280x800 screen minus a title bar


def _open_window(qtbot, tmp_path, monkeypatch, control: ControlConfig | None = None):
    presets = tmp_path / "presets"
    presets.mkdir(exist_ok=True)
    (presets / "a_still.yaml").write_text("version: 1\nparams: {alpha: 0.05, noise: 0.0}\n")
    shutil.copy(PULSE, presets / "b_pulse.yaml")  # version 2, with modulations
    monkeypatch.setenv("SOUNDVJ_PRESETS_DIR", str(presets))
    audio = write_wav(tmp_path / "noise.wav", 30.0)
    control = control or ControlConfig(mapping_path=tmp_path / "mapping.yaml")
    session = LiveSession(tiny_model(), Params(alpha=0.3, fps=24), InputChoice(file=str(audio), loop=True),
                          control=control)
    window = MainWindow(session, use_gl=False)
    session.on_message = window.message.emit
    return window, session


@pytest.fixture
def app_window(qtbot, tmp_path, monkeypatch):
    window, session = _open_window(qtbot, tmp_path, monkeypatch)
    try:
        window.show()
        qtbot.waitExposed(window)
        session.start()
        yield window, session, tmp_path
    finally:
        delete_window_now(window)  # not left to the garbage collector (see delete_window_now)


def _right_click(widget: QtWidgets.QWidget) -> None:
    """What a right mouse press on `widget` makes Qt send: a context-menu event at the mouse."""
    pos = QtCore.QPoint(widget.width() // 2, widget.height() // 2)
    event = QtGui.QContextMenuEvent(QtGui.QContextMenuEvent.Reason.Mouse, pos, widget.mapToGlobal(pos))
    QtWidgets.QApplication.sendEvent(widget, event)


def _menu_action(window: MainWindow, starts_with: str) -> QtGui.QAction:
    assert window.param_menu is not None and window.param_menu.isVisible(), "the context menu did not open"
    found = [a for a in window.param_menu.actions() if a.text().startswith(starts_with)]
    assert found, [a.text() for a in window.param_menu.actions()]
    return found[0]


def _cc(number: int, value: int, channel: int = 1) -> MidiEvent:
    return MidiEvent("cc", channel, number, value, "test", time.monotonic())


def _slider_steps(name: str, value: float) -> int:
    s = spec(name)
    return round((value - s.minimum) / (s.maximum - s.minimum) * 1000)


def test_learn_from_the_context_menu_binds_the_next_cc_and_the_slider_follows_it(app_window, qtbot):
    """Right-click noise's slider, Learn: the control is marked until a CC arrives; that CC is bound
    (and saved to the mapping file), the message line says so, and the slider then follows the CC.
    Forget binding (offered only once a binding exists) unbinds it: the CC moves nothing after."""
    window, session, tmp = app_window
    control = window.param_panel.controls["noise"]
    _right_click(control.slider)
    assert not any(a.text().startswith("Forget") for a in window.param_menu.actions())
    _menu_action(window, "Learn MIDI / OSC").trigger()
    assert session.control.learning == ControlTarget("param", param="noise")
    assert control.learning and window.param_panel.learning() == "noise"

    session.control.midi(_cc(21, 127))  # what the MIDI thread hands over
    top = spec("noise").maximum
    qtbot.waitUntil(lambda: control.box.value() == pytest.approx(top) and control.slider.value() == 1000,
                    timeout=3000)
    qtbot.waitUntil(lambda: "CC 21 (ch 1) now moves noise" in window.message_line.text(), timeout=3000)
    assert not control.learning and session.control.learning is None
    assert [(b.source, b.target) for b in load_mapping(tmp / "mapping.yaml")] == [
        (ControlSource("cc", number=21, channel=1), ControlTarget("param", param="noise"))]

    session.control.midi(_cc(21, 40))
    expected = spec("noise").minimum + 40 / 127 * (top - spec("noise").minimum)
    qtbot.waitUntil(lambda: control.slider.value() == _slider_steps("noise", expected), timeout=3000)
    assert control.box.value() == pytest.approx(expected, abs=1e-3)
    qtbot.waitUntil(lambda: session.worker.frames.peek()[0].params.noise == pytest.approx(expected), timeout=10000)

    window.param_menu.hide()
    _right_click(control.box)  # the spin box offers the same menu as the slider
    _menu_action(window, "Forget binding (CC 21 (ch 1))").trigger()
    assert session.control.bindings == ()
    qtbot.waitUntil(lambda: "forgot 1 binding of noise" in window.message_line.text(), timeout=2000)
    session.control.midi(_cc(21, 127))
    qtbot.wait(150)
    assert control.box.value() == pytest.approx(expected, abs=1e-3)


def test_escape_or_a_second_right_click_cancels_learn(app_window, qtbot):
    """A learn armed by mistake is cancelled by Esc or by right-clicking again; the next CC then
    binds nothing and the mark goes."""
    window, session, _ = app_window
    psi = window.param_panel.controls["psi"]
    _right_click(psi.slider)
    _menu_action(window, "Learn").trigger()
    assert psi.learning
    window.param_menu.hide()
    qtbot.keyClick(window.view, QtCore.Qt.Key.Key_Escape)
    assert session.control.learning is None and not psi.learning
    qtbot.waitUntil(lambda: "learn cancelled" in window.message_line.text(), timeout=2000)

    _right_click(psi.slider)
    _menu_action(window, "Learn").trigger()
    window.param_menu.hide()
    menu_before = window.param_menu
    _right_click(psi.slider)  # the second right-click cancels instead of opening the menu
    assert session.control.learning is None and not psi.learning
    assert window.param_menu is menu_before
    session.control.midi(_cc(30, 100))
    qtbot.wait(100)
    assert session.control.bindings == ()


def test_learn_armed_elsewhere_marks_the_control(app_window, qtbot):
    """Learn armed without the window (an OSC client, a script) still shows which control waits."""
    window, session, _ = app_window
    session.control.learn(ControlTarget("param", param="rotate_deg"))
    qtbot.waitUntil(lambda: window.param_panel.learning() == "rotate_deg", timeout=2000)
    session.control.cancel_learn()
    qtbot.waitUntil(lambda: window.param_panel.learning() is None, timeout=2000)


def test_modulation_panel_adds_edits_and_removes_through_the_session(app_window, qtbot):
    """Add psi <- sine, edit its depth and beats in the table, remove it: each edit is the session's
    matrix (what the render thread gets). A value the matrix refuses is one line, and nothing changes."""
    window, session, _ = app_window
    panel = window.modulation_panel
    panel.target_combo.setCurrentText("psi")
    panel.source_combo.setCurrentText("sine")
    panel.add_depth.setValue(0.3)
    qtbot.mouseClick(next(b for b in panel.findChildren(QtWidgets.QPushButton) if b.text() == "Add"),
                     QtCore.Qt.MouseButton.LeftButton)
    assert [(m.target, m.source, m.depth, m.beats) for m in session.modulations] == [("psi", "sine", 0.3, 1.0)]
    assert panel.table.rowCount() == 1 and panel.table.item(0, 0).text() == "psi"

    panel.table.cellWidget(0, 2).setValue(0.5)
    panel.table.cellWidget(0, 3).setValue(4.0)
    assert [(m.depth, m.beats) for m in session.modulations] == [(0.5, 4.0)]

    matrix = session.modulations
    assert not panel.add("psi", "low", 9.0)  # psi spans 1.5: a depth of 9 is refused
    qtbot.waitUntil(lambda: "depth" in window.message_line.text() and "9" in window.message_line.text(), timeout=2000)
    assert session.modulations is matrix
    assert not panel.add("gain_db", "low", 1.0)  # would change what the sound models hear
    assert session.modulations is matrix and panel.table.rowCount() == 1

    panel.table.cellWidget(0, 4).click()
    assert len(session.modulations) == 0 and panel.table.rowCount() == 0


def test_modulation_panel_follows_a_preset_load_and_osc(app_window, qtbot):
    """Modulations that arrive without the panel show in it: a version-2 preset's by the next poll,
    and a depth set over OSC in the same row's box (the row is kept, not rebuilt)."""
    window, session, _ = app_window
    panel = window.modulation_panel
    number = 1 + next(i for i, p in enumerate(session.presets) if p.path is not None and p.path.stem == "b_pulse")
    assert number <= 9
    qtbot.keyClick(window.view, getattr(QtCore.Qt.Key, f"Key_{number}"))  # pulse: noise, alpha_fine on onsets
    qtbot.waitUntil(lambda: panel.table.rowCount() == 2, timeout=3000)
    assert [(panel.table.item(i, 0).text(), panel.table.item(i, 1).text()) for i in range(2)] == [
        ("noise", "onset"), ("alpha_fine", "onset")]
    assert panel.table.cellWidget(0, 3).value() == pytest.approx(0.15)  # the onset's decay
    depth_box = panel.table.cellWidget(0, 2)
    assert session.control.set_modulation("noise", "onset", 0.9, "OSC")  # what /soundvj/mod/noise/onset does
    qtbot.waitUntil(lambda: depth_box.value() == pytest.approx(0.9), timeout=3000)
    assert panel.table.cellWidget(0, 2) is depth_box
    still = 1 + next(i for i, p in enumerate(session.presets) if p.name == "a_still")
    qtbot.keyClick(window.view, getattr(QtCore.Qt.Key, f"Key_{still}"))  # version 1: the matrix stays
    qtbot.wait(100)
    assert panel.table.rowCount() == 2


def test_the_window_fits_a_1280x800_screen_with_its_status_bar_in_view(app_window, qtbot):
    """With every side panel, the window opens no larger than 1280x800 less a title bar, its minimum
    size fits there too, and at
    1280x760 the status bar's fps, latency, dropped, tempo and MIDI fields are inside the window,
    shown whole (not squeezed), while the side panels scroll up and down and fit across."""
    window, session, _ = app_window
    assert window.width() <= SCREEN_FITS.width() and window.height() <= SCREEN_FITS.height(), window.size()
    hint = window.minimumSizeHint()
    assert hint.width() <= SCREEN_FITS.width() and hint.height() <= SCREEN_FITS.height(), hint
    window.resize(SCREEN_FITS)
    qtbot.waitUntil(lambda: window.size() == SCREEN_FITS, timeout=3000)
    qtbot.waitUntil(lambda: "fps" in window.status_fps.text() and "BPM" in window.status_tempo.text(), timeout=15000)
    qtbot.wait(50)
    inside = window.rect()
    for label in (window.status_fps, window.status_latency, window.status_dropped, window.status_tempo,
                  window.status_midi):
        assert label.isVisible(), label.text()
        box = QtCore.QRect(label.mapTo(window, QtCore.QPoint(0, 0)), label.size())
        assert inside.contains(box), (label.text(), box, inside)
        assert label.width() >= label.sizeHint().width(), (label.text(), label.width(), label.sizeHint())
    assert window.side_scroll.verticalScrollBar().maximum() > 0, "the side panels should scroll, not grow the window"
    assert window.side_scroll.horizontalScrollBar().maximum() == 0, "a side panel is cut off at the right"


def test_without_a_midi_system_the_picker_says_why_and_the_show_plays_on(app_window, qtbot, monkeypatch):
    """No --midi-port: the status bar says "MIDI: none" until the picker is opened; opening it
    creates the MIDI input on demand. Here there is no MIDI system to reach (JACK asked for, no
    server running, none started), so the menu says why, choosing a port opens nothing, and frames
    keep coming."""
    window, session, _ = app_window
    qtbot.waitUntil(lambda: window.status_midi.text() == "MIDI: none", timeout=2000)
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    monkeypatch.setenv("JACK_DEFAULT_SERVER", f"soundvj_no_such_server_{os.getpid()}")
    session.control_config = dataclasses.replace(session.control_config, midi=MidiSettings(api="jack"))
    window.midi_menu.fill()
    assert session.midi_in is not None and session.midi_in.state == "unavailable"
    texts = [(a.text(), a.isEnabled()) for a in window.midi_menu.actions() if not a.isSeparator()]
    assert texts[0] == (session.midi_in.status_text(), False)
    assert not window.midi_menu.choose("anything")
    qtbot.waitUntil(lambda: window.status_midi.text() == "MIDI: unavailable", timeout=2000)
    drawn = window.frames_drawn
    qtbot.waitUntil(lambda: window.frames_drawn > drawn + 3, timeout=10000)


def test_the_port_picker_opens_a_jack_port_and_a_learned_knob_moves_the_slider(jack_server, qtbot, tmp_path,
                                                                               monkeypatch):
    """End to end over a real JACK MIDI port: the menu lists the controller's port by name, choosing
    it opens it, a learn armed from the context menu takes the knob's first CC, and the slider
    follows the knob. Rescan keeps the port and the mapping."""
    mido = pytest.importorskip("mido", reason="the MIDI test needs the live extra's mido")
    knobs = jack_server.virtual_output("knobs", client_name="panel_ctl")
    control = ControlConfig(mapping_path=tmp_path / "mapping.yaml", midi=MidiSettings(api="jack", rescan_seconds=0.2))
    window, session = _open_window(qtbot, tmp_path, monkeypatch, control)
    try:
        window.show()
        qtbot.waitExposed(window)
        session.start()
        window.midi_menu.fill()
        port = next((a for a in window.midi_menu.actions() if a.text() == "panel_ctl:knobs"), None)
        assert port is not None, [a.text() for a in window.midi_menu.actions()]
        port.trigger()
        assert session.midi_in.state == "open" and jack_server.wait_connected("panel_ctl:knobs")
        qtbot.waitUntil(lambda: window.status_midi.text() == "MIDI: panel_ctl:knobs", timeout=2000)

        psi = window.param_panel.controls["psi"]
        _right_click(psi.slider)
        _menu_action(window, "Learn").trigger()
        knobs.send(mido.Message("control_change", control=7, value=0, channel=0))
        qtbot.waitUntil(lambda: "CC 7 (ch 1) now moves psi" in window.message_line.text(), timeout=5000)
        knobs.send(mido.Message("control_change", control=7, value=127, channel=0))
        qtbot.waitUntil(lambda: psi.slider.value() == 1000, timeout=5000)

        next(a for a in window.midi_menu.actions() if a.text() == "Rescan").trigger()
        assert session.midi_in.state == "open" and len(session.control.bindings) == 1
        knobs.send(mido.Message("control_change", control=7, value=0, channel=0))
        qtbot.waitUntil(lambda: psi.slider.value() == 0, timeout=5000)
    finally:
        delete_window_now(window)
        knobs.close()
