"""Long inputs render in bounded memory: decode, window and mux stream."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from core.model import save_full_model
from core.video_writer import probe_media
from tests.hostile_input import run_soundvj
from tests.pipeline_helpers import tiny_model

RATE = 22050


def write_long_wav(path: Path, seconds: float) -> Path:
    """Mono 16-bit noise-and-tones, written a minute at a time (the test itself stays small)."""
    rng = np.random.default_rng(0)
    total = int(seconds * RATE)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        for first in range(0, total, 60 * RATE):
            n = min(60 * RATE, total - first)
            t = (first + np.arange(n)) / RATE
            x = 0.3 * np.sin(2 * np.pi * (220 + 40 * np.sin(t / 7)) * t) + 0.05 * rng.standard_normal(n)
            w.writeframes((x * 32767).astype("<i2").tobytes())
    return path


@pytest.mark.slow
def test_thirty_minutes_render_in_the_memory_of_five_seconds(tmp_path):
    model = save_full_model(tmp_path / "tiny.safetensors", tiny_model(), source="tiny")
    peaks = {}
    for seconds in (5, 1800):
        wav = write_long_wav(tmp_path / f"in{seconds}.wav", seconds)
        out = tmp_path / f"out{seconds}.mp4"
        # 1 fps, short windows and big batches keep the frames cheap; the audio is still decoded,
        # resampled, windowed (every mel frame) and muxed in full.
        run = run_soundvj(["render", str(wav), "-o", str(out), "--model", str(model), "--fps", "1", "--quiet",
                           "--window-seconds", "0.1", "--batch", "64", "--device", "cpu"], timeout=1500)
        assert run.returncode == 0, run.stderr[-2000:]
        info = probe_media(out)
        assert info.frame_count == seconds and abs(info.audio_duration - seconds) < 0.1
        peaks[seconds] = run.peak_rss_bytes
        print(f"{seconds} s input: peak RSS {run.peak_rss_bytes / 2**20:.0f} MB, {run.seconds:.1f} s")
    assert peaks[1800] - peaks[5] < 300 * 2**20, peaks
