"""decode_audio / load_mono on real files written with PyAV, and every user-facing failure."""

from __future__ import annotations

import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from core.audio.decode import DecodedAudio, decode_audio, load_mono
from core.audio.resampling import resample, to_mono
from core.errors import SoundvjError


def sines(freqs: list[float], sample_rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    """One sine per channel, [channels, n] float64."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return np.stack([amplitude * np.sin(2 * np.pi * f * t) for f in freqs])


def write_audio(
    path: Path,
    samples: np.ndarray,
    sample_rate: int,
    codec: str,
    sample_format: str,
    layout: str,
    container_format: str | None = None,
    with_video: bool = False,
) -> Path:
    """Encode [channels, n] floats in [-1, 1] with PyAV (optionally next to a small video track)."""
    with av.open(str(path), "w", format=container_format) as container:
        video = None
        if with_video:
            video = container.add_stream("mpeg4", rate=10)
            video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        stream = container.add_stream(codec, rate=sample_rate, layout=layout)
        stream.format = sample_format
        for i in range(0, samples.shape[1], 1024):
            block = samples[:, i : i + 1024]
            if sample_format.startswith("s16"):
                block = np.round(block * 32767).astype(np.int16)
            elif sample_format.startswith("s32"):
                block = np.round(block * 2147483647).astype(np.int32)
            else:
                block = block.astype(np.float32)
            array = block if sample_format.endswith("p") else block.T.reshape(1, -1)  # packed = interleaved
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(array), format=sample_format, layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = sample_rate, i, Fraction(1, sample_rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        if video is not None:
            for k in range(round(samples.shape[1] / sample_rate * 10)):
                image = np.full((64, 64, 3), (k * 25) % 256, np.uint8)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = k
                for packet in video.encode(frame):
                    container.mux(packet)
            for packet in video.encode(None):
                container.mux(packet)
    return path


def write_video_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        for k in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            frame.pts = k
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
    return path


def peak_hz(x: np.ndarray | torch.Tensor, sample_rate: int) -> float:
    x = np.asarray(x, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.shape[-1])))
    return float(np.fft.rfftfreq(x.shape[-1], 1.0 / sample_rate)[spectrum.argmax()])


# --- formats ----------------------------------------------------------------------------------

LOSSLESS = [
    ("int16.wav", "pcm_s16le", "s16", None),
    ("int32.wav", "pcm_s32le", "s32", None),
    ("float.wav", "pcm_f32le", "flt", None),
    ("stereo.flac", "flac", "s16", None),
]


@pytest.mark.parametrize("name,codec,sample_format,container_format", LOSSLESS)
def test_lossless_stereo_48k_roundtrips_exactly(tmp_path, name, codec, sample_format, container_format):
    original = sines([440.0, 880.0], 48000, 1.0)
    path = write_audio(tmp_path / name, original, 48000, codec, sample_format, "stereo", container_format)
    decoded = decode_audio(path)
    assert isinstance(decoded, DecodedAudio)
    assert decoded.samples.dtype == torch.float32
    assert (decoded.sample_rate, decoded.channels, decoded.samples.shape) == (48000, 2, (2, 48000))
    assert decoded.duration == pytest.approx(1.0)
    # Left and right stay apart (interleaving undone correctly) and keep their level.
    assert np.abs(decoded.samples.numpy() - original).max() < 1e-4
    assert peak_hz(decoded.samples[0], 48000) == pytest.approx(440.0, abs=1.5)
    assert peak_hz(decoded.samples[1], 48000) == pytest.approx(880.0, abs=1.5)


LOSSY = [
    ("stereo.mp3", "libmp3lame", "fltp", None, False),
    ("stereo.ogg", "libopus", "flt", "ogg", False),
    ("stereo.m4a", "aac", "fltp", None, False),
    ("clip.mp4", "aac", "fltp", None, True),
    ("clip.mkv", "flac", "s16", None, True),
    ("clip.webm", "libopus", "flt", None, False),
]


@pytest.mark.parametrize("name,codec,sample_format,container_format,with_video", LOSSY)
def test_compressed_and_video_containers_decode_the_audio_track(
    tmp_path, name, codec, sample_format, container_format, with_video
):
    original = sines([440.0, 1200.0], 48000, 1.0)
    path = write_audio(tmp_path / name, original, 48000, codec, sample_format, "stereo", container_format, with_video)
    decoded = decode_audio(path)
    assert decoded.channels == 2
    assert decoded.duration == pytest.approx(1.0, abs=0.06)  # encoder padding/priming
    mono = load_mono(path, sample_rate=44100)
    assert mono.dim() == 1 and mono.dtype == torch.float32
    assert mono.shape[0] == pytest.approx(44100, abs=0.06 * 44100)
    # Both sines survive the downmix, at the right frequencies after resampling to 44.1 kHz.
    spectrum = np.abs(np.fft.rfft(mono.numpy() * np.hanning(mono.shape[0])))
    freqs = np.fft.rfftfreq(mono.shape[0], 1 / 44100)
    top_two = sorted(freqs[np.argsort(spectrum)[-40:]])
    assert min(abs(f - 440.0) for f in top_two) < 3 and min(abs(f - 1200.0) for f in top_two) < 3


def test_surround_5_1_keeps_six_channels_in_order(tmp_path):
    freqs = [200.0, 300.0, 500.0, 60.0, 700.0, 1100.0]
    path = write_audio(tmp_path / "surround.wav", sines(freqs, 48000, 0.5, 0.3), 48000, "pcm_s16le", "s16", "5.1")
    decoded = decode_audio(path)
    assert decoded.channels == 6 and decoded.samples.shape == (6, 24000)
    assert [peak_hz(c, 48000) for c in decoded.samples] == pytest.approx(freqs, abs=2.5)
    mono = to_mono(decoded.samples)
    assert mono.shape == (24000,)
    assert torch.allclose(mono, decoded.samples.mean(0))


@pytest.mark.parametrize("native_rate", [8000, 22050, 96000])
def test_extreme_sample_rates_resample_to_the_model_rate(tmp_path, native_rate):
    original = sines([1000.0], native_rate, 0.5)
    path = write_audio(tmp_path / f"mono{native_rate}.wav", original, native_rate, "pcm_s16le", "s16", "mono")
    assert decode_audio(path).sample_rate == native_rate
    resampled = decode_audio(path, sample_rate=44100)
    assert resampled.sample_rate == 44100 and resampled.channels == 1
    assert resampled.samples.shape[1] == pytest.approx(22050, abs=2)
    assert resampled.duration == pytest.approx(0.5, abs=1e-3)
    assert peak_hz(resampled.samples[0], 44100) == pytest.approx(1000.0, abs=2.5)
    assert float(resampled.samples.abs().max()) == pytest.approx(0.5, abs=0.03)


def test_start_and_seconds_select_the_exact_span(tmp_path):
    original = sines([440.0, 880.0], 48000, 2.0)
    path = write_audio(tmp_path / "span.wav", original, 48000, "pcm_f32le", "flt", "stereo")
    span = decode_audio(path, start=0.75, seconds=0.5)
    assert span.samples.shape == (2, 24000)
    np.testing.assert_allclose(span.samples.numpy(), original[:, 36000:60000], atol=1e-6)
    # Past the end: what is left.
    tail = decode_audio(path, start=1.5, seconds=5.0)
    assert tail.samples.shape == (2, 24000)


@pytest.mark.parametrize("name,codec,sample_format", [("seek.mp3", "libmp3lame", "fltp"), ("seek.m4a", "aac", "fltp")])
def test_start_in_compressed_files_matches_the_full_decode(tmp_path, name, codec, sample_format):
    t = np.arange(3 * 48000) / 48000
    chirp = np.stack([0.5 * np.sin(2 * np.pi * (200 + 200 * t) * t)] * 2)  # every position sounds different
    path = write_audio(tmp_path / name, chirp, 48000, codec, sample_format, "stereo")
    full = decode_audio(path).samples
    span = decode_audio(path, start=1.3, seconds=0.5).samples
    # Seeking must land on the same samples, decoder warm-up included (mp3's bit reservoir).
    assert span.shape == (2, 24000)
    torch.testing.assert_close(span, full[:, 62400:86400], atol=1e-3, rtol=0)


def test_resample_and_to_mono_helpers():
    x = torch.from_numpy(sines([440.0], 48000, 0.25)).float()
    assert resample(x, 48000, 48000) is x
    y = resample(x, 48000, 16000)
    assert y.shape == (1, 4000)
    assert peak_hz(y[0], 16000) == pytest.approx(440.0, abs=4.5)
    row = y[0]
    assert to_mono(row) is row  # already mono: no copy
    with pytest.raises(SoundvjError, match="to_sr"):
        resample(x, 48000, 0)


# --- errors -----------------------------------------------------------------------------------


def _one_line_error(path_or_call, match: str) -> str:
    with pytest.raises(SoundvjError, match=match) as info:
        path_or_call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_file(tmp_path):
    message = _one_line_error(lambda: decode_audio(tmp_path / "nope.wav"), "not found")
    assert "nope.wav" in message


def test_text_file_named_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are not samples\n" * 20)
    assert "notes.wav" in _one_line_error(lambda: decode_audio(path), "could not")


def test_empty_byte_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    assert "empty.wav" in _one_line_error(lambda: load_mono(path), "could not|no audio")


def test_zero_length_wav(tmp_path):
    path = tmp_path / "zero.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(b"")
    assert "zero.wav" in _one_line_error(lambda: decode_audio(path), "no audio samples")


def test_start_past_the_end(tmp_path):
    path = write_audio(tmp_path / "short.wav", sines([440.0], 44100, 0.2), 44100, "pcm_s16le", "s16", "mono")
    assert "short.wav" in _one_line_error(lambda: decode_audio(path, start=3.0), "start=3")


def test_video_without_audio(tmp_path):
    path = write_video_only(tmp_path / "silent_film.mp4")
    assert "silent_film.mp4" in _one_line_error(lambda: decode_audio(path), "no audio stream")


def test_nan_in_float_wav_is_rejected(tmp_path):
    samples = sines([440.0], 44100, 0.2)
    samples[0, 1000] = np.nan
    samples[0, 2000] = np.inf
    path = write_audio(tmp_path / "broken.wav", samples, 44100, "pcm_f32le", "flt", "mono")
    message = _one_line_error(lambda: decode_audio(path), "2 NaN/inf")
    assert "broken.wav" in message


def test_directory_and_bad_arguments(tmp_path):
    _one_line_error(lambda: decode_audio(tmp_path), "directory")
    path = write_audio(tmp_path / "ok.wav", sines([440.0], 44100, 0.1), 44100, "pcm_s16le", "s16", "mono")
    _one_line_error(lambda: decode_audio(path, sample_rate=10), "sample_rate")
    _one_line_error(lambda: decode_audio(path, start=-1.0), "start")
    _one_line_error(lambda: decode_audio(path, seconds=0), "seconds")


def test_wav_with_latin1_tags_decodes(tmp_path):
    """Old WAV editors write INFO tags in Latin-1 (a bare 0xA9 for the copyright sign); the samples must
    still decode rather than fail on the tag's text."""
    samples = (np.sin(np.arange(8000) * 0.05) * 12000).astype("<i2")
    tag = b"ICOP" + (22).to_bytes(4, "little") + b"Copyright \xa9 1998 FMJ\x00\x00"
    info = b"LIST" + (4 + len(tag)).to_bytes(4, "little") + b"INFO" + tag
    fmt = b"fmt " + (16).to_bytes(4, "little") + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") \
        + (8000).to_bytes(4, "little") + (16000).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    data = b"data" + len(samples.tobytes()).to_bytes(4, "little") + samples.tobytes()
    body = b"WAVE" + fmt + info + data
    path = tmp_path / "tagged.wav"
    path.write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)
    decoded = decode_audio(path)
    assert decoded.sample_rate == 8000
    np.testing.assert_allclose(decoded.samples[0].numpy(), samples / 32768.0, atol=1e-6)
