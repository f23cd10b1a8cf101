"""The live app on real audio: PortAudio recording a PulseAudio null sink's monitor while the test plays
known signals into the sink (see tests/pulse_audio.py)."""

import os
import subprocess
import sys
import time

import av
import numpy as np
import pytest
import torch

from core.audio.mel import MelConfig, MelSpectrogramFrontEnd
from core.params import Params
from core.video_writer import probe_media
from tests.live_helpers import wait_for
from tests.pipeline_helpers import tiny_model
from tests.pulse_audio import PULSE_DEVICE, null_sink, pulse_server  # noqa: F401 - fixtures
from visualizer.session import InputChoice, LiveSession

SR = 44100
needs_display = pytest.mark.skipif(
    not (os.environ.get("DISPLAY") or os.environ.get("QT_QPA_PLATFORM")),
    reason="no display: run the tests through ./dev.sh test (it starts Xvfb)",
)
TONE_HZ = 2000.0


def tone(seconds: float, freq: float = TONE_HZ, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def tone_band() -> int:
    """The mel band where the model's own front end puts TONE_HZ."""
    mel = MelSpectrogramFrontEnd(MelConfig())(torch.from_numpy(tone(0.5)))
    return int(mel.mean(dim=1).argmax())


class LatentLog:
    """A frame sink that notes each frame's latent and mel window (it runs on the render thread)."""

    def __init__(self, worker):
        self.worker = worker
        self.latents: list[torch.Tensor] = []
        self.windows: list[np.ndarray] = []

    def feed(self, frame, audio):
        self.latents.append(self.worker.pipeline.latent.clone())
        self.windows.append(frame.mel)

    def motion(self, start: int, end: int) -> float:
        steps = [(self.latents[i] - self.latents[i - 1]).abs().mean().item() for i in range(start + 1, end)]
        return float(np.mean(steps))


def test_microphone_path_end_to_end(null_sink, tmp_path):
    session = LiveSession(tiny_model(), Params(noise=0.0, alpha=0.4, window_seconds=0.5), InputChoice(device=PULSE_DEVICE))
    log = LatentLog(session.worker)
    session.worker.add_sink(log)
    session.worker.start()
    session.use_source(session.source_choice)
    try:
        assert wait_for(lambda: session.input_state()[0] == "running", 10), session.input_state()
        time.sleep(1.5)  # silence (the sink's keepalive)
        silent = (len(log.latents) // 2, len(log.latents))
        rec = session.start_recording(tmp_path / "mic.mp4")
        noise = (0.4 * np.random.default_rng(0).standard_normal(int(1.5 * SR))).astype(np.float32)
        with null_sink.play(np.concatenate([tone(2.0), noise])) as playback:
            playback.wait(15)
        session.stop_recording(wait=True)
        loud_end = len(log.latents)
    finally:
        session.stop()
    # The spectrogram (the very windows the model saw) shows the tone's band while it played.
    band = tone_band()
    lit = [w for w in log.windows if w.mean(axis=1).argmax() == band or abs(int(w.mean(axis=1).argmax()) - band) <= 1]
    assert len(lit) >= 10, f"no window shows the {TONE_HZ:g} Hz band (mel band {band})"
    # The latent moves differently for silence and for sound.
    quiet_motion = log.motion(*silent)
    loud_motion = log.motion(loud_end - 20, loud_end)
    assert loud_motion > 3 * quiet_motion + 1e-6, (quiet_motion, loud_motion)
    # The recording's sound is the signal that was played: the tone is its strongest frequency.
    assert rec.state == "finished", rec.error
    with av.open(str(rec.path)) as c:
        heard = np.concatenate([f.to_ndarray().mean(axis=0) for f in c.decode(audio=0)])
    spectrum = np.abs(np.fft.rfft(heard * np.hanning(heard.size)))
    peak_hz = np.fft.rfftfreq(heard.size, 1 / SR)[spectrum.argmax()]
    assert abs(peak_hz - TONE_HZ) < 20, peak_hz
    assert probe_media(rec.path).frame_count > 24


@needs_display  # qtbot makes a QApplication before the test body runs; without a display Qt aborts
def test_unplugged_input_gives_a_message_and_a_rescan_finds_it_again(null_sink, qtbot, tmp_path):
    # Qt widgets: imported only by the test that has a display (the others run without one).
    from visualizer.main_window import MainWindow, delete_window_now

    session = LiveSession(tiny_model(), Params(), InputChoice(device=PULSE_DEVICE))
    window = MainWindow(session)
    session.on_message = window.message.emit
    try:
        window.show()
        session.worker.start()
        session.use_source(session.source_choice)
        qtbot.waitUntil(lambda: session.input_state()[0] == "running", timeout=10000)
        null_sink.unload()  # the interface is unplugged mid-set
        qtbot.waitUntil(lambda: session.input_state()[0] == "lost", timeout=10000)
        qtbot.waitUntil(lambda: window.input_state_label.text() != "", timeout=5000)
        assert session.input_state()[1] and session.input_state()[1] in window.message_line.text()
        before = session.worker.frames.peek()[0].index
        qtbot.waitUntil(lambda: session.worker.frames.peek()[0].index > before + 10, timeout=10000)
        null_sink.load()  # plugged back in
        window.rescan_devices()
        qtbot.waitUntil(lambda: session.input_state()[0] == "running", timeout=15000)
        assert window.device_combo.findData(PULSE_DEVICE) >= 0
        with null_sink.play(tone(1.0)) as playback:
            playback.wait(10)
            qtbot.waitUntil(lambda: session.worker.status.peek()[0].level_rms > 0.1, timeout=5000)
    finally:
        delete_window_now(window)  # not left to the garbage collector (see delete_window_now)


@needs_display
def test_scripted_microphone_run(null_sink, tmp_path):
    out = tmp_path / "mic.mp4"
    with null_sink.play(tone(30.0), loop=True):
        r = subprocess.run(
            [sys.executable, "-m", "core.cli", "live", "--device", PULSE_DEVICE, "--record", str(out), "--duration", "5"],
            capture_output=True, text=True, timeout=180, env={**os.environ, "PULSE_SOURCE": null_sink.monitor},
        )
    assert r.returncode == 0, r.stderr
    info = probe_media(out)
    assert info.audio_duration == pytest.approx(5.0, abs=0.2)
    assert info.video_duration == pytest.approx(info.audio_duration, abs=0.1)
    with av.open(str(out)) as c:
        heard = np.concatenate([f.to_ndarray().mean(axis=0) for f in c.decode(audio=0)])
    assert np.sqrt(np.mean(heard[SR:] ** 2)) > 0.2  # the tone (rms 0.35), not silence
