"""Downmixing and band-limited resampling: whole signals (`resample`) and signals that arrive in
pieces (`StreamingResampler`, for offline renders that stream a file). No PyAV: decoding is
`core.audio.decode`.

`StreamingResampler` reproduces `resample` exactly, piece by piece, at the cost of a kernel's
length of delay; it suits files. The live app's sound card path needs low latency instead and has
its own resampler in the visualizer.
"""

from __future__ import annotations

import math

import torch
import torchaudio.functional as AF

from core.errors import SoundvjError

# Plenty of headroom either side of 8 kHz .. 96 kHz; outside this a rate is a typo.
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768_000


def check_sample_rate(field: str, value: object) -> int:
    """`value` if it is an integer sample rate in [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE], else a one-line
    `SoundvjError` naming `field`."""
    if not isinstance(value, int) or isinstance(value, bool) or not MIN_SAMPLE_RATE <= value <= MAX_SAMPLE_RATE:
        raise SoundvjError(
            f"{field}: expected an integer sample rate in [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz, got {value!r}"
        )
    return value


class StreamingResampler:
    """`resample` for a signal that arrives in pieces: the same band-limited kernel as
    torchaudio.functional.resample, applied to each output block's own input span, so the pieces
    put together equal resampling the whole signal (up to float rounding, ~1e-7), in memory bounded
    by the kernel length. Call `push` per piece and `flush` once at the end."""

    def __init__(self, from_sr: int, to_sr: int) -> None:
        # torchaudio's own kernel, so the pieces match `resample` exactly. It is private to torchaudio:
        # imported here, so a torchaudio that drops it breaks this class only, not the audio package.
        from torchaudio.functional.functional import _get_sinc_resample_kernel

        check_sample_rate("from_sr", from_sr)
        check_sample_rate("to_sr", to_sr)
        gcd = math.gcd(from_sr, to_sr)
        self.orig, self.new = from_sr // gcd, to_sr // gcd
        self.identity = from_sr == to_sr
        if not self.identity:
            self.kernel, self.width = _get_sinc_resample_kernel(from_sr, to_sr, gcd, dtype=torch.float32)
        self._buffer: torch.Tensor | None = None  # input samples from index _buffer_start on
        self._buffer_start = 0
        self._next_block = 0
        self._pushed = 0
        self._emitted = 0
        self._channels: int | None = None  # None: pieces are [n]

    def push(self, samples: torch.Tensor) -> torch.Tensor:
        """Resample the next piece ([n] or [channels, n]); returns what is ready (may be empty)."""
        samples = torch.as_tensor(samples, dtype=torch.float32)
        self._channels = None if samples.dim() == 1 else samples.shape[0]
        if self.identity:
            return samples
        squeeze = samples.dim() == 1
        x = samples[None] if squeeze else samples
        if self._buffer is None:
            self._buffer = x.new_zeros((x.shape[0], self.width))  # silence before the first sample
            self._buffer_start = -self.width
        self._buffer = torch.cat([self._buffer, x], dim=1)
        self._pushed += x.shape[1]
        out = self._ready_blocks(self._pushed)
        return out[0] if squeeze else out

    def flush(self) -> torch.Tensor:
        """The rest of the output: length ceil(n * to / from) in all, as `resample` gives."""
        if self.identity or self._buffer is None:
            return torch.zeros(0) if self._channels is None else torch.zeros(self._channels, 0)
        squeeze = self._channels is None
        end = self._pushed + self.width + self.orig
        pad = self._buffer.new_zeros((self._buffer.shape[0], end - (self._buffer_start + self._buffer.shape[1])))
        self._buffer = torch.cat([self._buffer, pad], dim=1)
        out = self._ready_blocks(end)
        target = -(-self.new * self._pushed // self.orig)  # ceil
        excess = max(0, self._emitted - target)
        out = out[:, : out.shape[1] - excess]
        self._emitted -= excess
        return out[0] if squeeze else out

    def _ready_blocks(self, available_end: int) -> torch.Tensor:
        # Output block i (samples i*new .. i*new+new-1) reads input [i*orig - width, i*orig + width + orig).
        kernel_len = self.kernel.shape[-1]
        last = (available_end - self.width - self.orig) // self.orig
        channels = self._buffer.shape[0]
        if last < self._next_block:
            return self._buffer.new_zeros((channels, 0))
        lo = self._next_block * self.orig - self.width - self._buffer_start
        hi = last * self.orig - self.width + kernel_len - self._buffer_start
        span = self._buffer[:, lo:hi]
        blocks = torch.nn.functional.conv1d(span[:, None], self.kernel, stride=self.orig)  # [C, new, blocks]
        out = blocks.transpose(1, 2).reshape(channels, -1)
        self._next_block = last + 1
        keep_from = self._next_block * self.orig - self.width - self._buffer_start
        self._buffer = self._buffer[:, keep_from:].clone()
        self._buffer_start += keep_from
        self._emitted += out.shape[1]
        return out


def to_mono(samples: torch.Tensor) -> torch.Tensor:
    """[channels, n] -> [n] by averaging channels (5.1 included: a plain mean keeps every source audible)."""
    if samples.dim() == 1:
        return samples
    if samples.dim() != 2:
        raise SoundvjError(f"samples: expected [n] or [channels, n], got shape {tuple(samples.shape)}")
    return samples.mean(dim=0)


def resample(samples: torch.Tensor, from_sr: int, to_sr: int) -> torch.Tensor:
    """Band-limited (sinc) resampling along the last axis; a no-op when the rates match."""
    check_sample_rate("from_sr", from_sr)
    check_sample_rate("to_sr", to_sr)
    if from_sr == to_sr:
        return samples
    return AF.resample(samples, from_sr, to_sr)
