"""Rate conversion for a live input that never ends, with the least delay the filter allows.

core's `core.audio.resampling.StreamingResampler` reproduces torchaudio's `resample` for a file read in
pieces: it emits output in whole blocks (to_sr / gcd samples each) and needs a `flush` at the end of
the file. A microphone whose device cannot run at the model's rate has no end, and every millisecond
of delay shows in the picture, so this one emits each output sample as soon as the filter's look-ahead
past it has arrived (NumPy, run on the input's pump thread, never in the audio callback).
"""

from __future__ import annotations

import math

import numpy as np


class LowLatencyResampler:
    """Band-limited (Kaiser-windowed sinc) rate conversion of a stream fed in chunks of any size.

    Output sample n sits at input position n * from_sr / to_sr; it is produced once the input
    reaches `half_taps` samples past that point, so the chunking never changes the result.
    """

    def __init__(self, from_sr: int, to_sr: int, half_taps: int = 16, beta: float = 8.6):
        self.from_sr, self.to_sr = int(from_sr), int(to_sr)
        ratio = min(1.0, self.to_sr / self.from_sr)
        self._cutoff = 0.92 * ratio  # in cycles per input sample x 2 (1.0 = the input's Nyquist)
        self._half = int(math.ceil(half_taps / ratio))
        self._beta = beta
        self._offsets = np.arange(-self._half + 1, self._half + 1)  # input taps around floor(x)
        self._buffer = np.zeros(self._half, dtype=np.float64)  # silence before the first sample
        self._base = -self._half  # absolute input index of _buffer[0]
        self._next_out = 0

    @property
    def delay_seconds(self) -> float:
        """How far the output lags the input (the filter's look-ahead)."""
        return self._half / self.from_sr

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Feed mono input samples; return every output sample they complete (float32)."""
        if chunk.size:
            self._buffer = np.concatenate([self._buffer, np.asarray(chunk, dtype=np.float64).reshape(-1)])
        total_in = self._base + self._buffer.size
        limit = total_in - 1 - self._half  # floor(x_n) may be at most this
        if limit < 0:
            return np.zeros(0, dtype=np.float32)
        end = -(-(limit + 1) * self.to_sr // self.from_sr)  # first n with floor(n * from / to) > limit
        if end <= self._next_out:
            return np.zeros(0, dtype=np.float32)
        n = np.arange(self._next_out, end, dtype=np.int64)
        centre = (n * self.from_sr) // self.to_sr
        frac = (n * self.from_sr - centre * self.to_sr) / self.to_sr
        t = frac[:, None] - self._offsets[None, :]  # distance from x_n to each tap, in input samples
        window = np.i0(self._beta * np.sqrt(np.clip(1.0 - (t / (self._half + 1)) ** 2, 0.0, 1.0))) / np.i0(self._beta)
        weights = self._cutoff * np.sinc(self._cutoff * t) * window
        taps = self._buffer[(centre - self._base)[:, None] + self._offsets[None, :]]
        out = np.einsum("ij,ij->i", taps, weights).astype(np.float32)
        self._next_out = end
        keep_from = (end * self.from_sr) // self.to_sr - self._half + 1  # first tap the next output needs
        if keep_from > self._base:
            self._buffer = self._buffer[keep_from - self._base :]
            self._base = keep_from
        return out
