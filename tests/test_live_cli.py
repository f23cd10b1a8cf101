"""`soundvj live` as a user runs it: scripted runs with a recording, bad input, a missing Qt, a full disk."""

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from core.params import Params
from core.video_writer import probe_media
from tests.live_helpers import SR, write_wav
from tests.pipeline_helpers import tiny_model
from visualizer.session import InputChoice, LiveSession

needs_display = pytest.mark.skipif(
    not (os.environ.get("DISPLAY") or os.environ.get("QT_QPA_PLATFORM")),
    reason="no display: run the tests through ./dev.sh test (it starts Xvfb)",
)


def soundvj(*args, timeout=120, env=None):
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def decoded_audio(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray().mean(axis=0) for f in c.decode(audio=0)])


def test_missing_file_is_one_line_exit_2(tmp_path):
    r = soundvj("live", "--file", str(tmp_path / "missing.wav"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("soundvj: error:") and "missing.wav" in r.stderr


def test_unknown_device_is_one_line_exit_2():
    r = soundvj("live", "--device", "no-such-device")
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "no-such-device" in r.stderr


def test_without_pyqt6_it_says_how_to_install(tmp_path):
    wav = write_wav(tmp_path / "x.wav", 1.0)
    code = (
        "import sys; sys.modules['PyQt6'] = None; from core.cli import main; "
        f"sys.exit(main(['live', '--file', {str(wav)!r}]))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "pip install 'soundvj[live]'" in r.stderr


def test_list_devices_prints_and_exits():
    r = soundvj("live", "--list-devices")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


@needs_display
def test_scripted_file_run_records_exactly_the_file(tmp_path):
    wav = write_wav(tmp_path / "tone.wav", 8.0, kind="tone")
    out = tmp_path / "live.mp4"
    r = soundvj("live", "--file", str(wav), "--record", str(out), "--duration", "5", timeout=180)
    assert r.returncode == 0, r.stderr
    info = probe_media(out)
    assert info.audio_duration == pytest.approx(5.0, abs=0.2)
    assert info.video_duration == pytest.approx(info.audio_duration, abs=0.1)
    heard = decoded_audio(out)
    with av.open(str(wav)) as c:
        source = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)]).astype(np.float32) / 32767
    # The recording's sound is the file from its first sample (AAC: compare after the first block).
    n = min(heard.size, int(4.5 * SR))
    corr = np.corrcoef(heard[2048:n], source[2048:n])[0, 1]
    assert corr > 0.98, corr


@needs_display
def test_full_disk_stops_the_recording_and_the_show_goes_on(tmp_path, qtbot):
    """A 300 kB tmpfs fills within a second of recording: the recorder stops with a message, the
    render thread keeps making frames, and no half-written file is left under the name."""
    # The window's modules need PyQt6; the rest of this file runs without it (it checks the hint).
    from visualizer.main_window import MainWindow, delete_window_now

    mount = tmp_path / "tiny"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        wav = write_wav(tmp_path / "noise.wav", 30.0)
        session = LiveSession(tiny_model(), Params(), InputChoice(file=str(wav), loop=True))
        window = MainWindow(session, record_folder=str(mount))
        session.on_message = window.message.emit
        try:
            window.show()
            session.worker.start()
            session.use_source(session.source_choice)
            # Incompressible noise frames at crf 0 fill 300 kB fast.
            rec = session.start_recording(mount / "full.mp4", crf=0)
            qtbot.waitUntil(lambda: rec.state == "failed", timeout=60000)
            assert "full.mp4" in rec.error and ("space" in rec.error.lower() or "error" in rec.error.lower())
            frames_then = session.worker.frames.peek()[0].index
            qtbot.waitUntil(lambda: session.worker.frames.peek()[0].index > frames_then + 10, timeout=10000)
            qtbot.waitUntil(lambda: "full.mp4" in window.record_label.text(), timeout=5000)
            leftovers = [p.name for p in mount.iterdir() if p.name.startswith(".full.mp4")]
            assert not leftovers
            if (mount / "full.mp4").exists():  # what was written must play
                assert probe_media(mount / "full.mp4").frame_count > 0
        finally:
            delete_window_now(window)  # not left to the garbage collector (see delete_window_now)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_broken_preset_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nparams: {alpha: 3}\n")
    r = soundvj("live", "--preset", str(bad))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "bad.yaml" in r.stderr


@needs_display
def test_scripted_run_with_the_output_fullscreen(tmp_path):
    wav = write_wav(tmp_path / "noise.wav", 3.0)
    r = soundvj("live", "--file", str(wav), "--duration", "2", "--fullscreen", "0", "--no-gl", timeout=120)
    assert r.returncode == 0, r.stderr


@needs_display
def test_screenshot_saves_the_window_as_the_run_ends(tmp_path):
    from PIL import Image

    wav = write_wav(tmp_path / "noise.wav", 4.0)
    shot = tmp_path / "window.png"
    r = soundvj("live", "--file", str(wav), "--duration", "3", "--screenshot", str(shot), timeout=120)
    assert r.returncode == 0 and f"saved {shot}" in r.stdout, (r.returncode, r.stdout, r.stderr)
    picture = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert picture.shape[0] >= 400 and picture.shape[1] >= 600, picture.shape  # the whole window, not a widget
    assert picture.std() > 10  # controls, plots and the frame: not a blank grab
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noise.wav", "window.png"]  # no partial file left


def test_screenshot_must_be_a_png_one_line_exit_2(tmp_path):
    wav = write_wav(tmp_path / "noise.wav", 1.0)
    r = soundvj("live", "--file", str(wav), "--screenshot", str(tmp_path / "window.jpg"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "window.jpg" in r.stderr and ".png" in r.stderr
