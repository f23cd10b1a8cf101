"""The window's side of the outputs, on a (virtual) display: the Output menu starts, shows and stops a
stream to a real ffmpeg receiver, and the picture filters really scale on the GPU (Mesa's llvmpipe
under Xvfb): a 64 px edge on a large view without the blocks of nearest or linear's grid."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

pytest.importorskip("PyQt6", reason="the live app needs PyQt6 (pip install 'soundvj[live]')")
if not (os.environ.get("DISPLAY") or os.environ.get("QT_QPA_PLATFORM")):
    pytest.skip("no display: run the tests through ./dev.sh test (it starts Xvfb)", allow_module_level=True)

from core.params import Params  # noqa: E402
from tests.live_helpers import write_wav  # noqa: E402
from tests.pipeline_helpers import tiny_model  # noqa: E402
from tests.test_stream_output import UdpReceiver, end_process  # noqa: E402
from visualizer.frame_view import DEFAULT_VIEW_FILTER, VIEW_FILTERS, FrameView  # noqa: E402
from visualizer.main_window import MainWindow, delete_window_now  # noqa: E402
from visualizer.session import InputChoice, LiveSession  # noqa: E402


@pytest.fixture
def window(qtbot, tmp_path):
    audio = write_wav(tmp_path / "noise.wav", 20.0)
    session = LiveSession(tiny_model(), Params(fps=24), InputChoice(file=str(audio), loop=True))
    win = MainWindow(session, record_folder=str(tmp_path))
    session.on_message = win.message.emit
    try:
        win.show()
        qtbot.waitExposed(win)
        session.worker.start()
        session.use_source(session.source_choice)
        yield win, session
    finally:
        delete_window_now(win)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg program (Debian: ffmpeg)")
def test_output_menu_streams_shows_the_state_and_stops(window, qtbot, tmp_path):
    """*Stream to…* with a bad URL says why in the message line and starts nothing; with a receiver's
    URL the status bar shows the stream live with its counts, *Stop stream* ends it, and the receiver
    got the frames."""
    win, session = window
    receiver = UdpReceiver(tmp_path)
    try:
        actions = win.output_actions
        assert not actions.stop_stream.isEnabled() and not actions.reconnect.isEnabled()
        actions.start_stream("http://example.org/live")
        assert session.stream is None
        assert win.message_line.text().startswith("--stream 'http://example.org/live': 'http://' is not")
        actions.start_stream(receiver.url)
        qtbot.waitUntil(lambda: win.status_outputs.text().startswith("stream live ("), timeout=15000)
        assert actions.stop_stream.isEnabled() and actions.reconnect.isEnabled()
        qtbot.waitUntil(lambda: session.stream.frames_sent >= 72, timeout=15000)
        assert receiver.wait_receiving()
        sender = session.stream
        actions.stop_stream.trigger()
        qtbot.waitUntil(lambda: win.status_outputs.text() == "" and sender.state == "stopped", timeout=15000)
        assert not actions.stop_stream.isEnabled()
        receiver.finish()
        assert len(receiver.video()) >= 0.95 * sender.frames_sent
    finally:
        end_process(receiver.process)


def _edge_frame() -> np.ndarray:
    """64 px: dark left half, light right half, a soft diagonal so both axes have detail."""
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, 32:] = 230
    image[:, :32] = 25
    return image


def _shown(qtbot, view_filter: str) -> np.ndarray:
    view = FrameView(use_gl=True, view_filter=view_filter)
    try:
        view.resize(640, 640)
        view.show()
        qtbot.waitExposed(view)
        if view.backend != "vispy":
            pytest.skip(f"OpenGL did not start here ({getattr(view, 'gl_error', 'no GL')}): the filters are GPU kernels")
        view.show_frame(_edge_frame())
        return view.grab_rgb()[..., 0].astype(float)
    finally:
        view.close()
        view.deleteLater()


def test_the_gpu_picture_filters_render_and_are_smooth(qtbot):
    """Every offered filter draws under Xvfb's software OpenGL. Nearest jumps across the 64 px edge
    between two screen pixels (a block edge); the default (bicubic) spreads it over several (no jump
    of more than a quarter of the edge) and differs from linear, so the kernel really runs."""
    assert DEFAULT_VIEW_FILTER == "catrom"
    shown = {name: _shown(qtbot, name) for name in VIEW_FILTERS}
    for name, image in shown.items():
        row = image[image.shape[0] // 2]
        inside = row[(row > 5)]  # the picture (letterboxing is black)
        assert inside.size > 300 and inside.min() < 60 and inside.max() > 200, name
    def biggest_step(image: np.ndarray) -> float:
        row = image[image.shape[0] // 2]
        return np.abs(np.diff(row[row.size // 2 - 60: row.size // 2 + 60])).max()

    assert biggest_step(shown["nearest"]) > 0.9 * (230 - 25)  # the block edge
    assert biggest_step(shown["catrom"]) < 0.25 * (230 - 25)
    assert np.abs(shown["catrom"] - shown["linear"]).max() > 2
