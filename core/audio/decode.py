"""Decoding audio files with PyAV (torchaudio 2.9+ has no I/O), downmixing and resampling.

Reads anything FFmpeg reads: wav (int16/int32/float), flac, ogg, mp3, m4a, and the first audio
track of mp4/mkv/webm. Every failure a user can cause is a one-line `SoundvjError` naming the file.

NaN/inf policy: a *file* with non-finite samples is rejected. A broken file is something to fix
before a performance, and silently zeroing it would hide the damage; the live path
(`StreamingWindower`) instead replaces them with silence so a glitching input never stops the show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
import torchaudio.functional as AF

from core.errors import SoundvjError

# Plenty of headroom either side of 8 kHz .. 96 kHz; outside this a rate is a typo.
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768_000

_SEEK_PREROLL_SECONDS = 0.5

# Full-scale divisor per integer sample format, so every format decodes to [-1, 1].
_INT_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


@dataclass(frozen=True)
class DecodedAudio:
    """Float32 samples in [-1, 1] (floats may exceed it), shape [channels, n]."""

    samples: torch.Tensor
    sample_rate: int
    channels: int
    duration: float  # seconds, n / sample_rate


def _check_rate(field: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not MIN_SAMPLE_RATE <= value <= MAX_SAMPLE_RATE:
        raise SoundvjError(
            f"{field}: expected an integer sample rate in [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz, got {value!r}"
        )
    return value


def _one_line(err: BaseException) -> str:
    # FFmpegError's str() repeats errno and path; strerror alone is the readable part.
    text = getattr(err, "strerror", None) or str(err)
    return " ".join(str(text).split()) or type(err).__name__


def _frame_to_array(frame: av.AudioFrame) -> np.ndarray:
    """One decoded frame as float32 [channels, n], whatever the sample format and packing."""
    fmt = frame.format.name.rstrip("p")  # "s16p" and "s16" scale the same way
    channels = len(frame.layout.channels)
    raw = frame.to_ndarray()
    if not frame.format.is_planar:
        # Packed formats come back as [1, n * channels], interleaved.
        raw = raw.reshape(-1, channels).T
    if fmt in ("flt", "dbl"):
        return raw.astype(np.float32, copy=False)
    if fmt == "u8":
        return ((raw.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    if fmt in _INT_SCALE:
        return (raw.astype(np.float64) / _INT_SCALE[fmt]).astype(np.float32)
    raise SoundvjError(f"sample format {frame.format.name!r}: not supported")  # not reached with FFmpeg's formats


def decode_audio(
    path: str | Path,
    sample_rate: int | None = None,
    start: float = 0.0,
    seconds: float | None = None,
) -> DecodedAudio:
    """Decode the first audio track of `path`, optionally from `start` for `seconds`, optionally resampled."""
    path = Path(path)
    if sample_rate is not None:
        _check_rate("sample_rate", sample_rate)
    if not isinstance(start, (int, float)) or isinstance(start, bool) or not math.isfinite(start) or start < 0:
        raise SoundvjError(f"start: expected seconds >= 0, got {start!r}")
    if seconds is not None and (
        not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds) or seconds <= 0
    ):
        raise SoundvjError(f"seconds: expected a positive number of seconds or None, got {seconds!r}")
    if not path.exists():
        raise SoundvjError(f"audio file {str(path)!r}: not found")
    if path.is_dir():
        raise SoundvjError(f"audio file {str(path)!r}: is a directory, expected an audio or video file")

    try:
        container = av.open(str(path))
    except av.FFmpegError as err:
        raise SoundvjError(
            f"audio file {str(path)!r}: could not be read as audio/video ({_one_line(err)}); "
            "expected wav, flac, ogg, mp3, m4a, mp4, mkv or webm"
        ) from None
    with container:
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams}) or ["nothing"]
            raise SoundvjError(f"audio file {str(path)!r}: has no audio stream (contains {', '.join(kinds)})")
        stream = container.streams.audio[0]
        native_rate, parts = _decode_stream(container, stream, path, start, seconds)

    if not parts and start > 0:
        raise SoundvjError(
            f"audio file {str(path)!r}: start={start:g} s is at or past the end of the audio; expected an earlier start"
        )
    if not parts:
        raise SoundvjError(f"audio file {str(path)!r}: decoded no audio samples; expected non-empty audio")
    samples = np.concatenate(parts, axis=1)
    bad = int(samples.size - np.count_nonzero(np.isfinite(samples)))
    if bad:
        raise SoundvjError(f"audio file {str(path)!r}: contains {bad} NaN/inf samples; expected finite samples")

    tensor = torch.from_numpy(np.ascontiguousarray(samples))
    rate = native_rate
    if sample_rate is not None and sample_rate != native_rate:
        tensor = resample(tensor, native_rate, sample_rate)
        rate = sample_rate
    return DecodedAudio(samples=tensor, sample_rate=rate, channels=tensor.shape[0], duration=tensor.shape[1] / rate)


def _decode_stream(container, stream, path: Path, start: float, seconds: float | None) -> tuple[int, list[np.ndarray]]:
    """Decoded [channels, n] pieces covering [start, start + seconds), at the stream's own rate."""
    stream_t0 = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    if start > _SEEK_PREROLL_SECONDS:
        # Seek a little early: mp3/aac/opus decoders need a few frames to settle after a jump
        # (bit reservoir, overlap), and samples before `start` are trimmed below by frame time.
        target = start - _SEEK_PREROLL_SECONDS + stream_t0
        try:
            container.seek(int(target / stream.time_base), stream=stream, backward=True)
        except av.FFmpegError:
            container.seek(0, stream=stream)
    rate = None
    channels = None
    parts: list[np.ndarray] = []
    position = None  # seconds from the stream start of the next sample; from frame times when known
    kept = 0
    first, limit = 0, None  # set from the first frame's rate
    try:
        for frame in container.decode(stream):
            if rate is None:
                rate, channels = frame.sample_rate, len(frame.layout.channels)
                first = round(start * rate)
                limit = None if seconds is None else round(seconds * rate)
            elif frame.sample_rate != rate or len(frame.layout.channels) != channels:
                raise SoundvjError(
                    f"audio file {str(path)!r}: sample rate or channel count changes mid-stream; expected one format"
                )
            data = _frame_to_array(frame)
            if frame.time is not None:
                position = frame.time - stream_t0
            elif position is None:
                position = 0.0
            frame_first = round(position * rate)
            position += data.shape[1] / rate
            # Frame times place the first kept sample; after that frames are taken back to back, so
            # timestamp jitter can neither drop nor repeat samples.
            lo = max(0, first - frame_first) if kept == 0 else 0
            if lo >= data.shape[1]:
                continue
            data = data[:, lo:]
            if limit is not None:
                data = data[:, : limit - kept]
            if data.shape[1]:
                parts.append(data)
                kept += data.shape[1]
            if limit is not None and kept >= limit:
                break
    except av.FFmpegError as err:
        raise SoundvjError(f"audio file {str(path)!r}: audio track could not be decoded ({_one_line(err)})") from None
    return (rate or stream.codec_context.sample_rate or 0), parts


def to_mono(samples: torch.Tensor) -> torch.Tensor:
    """[channels, n] -> [n] by averaging channels (5.1 included: a plain mean keeps every source audible)."""
    if samples.dim() == 1:
        return samples
    if samples.dim() != 2:
        raise SoundvjError(f"samples: expected [n] or [channels, n], got shape {tuple(samples.shape)}")
    return samples.mean(dim=0)


def resample(samples: torch.Tensor, from_sr: int, to_sr: int) -> torch.Tensor:
    """Band-limited (sinc) resampling along the last axis; a no-op when the rates match."""
    _check_rate("from_sr", from_sr)
    _check_rate("to_sr", to_sr)
    if from_sr == to_sr:
        return samples
    return AF.resample(samples, from_sr, to_sr)


def load_mono(
    path: str | Path, sample_rate: int = 44100, start: float = 0.0, seconds: float | None = None
) -> torch.Tensor:
    """Decode, downmix and resample: float32 [n] at `sample_rate`, ready for the mel front end."""
    _check_rate("sample_rate", sample_rate)
    decoded = decode_audio(path, None, start, seconds)
    # Downmix first: resampling one channel instead of six gives the same result (both are linear).
    return resample(to_mono(decoded.samples), decoded.sample_rate, sample_rate).contiguous()
