"""The real live app window, driven by pytest-qt on a (virtual) display.

The window, the render thread and the recorder are the real ones; the sound comes from a real audio
file played by the file player (through the output device when there is one, else clocked by wall
time), so these tests do not need PulseAudio.
"""

import os

import numpy as np
import pytest

pytest.importorskip("PyQt6", reason="the live app needs PyQt6 (pip install 'soundvj[live]')")
if not (os.environ.get("DISPLAY") or os.environ.get("QT_QPA_PLATFORM")):
    pytest.skip("no display: run the tests through ./dev.sh test (it starts Xvfb)", allow_module_level=True)

from PyQt6 import QtCore, QtGui  # noqa: E402

from core.params import Params  # noqa: E402
from core.video_writer import probe_media  # noqa: E402
from tests.pipeline_helpers import tiny_model  # noqa: E402
from tests.live_helpers import write_wav  # noqa: E402
from visualizer.main_window import MainWindow, delete_window_now  # noqa: E402
from visualizer.session import InputChoice, LiveSession  # noqa: E402


@pytest.fixture
def app_window(qtbot, tmp_path, monkeypatch):
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "a_still.yaml").write_text("version: 1\nparams: {alpha: 0.05, noise: 0.0}\n")
    (presets / "b_wild.yaml").write_text("version: 1\nparams: {alpha: 0.85, noise: 1.5}\n")
    monkeypatch.setenv("SOUNDVJ_PRESETS_DIR", str(presets))
    audio = write_wav(tmp_path / "noise.wav", 30.0)
    session = LiveSession(tiny_model(), Params(alpha=0.3, fps=24), InputChoice(file=str(audio), loop=True))
    window = MainWindow(session, record_folder=str(tmp_path))
    session.on_message = window.message.emit
    try:
        window.show()
        qtbot.waitExposed(window)
        session.worker.start()
        session.use_source(session.source_choice)
        yield window, session, tmp_path
    finally:
        delete_window_now(window)  # not left to the garbage collector (see delete_window_now)


def _frames_drawn(window, n, qtbot, timeout=15000):
    start = window.frames_drawn
    qtbot.waitUntil(lambda: window.frames_drawn >= start + n, timeout=timeout)


def test_window_opens_and_shows_a_picture(app_window, qtbot):
    window, session, tmp = app_window
    _frames_drawn(window, 10, qtbot)
    shot = tmp / "window.png"
    assert window.grab().save(str(shot))
    assert shot.stat().st_size > 2000
    image = QtGui.QImage(str(shot))
    assert image.width() > 600 and image.height() > 400
    view = window.view.grab_rgb()
    assert view.std() > 10, "the picture area is blank"
    # The scopes show what the model hears: noise fills the newest columns of the mel window
    # (the older ones may still be the silence from before playback started).
    qtbot.waitUntil(lambda: window.mel_scope.last is not None and window.mel_scope.last[:, -10:].mean() > 0.2,
                    timeout=10000)


def test_loop_box_mirrors_the_player(app_window, qtbot):
    window, session, _ = app_window
    qtbot.waitUntil(lambda: session.player is not None, timeout=5000)
    qtbot.waitUntil(lambda: window.loop_box.isChecked(), timeout=2000)  # the session was opened with loop=True
    window.loop_box.setChecked(False)  # the user's toggle reaches the player and stays
    assert session.player.loop is False
    qtbot.wait(300)
    assert not window.loop_box.isChecked()


def test_panel_change_reaches_the_render_thread_within_two_frames(app_window, qtbot):
    window, session, _ = app_window
    _frames_drawn(window, 3, qtbot)
    control = window.param_panel.controls["noise"]
    before, _ = session.worker.frames.peek()
    control.box.setValue(1.7)  # what typing a value and pressing Enter does
    qtbot.waitUntil(lambda: session.worker.frames.peek()[0].params.noise == pytest.approx(1.7), timeout=5000)
    first = session.worker.frames.peek()[0]
    assert first.index - before.index <= 2 + 1  # +1: a frame may be in flight while the edit is made


def test_preset_key_crossfades(app_window, qtbot):
    window, session, _ = app_window
    _frames_drawn(window, 3, qtbot)
    window.fade_box.setValue(2.0)
    qtbot.keyClick(window.view, QtCore.Qt.Key.Key_1)  # a_still: alpha 0.05
    qtbot.waitUntil(lambda: session.worker.params.alpha == pytest.approx(0.05), timeout=6000)
    qtbot.keyClick(window.view, QtCore.Qt.Key.Key_2)  # b_wild: alpha 0.85, noise 1.5
    qtbot.wait(900)
    mid = session.worker.params
    assert 0.1 < mid.alpha < 0.8 and 0.1 < mid.noise < 1.45, mid
    qtbot.waitUntil(lambda: session.worker.params.alpha == pytest.approx(0.85), timeout=6000)
    assert window.param_panel.params().alpha == pytest.approx(0.85)


def test_record_key_gives_a_playable_file(app_window, qtbot):
    window, session, tmp = app_window
    _frames_drawn(window, 3, qtbot)
    qtbot.keyClick(window.view, QtCore.Qt.Key.Key_R)
    qtbot.waitUntil(lambda: session.recorder is not None and session.recorder.seconds > 1.5, timeout=15000)
    qtbot.keyClick(window.view, QtCore.Qt.Key.Key_R)
    qtbot.waitUntil(lambda: session.recorder.state != "recording", timeout=15000)
    rec = session.recorder
    assert rec.state == "finished", rec.error
    info = probe_media(rec.path)
    assert info.has_video and info.has_audio and info.frame_count >= 24
    assert info.video_duration == pytest.approx(info.audio_duration, abs=0.05)
    qtbot.waitUntil(lambda: "saved" in window.record_label.text(), timeout=2000)  # next UI poll


def test_set_log_box_keeps_a_set_log_beside_the_recording_that_replays(app_window, qtbot):
    """With Set log ticked, R records the mp4 and a set log beside it, started mid-show; the set
    log replays to a video as long as its sound."""
    from core.replay import replay
    from core.set_log import open_set_log

    window, session, tmp = app_window
    _frames_drawn(window, 3, qtbot)
    window.set_log_box.setChecked(True)
    assert session.keep_set_logs
    session.apply_preset(session.presets[1], fade_seconds=1.0)  # a fade under way as the set log starts
    qtbot.keyClick(window.view, QtCore.Qt.Key.Key_R)
    qtbot.waitUntil(lambda: session.recorder is not None and session.recorder.seconds > 1.0, timeout=15000)
    assert "set log" in window.record_label.text()
    session.apply_preset(session.presets[0], fade_seconds=0.0)
    qtbot.wait(500)
    qtbot.keyClick(window.view, QtCore.Qt.Key.Key_R)
    qtbot.waitUntil(lambda: session.set_logger.state != "logging" and session.recorder.state != "recording",
                    timeout=30000)
    rec, log = session.recorder, session.set_logger
    assert rec.state == "finished" and log.state == "finished", (rec.error, log.error)
    assert log.path == rec.path.with_suffix(".soundvjset")
    set_log = open_set_log(log.path)
    assert set_log.meta.seconds == pytest.approx(rec.seconds, abs=0.2)
    assert any(e.event.command.name == "a_still" for e in set_log.events if hasattr(e.event, "command"))
    result = replay(set_log, tmp / "again.mp4", lambda _identity: session.model, progress=False)
    assert result.frames == round(set_log.meta.seconds * set_log.meta.fps)


def test_freeze_holds_the_picture(app_window, qtbot):
    window, session, _ = app_window
    _frames_drawn(window, 3, qtbot)
    qtbot.keyClick(window.view, QtCore.Qt.Key.Key_Space)
    qtbot.wait(200)
    a = session.worker.frames.peek()[0]
    _frames_drawn(window, 3, qtbot)
    b = session.worker.frames.peek()[0]
    assert b.index > a.index and np.array_equal(a.image, b.image)
    qtbot.keyClick(window.view, QtCore.Qt.Key.Key_Space)
    _frames_drawn(window, 4, qtbot)
    assert not np.array_equal(b.image, session.worker.frames.peek()[0].image)


def test_broken_preset_on_disk_keeps_the_look(app_window, qtbot):
    window, session, tmp = app_window
    _frames_drawn(window, 2, qtbot)
    qtbot.keyClick(window.view, QtCore.Qt.Key.Key_2)
    qtbot.waitUntil(lambda: session.worker.params.alpha == pytest.approx(0.85), timeout=6000)
    (tmp / "presets" / "b_wild.yaml").write_text("version: 1\nparams: {alpha: 7}\n")
    qtbot.waitUntil(lambda: "b_wild.yaml" in window.message_line.text(), timeout=5000)
    assert session.worker.params.alpha == pytest.approx(0.85)
    (tmp / "presets" / "b_wild.yaml").write_text("version: 1\nparams: {alpha: 0.5, noise: 1.5}\n")
    qtbot.waitUntil(lambda: session.worker.params.alpha == pytest.approx(0.5), timeout=8000)


def test_output_window_fullscreen_and_escape(app_window, qtbot):
    window, session, _ = app_window
    qtbot.keyClick(window.view, QtCore.Qt.Key.Key_F)
    out = window.output_window()
    qtbot.waitUntil(lambda: out.isVisible() and out.isFullScreen(), timeout=5000)
    _frames_drawn(window, 3, qtbot)
    qtbot.keyClick(window.view, QtCore.Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not out.isFullScreen(), timeout=5000)
    assert out.view.grab_rgb().std() > 5


def test_closing_destroys_both_windows_at_once(qtbot, tmp_path):
    """The windows (and their OpenGL views) are destroyed when closed, on this thread, not later by
    the garbage collector on whichever thread happens to allocate (which can crash the process)."""
    from PyQt6 import QtWidgets, sip

    session = LiveSession(tiny_model(), Params(fps=24), InputChoice(file=str(write_wav(tmp_path / "n.wav", 2.0))))
    window = MainWindow(session)
    try:
        window.show()
        qtbot.waitExposed(window)
        out = window.output_window()
        out.show_on_screen(0, fullscreen=False)
        qtbot.waitExposed(out)
    finally:
        delete_window_now(window)
    assert sip.isdeleted(window) and sip.isdeleted(out)
    assert not [w for w in QtWidgets.QApplication.topLevelWidgets() if isinstance(w, MainWindow)]


def test_a_model_loads_after_the_gl_view_opened_in_a_fresh_process():
    """Opening a model from the window (Model > Open model…) builds it after OpenGL is up. torch loads
    triton's LLVM lazily on that first build, and loading it after Mesa's llvmpipe crashed the process;
    the GL view loads it first. Run in a fresh process, where nothing else loaded it before."""
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import sys\n"
        "import numpy as np\n"
        "from PyQt6 import QtWidgets\n"
        "app = QtWidgets.QApplication(sys.argv[:1])\n"
        "from visualizer.frame_view import FrameView\n"
        "view = FrameView()\n"
        "view.show()\n"
        "view.show_frame(np.zeros((64, 64, 3), np.uint8))\n"
        "app.processEvents()\n"
        "from core.model import load_model\n"
        "model = load_model(None, device='cpu')\n"
        "print('loaded', view.backend, model.generator.img_resolution)\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k != "SOUNDVJ_DEFAULT_MODEL"}  # the shipped model's file
    done = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[:2] == ["loaded", "vispy"]
