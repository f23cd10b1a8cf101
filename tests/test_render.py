"""`soundvj render`: real mp4s decoded back with PyAV; bad inputs; nothing half-written."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core.cli import main
from core.model import load_model, save_full_model
from core.model_file import save_model
from core.params import Params
from core.render import load_render_audio, render
from core.video_writer import probe_media
from tests.pipeline_helpers import tiny_model
from tests.test_audio_decode import sines, write_audio

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    return save_full_model(path, tiny_model(), source="tiny test model")


def assert_video_matches(info, duration: float, fps: float, size: tuple[int, int], channels: int | None = None):
    frames = int(np.floor(duration * fps + 0.5))
    assert info.frame_count == frames
    assert (info.width, info.height) == size
    assert info.has_audio and info.audio_codec == "aac"
    assert abs(info.video_duration - frames / fps) < 1e-3
    assert abs(info.audio_duration - info.video_duration) < 1 / fps
    if channels is not None:
        assert info.channels == channels


def test_render_short_clip_api(tmp_path):
    wav = write_audio(tmp_path / "clip.wav", sines([440, 660], 48000, 1.3), 48000, "pcm_s16le", "s16", "stereo")
    model = tiny_model()
    audio = load_render_audio(wav, model.mel_config.sample_rate)
    out = tmp_path / "out.mp4"
    result = render(audio, out, model, Params(fps=30), progress=False)
    info = probe_media(out)
    print(f"rendered {result.frames} frames at {result.fps:.1f} frames/s; stage ms/frame {result.stage_ms}")
    assert_video_matches(info, 1.3, 30, (32, 32), channels=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.wav", "out.mp4"]


@pytest.mark.parametrize(
    "name,rate,layout,freqs",
    [
        ("mono8k.wav", 8000, "mono", [300]),
        ("surround96k.flac", 96000, "5.1", [200, 300, 400, 50, 500, 600]),
        ("stereo44k.mp3", 44100, "stereo", [440, 550]),
    ],
)
def test_render_cli_channel_layouts_and_rates(tmp_path, tiny_model_file, capsys, name, rate, layout, freqs):
    codec, fmt = {"wav": ("pcm_s16le", "s16"), "flac": ("flac", "s32"), "mp3": ("libmp3lame", "fltp")}[name.split(".")[1]]
    src = write_audio(tmp_path / name, sines(freqs, rate, 1.0, amplitude=0.3), rate, codec, fmt, layout)
    out = tmp_path / "out.mp4"
    code = main(["render", str(src), "-o", str(out), "--model", str(tiny_model_file), "--fps", "24",
                 "--size", "48x32", "--quiet", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    info = probe_media(out)
    decoded_duration = info.audio_duration  # mp3 adds no length: the writer trims to frames / fps
    assert_video_matches(info, 1.0, 24, (48, 32), channels=1 if layout == "mono" else 2)
    assert decoded_duration > 0


def test_start_and_seconds_and_preset(tmp_path, tiny_model_file, capsys):
    src = write_audio(tmp_path / "long.wav", sines([440], 44100, 3.0), 44100, "pcm_s16le", "s16", "mono")
    out = tmp_path / "cut.mp4"
    assert main(["render", str(src), "-o", str(out), "--model", str(tiny_model_file), "--start", "1.0",
                 "--seconds", "1.5", "--preset", "storm", "--fps", "20", "--quiet"]) == 0
    assert_video_matches(probe_media(out), 1.5, 20, (32, 32))
    assert main(["render", str(src), "-o", str(out), "--model", str(tiny_model_file), "--preset", "nosuch"]) == 2
    assert "nosuch" in capsys.readouterr().err


def test_demo_with_the_default_model(tmp_path, capsys):
    out = tmp_path / "demo.mp4"
    assert main(["render", "--demo", "--seconds", "1", "-o", str(out), "--quiet"]) == 0
    assert_video_matches(probe_media(out), 1.0, 24, (128, 128), channels=1)
    text = capsys.readouterr().out
    assert "frames/s" in text and "random weights" in text


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def write_float_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """A 32-bit float WAV written by hand (so NaN/inf survive exactly)."""
    data = samples.astype("<f4").tobytes()
    header = b"RIFF" + (36 + len(data)).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    header += (3).to_bytes(2, "little") + (1).to_bytes(2, "little") + rate.to_bytes(4, "little")
    header += (rate * 4).to_bytes(4, "little") + (4).to_bytes(2, "little") + (32).to_bytes(2, "little")
    path.write_bytes(header + b"data" + len(data).to_bytes(4, "little") + data)
    return path


@pytest.mark.parametrize(
    "make,expect",
    [
        (lambda d: d / "missing.wav", "not found"),
        (lambda d: write_bytes(d / "empty.wav", b""), "empty.wav"),
        (lambda d: write_float_wav(d / "zero.wav", np.zeros(0), 44100), "zero.wav"),
        (lambda d: write_float_wav(d / "nan.wav", np.array([0.1, np.nan, 0.2] * 5000), 44100), "NaN"),
        (lambda d: write_float_wav(d / "inf.wav", np.array([0.1, np.inf] * 5000), 44100), "NaN/inf"),
        (lambda d: write_bytes(d / "text.mp3", b"hello"), "text.mp3"),
    ],
)
def test_bad_audio_is_one_line_and_writes_nothing(tmp_path, tiny_model_file, capsys, make, expect):
    src = make(tmp_path)
    out = tmp_path / "out.mp4"
    assert main(["render", str(src), "-o", str(out), "--model", str(tiny_model_file), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("soundvj: error: ") and err.count("\n") == 1 and expect in err
    assert not out.exists() and not list(tmp_path.glob(".out.mp4*"))


@pytest.mark.parametrize(
    "out,expect",
    [
        ("{tmp}/no/such/folder/out.mp4", "does not exist"),
        ("/sys/soundvj-out.mp4", "/sys"),  # refuses new files even to root
        ("{tmp}/out.avi", ".mp4"),
        ("{tmp}", "folder"),
    ],
)
def test_bad_output_fails_before_rendering(tmp_path, capsys, monkeypatch, out, expect):
    import core.render

    monkeypatch.setattr(core.render, "load_model", lambda *a, **k: pytest.fail("loaded a model for a bad output"))
    assert main(["render", "--demo", "-o", out.format(tmp=tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expect in err


def test_demo_and_audio_are_exclusive(capsys, tmp_path):
    assert main(["render", "-o", str(tmp_path / "x.mp4")]) == 2
    assert main(["render", "a.wav", "--demo", "-o", str(tmp_path / "x.mp4")]) == 2
    assert main(["render", "--demo", "-o", str(tmp_path / "x.mp4"), "--alpha", "3"]) == 2
    assert "--alpha" in capsys.readouterr().err


def test_sigterm_mid_render_leaves_nothing(tmp_path, tiny_model_file):
    out = tmp_path / "killed.mp4"
    out.write_bytes(b"previous render")  # an existing file must survive a failed new render
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "render", "--demo", "--seconds", "600", "-o", str(out),
         "--model", str(tiny_model_file), "--device", "cpu"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".killed.mp4.*.partial")):
        time.sleep(0.2)
    assert list(tmp_path.glob(".killed.mp4.*.partial")), "the render never started writing"
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert out.read_bytes() == b"previous render"
    assert not list(tmp_path.glob(".killed.mp4.*.partial"))


def test_model_file_carries_sound_models(tmp_path, capsys):
    model = tiny_model()
    with torch.no_grad():
        for p in model.sound.parameters():
            p.add_(0.01)  # not the seeded values: they must come from the file
    path = save_full_model(tmp_path / "full.safetensors", model)
    loaded = load_model(path, device="cpu", warn=pytest.fail)
    assert not loaded.sound_is_seeded and loaded.mel_config == model.mel_config
    for (k, a), b in zip(model.sound.state_dict().items(), loaded.sound.state_dict().values()):
        assert torch.equal(a, b), k

    bare = save_model(tmp_path / "bare.safetensors", model.generator)
    warnings = []
    seeded = load_model(bare, device="cpu", warn=warnings.append)
    assert seeded.sound_is_seeded and len(warnings) == 1 and "no sound models" in warnings[0]
    assert seeded.sound.config.latent_stepper.num_ws == model.generator.num_ws


def test_render_feeds_the_same_windows_as_the_offline_path():
    """The render loop's chunked feed gives every frame exactly its offline window, including frames
    whose timestamps run past the end of the audio (they hear silence)."""
    from core.audio import MelConfig, StreamingWindower, WindowConfig, mel_windows
    from core.render import frame_windows

    mono = torch.from_numpy(sines([330], 44100, 1.03)[0]).float()
    mel, win = MelConfig(), WindowConfig(fps=24.0)
    total = 30  # 1.25 s of frames for 1.03 s of audio
    fed = torch.stack(list(frame_windows(mono, StreamingWindower(mel, win), total, chunk=5000)))
    offline = mel_windows(mono, mel, win, num_frames=total)
    assert fed.shape == offline.shape
    assert (fed - offline).abs().max().item() < 1e-5
