"""Decoding audio files with PyAV (torchaudio 2.9+ has no I/O): the one place core reads audio files.

Downmixing and resampling are in `core.audio.resampling` (no PyAV), used here by `load_mono`.

Reads anything FFmpeg reads: wav (int16/int32/float), flac, ogg, mp3, m4a, and the first audio
track of mp4/mkv/webm. Every failure a user can cause is a one-line `SoundvjError` naming the file.

NaN/inf policy: a *file* with non-finite samples is rejected. A broken file is something to fix
before a performance, and silently zeroing it would hide the damage; the live path
(`StreamingWindower`) instead replaces them with silence so a glitching input never stops the show.
"""

from __future__ import annotations

import errno
import math
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import torch

from core.audio.resampling import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, check_sample_rate, resample, to_mono
from core.errors import SoundvjError, one_line

_SEEK_PREROLL_SECONDS = 0.5
STDIN = "-"  # the audio path that means standard input

# Longest start offset or span, in seconds (11.6 days): far past any set, and seconds x rate stays exact.
MAX_SPAN_SECONDS = 1e6

# Full-scale divisor per integer sample format, so every format decodes to [-1, 1].
_INT_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


@dataclass(frozen=True)
class DecodedAudio:
    """Float32 samples in [-1, 1] (floats may exceed it), shape [channels, n]."""

    samples: torch.Tensor
    sample_rate: int
    channels: int
    duration: float  # seconds, n / sample_rate


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
    """Decode the first audio track of `path`, optionally from `start` for `seconds`, optionally resampled.

    The whole span is held in memory; `AudioFileReader` streams it instead.
    """
    if sample_rate is not None:
        check_sample_rate("sample_rate", sample_rate)
    with AudioFileReader(path, start, seconds) as reader:
        parts = list(reader.chunks(check_finite=False))
        native_rate = reader.sample_rate
    samples = np.concatenate(parts, axis=1)
    bad = int(samples.size - np.count_nonzero(np.isfinite(samples)))
    if bad:
        raise SoundvjError(f"audio file {str(reader.path)!r}: contains {bad} NaN/inf samples; expected finite samples")

    tensor = torch.from_numpy(np.ascontiguousarray(samples))
    rate = native_rate
    if sample_rate is not None and sample_rate != native_rate:
        tensor = resample(tensor, native_rate, sample_rate)
        rate = sample_rate
    return DecodedAudio(samples=tensor, sample_rate=rate, channels=tensor.shape[0], duration=tensor.shape[1] / rate)


def _check_span(start: object, seconds: object) -> None:
    if (not isinstance(start, (int, float)) or isinstance(start, bool) or not math.isfinite(start)
            or not 0 <= start <= MAX_SPAN_SECONDS):
        raise SoundvjError(f"start: expected seconds in [0, {MAX_SPAN_SECONDS:g}], got {start!r}")
    if seconds is not None and (
        not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds)
        or not 0 < seconds <= MAX_SPAN_SECONDS
    ):
        raise SoundvjError(
            f"seconds: expected a number of seconds in (0, {MAX_SPAN_SECONDS:g}] or None, got {seconds!r}"
        )


class AudioFileReader:
    """The first audio track of a file, decoded piece by piece: any length in bounded memory.

    Opening checks what can be checked before any work (the file, its audio stream, the sample
    rate, that the span [start, start + seconds) holds samples) and raises a one-line
    `SoundvjError` naming the file. `chunks()` then yields float32 [channels, n] pieces of about
    `chunk_seconds` at the file's own rate. Once they run out, `ended_early` is a one-line note when
    the file holds less audio than its header promises (a cut-off download), else None.

        with AudioFileReader("set.flac") as reader:
            for piece in reader.chunks(): ...
    """

    def __init__(self, path: str | Path, start: float = 0.0, seconds: float | None = None,
                 chunk_seconds: float = 0.5, fileobj: BinaryIO | None = None):
        """`fileobj`: read this open, seekable binary file instead of opening `path` (a member of an
        archive); `path` then only names it in messages. The reader closes it with itself."""
        self.path = Path(path)
        _check_span(start, seconds)
        # "-" is standard input and a FIFO is read as it comes: both once, front to back (no seeking).
        self.is_stream = fileobj is None and str(path) == STDIN
        if not self.is_stream and fileobj is None:
            if not self.path.exists():
                raise SoundvjError(f"audio file {str(self.path)!r}: not found")
            if self.path.is_dir():
                raise SoundvjError(f"audio file {str(self.path)!r}: is a directory, expected an audio or video file")
            self.is_stream = not self.path.is_file()
        self.start, self.seconds, self.chunk_seconds = start, seconds, chunk_seconds
        self.ended_early: str | None = None
        self.samples_read = 0
        self._fileobj = fileobj
        try:
            # A FIFO with no writer yet blocks here, as with any Unix tool; Ctrl-C ends the wait.
            if fileobj is not None:
                self._container = av.open(fileobj, metadata_errors="replace")
            else:
                self._container = av.open(sys.stdin.buffer if str(path) == STDIN else str(self.path),
                                          metadata_errors="replace")
        except av.FFmpegError as err:
            if fileobj is not None:
                fileobj.close()
            if getattr(err, "errno", None) == errno.EINTR:
                raise KeyboardInterrupt from None
            raise SoundvjError(
                f"audio file {str(self.path)!r}: could not be read as audio/video ({one_line(err)}); "
                "expected wav, flac, ogg, mp3, m4a, mp4, mkv or webm"
            ) from None
        try:
            if not self._container.streams.audio:
                kinds = sorted({s.type for s in self._container.streams}) or ["nothing"]
                raise SoundvjError(
                    f"audio file {str(self.path)!r}: has no audio stream (contains {', '.join(kinds)})"
                )
            self._stream = self._container.streams.audio[0]
            self.declared_seconds = None if self.is_stream else _declared_seconds(
                None if fileobj is not None else self.path, self._container, self._stream)
            self.sample_rate = 0
            self.channels = 0
            self._pieces = self._decode_pieces()
            self._first = next(self._pieces, None)  # learns the rate and channel count
            if self._first is None:
                if start > 0:
                    raise SoundvjError(
                        f"audio file {str(self.path)!r}: start={start:g} s is at or past the end of the audio; "
                        "expected an earlier start"
                    )
                raise SoundvjError(f"audio file {str(self.path)!r}: decoded no audio samples; expected non-empty audio")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> AudioFileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if hasattr(self, "_container"):
            self._container.close()
        if self._fileobj is not None:
            self._fileobj.close()

    def chunks(self, check_finite: bool = True) -> Iterator[np.ndarray]:
        """The span's samples, float32 [channels, n], in pieces of about `chunk_seconds` (once)."""
        target = max(1, round(self.chunk_seconds * self.sample_rate))
        held: list[np.ndarray] = []
        count = 0
        pieces = self._pieces_from_first()
        for piece in pieces:
            held.append(piece)
            count += piece.shape[1]
            if count >= target:
                yield self._checked(np.concatenate(held, axis=1), check_finite)
                held, count = [], 0
        if held:
            yield self._checked(np.concatenate(held, axis=1), check_finite)

    def _pieces_from_first(self) -> Iterator[np.ndarray]:
        first, self._first = self._first, None
        if first is not None:
            yield first
        yield from self._pieces

    def _checked(self, chunk: np.ndarray, check_finite: bool) -> np.ndarray:
        if check_finite and not np.isfinite(chunk).all():
            at = self.start + self.samples_read / self.sample_rate
            bad = int(chunk.size - np.count_nonzero(np.isfinite(chunk)))
            raise SoundvjError(
                f"audio file {str(self.path)!r}: contains NaN/inf samples ({bad} in the 0.5 s from {at:.2f} s); "
                "expected finite samples"
            )
        self.samples_read += chunk.shape[1]
        return chunk

    def _decode_pieces(self) -> Iterator[np.ndarray]:
        """Decoded [channels, n] pieces covering [start, start + seconds), at the stream's own rate."""
        container, stream, path, start, seconds = self._container, self._stream, self.path, self.start, self.seconds
        stream_t0 = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        if start > _SEEK_PREROLL_SECONDS and not self.is_stream:
            # Seek a little early: mp3/aac/opus decoders need a few frames to settle after a jump
            # (bit reservoir, overlap), and samples before `start` are trimmed below by frame time.
            target = start - _SEEK_PREROLL_SECONDS + stream_t0
            try:
                container.seek(int(target / stream.time_base), stream=stream, backward=True)
            except av.FFmpegError:
                container.seek(0, stream=stream)
        rate = None
        channels = None
        position = None  # seconds from the stream start of the next sample; from frame times when known
        kept = 0
        first, limit = 0, None  # set from the first frame's rate
        try:
            for frame in container.decode(stream):
                if rate is None:
                    rate, channels = frame.sample_rate, len(frame.layout.channels)
                    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
                        raise SoundvjError(
                            f"audio file {str(path)!r}: sample rate {rate} Hz is outside "
                            f"[{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz; expected ordinary audio (8-96 kHz)"
                        )
                    self.sample_rate, self.channels = rate, channels
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
                    kept += data.shape[1]
                    yield data
                if limit is not None and kept >= limit:
                    return
        except av.FFmpegError as err:
            raise SoundvjError(
                f"audio file {str(path)!r}: audio track could not be decoded ({one_line(err)})"
            ) from None
        if rate is not None:
            self._note_if_short(start + kept / rate)

    def _note_if_short(self, end_seconds: float) -> None:
        declared = self.declared_seconds
        if declared is not None and declared - end_seconds > max(_SHORT_TOLERANCE_SECONDS, 0.01 * declared):
            self.ended_early = (
                f"audio file {str(self.path)!r}: the file ends early: its header promises {declared:.2f} s, "
                f"it holds {end_seconds:.2f} s (a cut-off copy?); rendered what is there"
            )


# A file counts as cut off when it holds this much (and 1 %) less than its header says; decoders'
# own padding and priming are a few hundredths of a second.
_SHORT_TOLERANCE_SECONDS = 0.25


def _declared_seconds(path: Path | None, container, stream) -> float | None:
    """How long the file says it is: a WAV's data chunk size (FFmpeg trusts the file size instead,
    so a cut-off WAV looks whole to it), else the stream's or container's duration. `path` None:
    an open file object, whose WAV header FFmpeg has read already."""
    wav = None if path is None else _wav_declared_seconds(path)
    if wav is not None:
        return wav
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _wav_declared_seconds(path: Path) -> float | None:
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, rate_bytes = 12, None
    while pos + 8 <= len(head):
        chunk_id, size = head[pos : pos + 4], struct.unpack("<I", head[pos + 4 : pos + 8])[0]
        body = pos + 8
        if chunk_id == b"fmt " and body + 12 <= len(head):
            rate_bytes = struct.unpack("<I", head[body + 8 : body + 12])[0]  # average bytes per second
        elif chunk_id == b"data":
            if not rate_bytes or size in (0, 0xFFFFFFFF):  # streamed WAVs leave the size open
                return None
            return size / rate_bytes
        pos = body + size + (size & 1)
    return None


def load_mono(
    path: str | Path, sample_rate: int = 44100, start: float = 0.0, seconds: float | None = None
) -> torch.Tensor:
    """Decode, downmix and resample: float32 [n] at `sample_rate`, ready for the mel front end."""
    check_sample_rate("sample_rate", sample_rate)
    decoded = decode_audio(path, None, start, seconds)
    # Downmix first: resampling one channel instead of six gives the same result (both are linear).
    return resample(to_mono(decoded.samples), decoded.sample_rate, sample_rate).contiguous()
