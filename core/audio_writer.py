"""Writing a mono sound as it comes, to FLAC (lossless) or Opus, in bounded memory (PyAV).

A set log keeps the sound a live show heard, which may run for hours: `AudioWriter` encodes each
chunk as it is written, so nothing but a codec frame's worth is ever held. It writes to the path it
is given; the caller (the set log) writes beside its final name and moves the finished file into
place.

- "flac": 24-bit integer samples at the sound's own rate, in a FLAC file. Float samples are rounded
  to 24 bits (an error below 6e-8 of full scale); samples that came from 16- or 24-bit audio (a sound
  card, a WAV or FLAC file at the model's rate) come back exactly.
- "opus": 48 kHz (Opus codes no other rate above 24 kHz; `core.audio.resampling` converts) at
  `OPUS_BITRATE`, in an Ogg file: about a tenth of FLAC's size, and not bit-exact.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from core.audio.resampling import StreamingResampler
from core.errors import SoundvjError, one_line

CODECS = ("flac", "opus")
SUFFIXES = {"flac": ".flac", "opus": ".opus"}
OPUS_RATE = 48000
OPUS_BITRATE = 128_000  # mono; transparent for most programme material
FLAC_BLOCK = 4096  # samples per encoded frame (FLAC's own default at 44.1/48 kHz)
_FULL_SCALE_24 = float(1 << 23)


def check_codec(codec: str, where: str = "sound codec") -> str:
    """`codec` if it is one `AudioWriter` writes, else a one-line `SoundvjError` naming `where`."""
    if codec not in CODECS:
        raise SoundvjError(f"{where} {codec!r}: expected one of {', '.join(CODECS)}")
    return codec


class AudioWriter:
    """Encode mono float samples in [-1, 1] to `path` as `codec` (see the module docstring).

    `write` takes chunks of any size; `close` flushes the encoder and finishes the file; `abort`
    drops it (the file is removed). Errors (a full disk) are one-line `SoundvjError`s naming the file.
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int, codec: str = "flac") -> None:
        check_codec(codec)
        self.path = Path(path)
        self.codec = codec
        self.sample_rate = int(sample_rate)
        self.samples_written = 0  # at `sample_rate`, before any resampling
        self._closed = False
        rate = OPUS_RATE if codec == "opus" else self.sample_rate
        self._resampler = StreamingResampler(self.sample_rate, rate) if rate != self.sample_rate else None
        self._pending = np.zeros(0, dtype=np.float32)
        self._pts = 0
        try:
            self._container = av.open(str(self.path), "w", format="ogg" if codec == "opus" else "flac")
            if codec == "opus":
                self._stream = self._container.add_stream("libopus", rate=rate, layout="mono")
                self._stream.codec_context.format = "flt"
                self._stream.codec_context.bit_rate = OPUS_BITRATE
            else:
                self._stream = self._container.add_stream("flac", rate=rate, layout="mono")
                self._stream.codec_context.format = "s32"
            self._stream.codec_context.time_base = Fraction(1, rate)
            self._stream.codec_context.open()
        except (av.FFmpegError, OSError) as e:
            raise SoundvjError(f"{self.path}: cannot write the sound ({one_line(e)})") from None
        self._rate = rate
        self._frame_size = self._stream.codec_context.frame_size or FLAC_BLOCK

    @property
    def seconds(self) -> float:
        """Seconds of sound written so far."""
        return self.samples_written / self.sample_rate

    def write(self, samples: np.ndarray) -> None:
        """Append mono float samples [n] (NaN and inf become 0; the rest is clipped to [-1, 1])."""
        if self._closed:
            raise SoundvjError(f"{self.path}: the sound is already finished")
        data = np.nan_to_num(np.asarray(samples, dtype=np.float32).reshape(-1), nan=0.0, posinf=0.0, neginf=0.0)
        self.samples_written += data.size
        if self._resampler is not None:
            data = self._resampler.push(torch.from_numpy(np.clip(data, -1.0, 1.0))).numpy()
        self._pending = np.concatenate([self._pending, data])
        whole = self._pending.size - self._pending.size % self._frame_size
        if whole:
            self._encode(self._pending[:whole])
            self._pending = self._pending[whole:]

    def close(self) -> None:
        """Encode what is left, flush the encoder and finish the file."""
        if self._closed:
            return
        try:
            if self._resampler is not None:
                self._pending = np.concatenate([self._pending, self._resampler.flush().numpy()])
            if self._pending.size:
                self._encode(self._pending)
                self._pending = self._pending[:0]
            self._mux(self._stream.encode(None))
            self._container.close()
        except (av.FFmpegError, OSError) as e:
            self.abort()
            raise SoundvjError(f"{self.path}: could not finish the sound ({one_line(e)})") from None
        self._closed = True

    def abort(self) -> None:
        """Stop without finishing; the file is removed."""
        self._closed = True
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - being thrown away; a failing close must not hide the cause
            pass
        self.path.unlink(missing_ok=True)

    def _encode(self, data: np.ndarray) -> None:
        for start in range(0, data.size, self._frame_size):
            block = np.clip(data[start : start + self._frame_size], -1.0, 1.0)
            if self.codec == "opus":
                frame = av.AudioFrame.from_ndarray(block[None, :].astype(np.float32), format="flt", layout="mono")
            else:
                ints = np.clip(np.round(block.astype(np.float64) * _FULL_SCALE_24), -_FULL_SCALE_24, _FULL_SCALE_24 - 1)
                frame = av.AudioFrame.from_ndarray((ints.astype(np.int32) << 8)[None, :], format="s32", layout="mono")
            frame.sample_rate = self._rate
            frame.pts = self._pts
            frame.time_base = Fraction(1, self._rate)
            self._pts += block.size
            try:
                self._mux(self._stream.encode(frame))
            except (av.FFmpegError, OSError) as e:
                raise SoundvjError(f"{self.path}: could not write the sound ({one_line(e)})") from None

    def _mux(self, packets: list) -> None:
        for packet in packets:
            self._container.mux(packet)
