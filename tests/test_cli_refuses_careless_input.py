"""The render/convert command lines against careless and extreme use: one line, exit 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from core.cli import main
from core.errors import SoundvjError
from core.model import save_full_model
from core.video_writer import Mp4Writer
from tests.hostile_input import assert_refused, run_soundvj
from tests.pipeline_helpers import tiny_model
from tests.test_audio_decode import sines, write_audio


def one_error_line(capsys, *expected: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("soundvj: error: "), err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory) -> Path:
    return save_full_model(tmp_path_factory.mktemp("model") / "tiny.safetensors", tiny_model(), source="tiny")


@pytest.fixture()
def input_video(tmp_path) -> Path:
    """A real mp4 with sound: what a user renders from and must not lose."""
    path = tmp_path / "in.mp4"
    audio = sines([440], 44100, 0.5, amplitude=0.3)
    with Mp4Writer(path, 24, 16, 16, audio=audio, sample_rate=44100) as writer:
        for _ in range(12):
            writer.write(np.zeros((16, 16, 3), np.uint8))
    return path


# --- the output must never be the input ------------------------------------------------

@pytest.mark.parametrize("how", ["same path", "symlink", "hard link", "relative path"])
def test_render_refuses_to_write_onto_its_input(tmp_path, input_video, capsys, monkeypatch, how):
    before = input_video.read_bytes()
    out = {"same path": input_video, "symlink": tmp_path / "link.mp4", "hard link": tmp_path / "hard.mp4",
           "relative path": Path("in.mp4")}[how]
    if how == "symlink":
        out.symlink_to(input_video)
    if how == "hard link":
        os.link(input_video, out)
    monkeypatch.chdir(tmp_path)
    assert main(["render", str(input_video), "-o", str(out), "--quiet"]) == 2
    one_error_line(capsys, "is the input")
    assert input_video.read_bytes() == before


def test_render_refuses_to_write_onto_the_preset_or_model(tmp_path, input_video, tiny_model_file, capsys):
    model_copy = tmp_path / "model.mp4"  # extensions lie: a model file named like a video
    shutil.copy(tiny_model_file, model_copy)
    before = model_copy.read_bytes()
    assert main(["render", str(input_video), "-o", str(model_copy), "--model", str(model_copy), "--quiet"]) == 2
    one_error_line(capsys, "is the input")
    assert model_copy.read_bytes() == before


def test_convert_refuses_to_write_onto_its_input(tmp_path, capsys):
    src = tmp_path / "net.safetensors"
    src.write_bytes(b"\x80\x04not really a pickle")
    assert main(["convert", str(src), "-o", str(src)]) == 2
    one_error_line(capsys, "is the input")
    assert src.read_bytes() == b"\x80\x04not really a pickle"


# --- numbers at the edges --------------------------------------------------------------

@pytest.mark.parametrize(
    "flags,expected",
    [
        (["--seconds", "1e308"], "--seconds"),
        (["--start", "1e308"], "--start"),
        (["--seconds", "inf"], "--seconds"),
        (["--start", "nan"], "--start"),
        (["--seed", "9" * 400], "--seed"),
        (["--crf", "-5"], "--crf"),
        (["--crf", "100"], "--crf"),
        (["--crf", "9" * 400], "--crf"),
        (["--batch", "9" * 400], "--batch"),
        (["--fps", "1e308"], "--fps"),
        (["--size", "99999999999999999999x2"], "--size"),
    ],
)
@pytest.mark.parametrize("source", ["file", "demo"])
def test_extreme_numbers_are_one_line_exit_2(tmp_path, tiny_model_file, capsys, flags, expected, source):
    wav = write_audio(tmp_path / "a.wav", sines([440], 22050, 0.5), 22050, "pcm_s16le", "s16", "mono")
    src = ["--demo"] if source == "demo" else [str(wav)]
    out = tmp_path / "out.mp4"
    code = main(["render", *src, "-o", str(out), "--model", str(tiny_model_file), "--quiet", *flags])
    assert code == 2
    one_error_line(capsys, expected)
    assert not out.exists()


def _full_disk(tmp_path: Path) -> Path:
    folder = tmp_path / "full"
    folder.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.decode().strip() or 'not permitted'})")
    (folder / "filler").write_bytes(bytes(250_000))  # two pages left: less than 2 s of AAC
    return folder


def test_full_disk_is_one_line_and_leaves_nothing(tmp_path, tiny_model_file):
    """A full disk ("No space left on device") is one line, not a traceback, and leaves no file."""
    folder = _full_disk(tmp_path)
    try:
        out = folder / "out.mp4"
        # A real (short) render before the disk fills: more work than the 60 s meant for hostile files.
        run = run_soundvj(["render", "--demo", "--seconds", "1", "--fps", "8", "-o", str(out), "--quiet",
                           "--model", str(tiny_model_file)], timeout=300)
        assert_refused(run, str(out), "No space left on device")
        assert sorted(p.name for p in folder.iterdir()) == ["filler"]
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_file_size_limit_is_one_line_and_leaves_nothing(tmp_path, tiny_model_file):
    """The same path without privileges: RLIMIT_FSIZE makes writes fail (EFBIG) the way ENOSPC does."""
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "out.mp4"
    run = run_soundvj(["render", "--demo", "--seconds", "1", "--fps", "8", "-o", str(out), "--quiet",
                       "--model", str(tiny_model_file)], max_file_bytes=8_000, timeout=300)
    assert_refused(run, str(out), "too large")
    assert list(folder.iterdir()) == []


# --- messages name the right thing -----------------------------------------------------

def _wav(path: Path, rate: int, frames: int, declared_frames: int | None = None) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.sin(np.arange(frames) * 0.05) * 8000).astype("<i2").tobytes())
    if declared_frames is not None:  # a header promising more than the file holds: a cut-off download
        data = bytearray(path.read_bytes())
        data[4:8] = (36 + 2 * declared_frames).to_bytes(4, "little")
        data[40:44] = (2 * declared_frames).to_bytes(4, "little")
        path.write_bytes(bytes(data))
    return path


def test_one_hertz_wav_names_the_file(tmp_path, tiny_model_file, capsys):
    wav = _wav(tmp_path / "slow.wav", 1, 30)
    assert main(["render", str(wav), "-o", str(tmp_path / "o.mp4"), "--model", str(tiny_model_file), "--quiet"]) == 2
    line = one_error_line(capsys, "slow.wav", "1 Hz")
    assert "from_sr" not in line


def test_demo_start_past_the_soundscape_names_start(tmp_path, capsys):
    assert main(["render", "--demo", "--start", "1e9", "-o", str(tmp_path / "o.mp4"), "--quiet"]) == 2
    line = one_error_line(capsys, "--start")
    assert "demo seconds" not in line


def test_truncated_wav_renders_and_says_so_once(tmp_path, tiny_model_file, capsys):
    wav = _wav(tmp_path / "cut.wav", 22050, 22050, declared_frames=4 * 22050)  # 1 s there, 4 s promised
    out = tmp_path / "o.mp4"
    assert main(["render", str(wav), "-o", str(out), "--model", str(tiny_model_file), "--quiet"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "ends early" in line]
    assert len(warnings) == 1 and warnings[0].startswith("soundvj: warning: ") and "cut.wav" in warnings[0], err
    assert out.exists()


# --- stdin and FIFOs -----------------------------------------------------------------------------

def _short_wav_bytes(tmp_path: Path, seconds: float = 1.0) -> bytes:
    return write_audio(tmp_path / "src.wav", sines([330], 22050, seconds), 22050, "pcm_s16le", "s16",
                       "mono").read_bytes()


def test_dash_reads_standard_input(tmp_path, tiny_model_file):
    from core.video_writer import probe_media

    out = tmp_path / "out.mp4"
    run = run_soundvj(["render", "-", "-o", str(out), "--model", str(tiny_model_file), "--fps", "8", "--quiet"],
                      stdin=_short_wav_bytes(tmp_path, 1.5), timeout=300)
    assert run.returncode == 0, run.stderr
    info = probe_media(out)
    assert info.frame_count == 12 and abs(info.audio_duration - 1.5) < 0.05


def test_fifo_is_read_as_it_comes(tmp_path, tiny_model_file):
    import threading

    from core.video_writer import probe_media

    fifo = tmp_path / "live.wav"
    os.mkfifo(fifo)
    data = _short_wav_bytes(tmp_path)

    def feed() -> None:
        with open(fifo, "wb") as f:  # blocks until the renderer opens its end
            f.write(data)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    out = tmp_path / "out.mp4"
    run = run_soundvj(["render", str(fifo), "-o", str(out), "--model", str(tiny_model_file), "--fps", "8",
                       "--quiet"], timeout=300)
    writer.join(10)
    assert run.returncode == 0, run.stderr
    assert probe_media(out).frame_count == 8


def _in_open_syscall(pid: int) -> bool | None:
    """Whether the process's main thread is in openat(2) now (None: /proc does not say, or another CPU)."""
    numbers = {"x86_64": "257", "aarch64": "56"}.get(os.uname().machine)
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return None
    return None if numbers is None or not fields else fields[0] == numbers


def test_fifo_without_writer_waits_and_ctrl_c_ends_it(tmp_path, tiny_model_file):
    import signal
    import sys
    import time

    fifo = tmp_path / "nobody.wav"
    os.mkfifo(fifo)
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "core.cli", "render", str(fifo), "-o", str(out), "--model",
                             str(tiny_model_file), "--quiet"], stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent,
                            # Ctrl-C as a terminal delivers it: a runner started in the background ('&' in
                            # a script) ignores SIGINT, and an ignored signal stays ignored across exec.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # Imports and the model load, then the wait for a writer: the interrupt is meant for that wait (on a
    # fresh clone the imports alone can take longer than a fixed sleep), so wait until the main thread has
    # sat in openat(2) for a second, where /proc shows it (else after 8 s).
    time.sleep(8)
    blocked, deadline = 0, time.monotonic() + 60
    while blocked < 2 and time.monotonic() < deadline and proc.poll() is None and _in_open_syscall(proc.pid) is not None:
        blocked = blocked + 1 if _in_open_syscall(proc.pid) else 0
        time.sleep(0.5)
    assert proc.poll() is None, proc.stderr.read()
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.strip() == "soundvj: interrupted", err
    assert time.monotonic() - sent < 10
    assert not out.exists()


# --- big output sizes say up front what they need --------------------------------------

def test_huge_size_says_what_it_needs_and_refuses_what_does_not_fit(monkeypatch):
    import core.render as render_mod

    monkeypatch.setattr(render_mod, "available_memory_bytes", lambda: 64 << 30)
    note = render_mod.check_size_fits((8192, 8192))
    assert note and "8192x8192" in note and "GB" in note
    assert render_mod.check_size_fits((512, 512)) is None
    monkeypatch.setattr(render_mod, "available_memory_bytes", lambda: 4 << 30)
    with pytest.raises(SoundvjError) as e:
        render_mod.check_size_fits((8192, 8192))
    assert "--size 8192x8192" in str(e.value) and "available" in str(e.value)


def test_scaling_converts_in_strips_with_the_same_pixels():
    import torch

    from core.render import _scaled_rgb, fit_frames
    from core.video_writer import to_uint8_rgb

    frame = torch.randn(3, 32, 32)
    for width, height in ((48, 32), (1000, 600), (32, 32)):
        expected = to_uint8_rgb(fit_frames(frame[None], width, height)[0]).numpy()
        assert (_scaled_rgb(frame, width, height, rows=64) == expected).all()
