"""The hand-off between an audio callback and the render thread: a bounded ring of mono samples.

The producer is a PortAudio callback (microphone input, or the output stream of the file player)
and must never stall: `write` downmixes straight into preallocated memory (no allocation per call)
and holds the lock only for that copy. The consumer (the render thread) takes everything new with
`read_new`; if it falls more than `capacity` samples behind, the oldest unread samples are dropped
and counted in `overrun_samples`, so the picture answers the sound of now instead of catching up.

Each write is stamped with `time.monotonic()` of its arrival, so the render thread can measure
audio-to-frame latency from the moment a sample reached the callback.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np

from core.errors import SoundvjError


class SampleRing:
    """Single-producer (audio callback) / single-consumer (render thread) ring of mono float32 samples.

    A second producer is safe too (writes are serialised by the lock), which `MicInput.switch`
    relies on for the moment both the old and the new stream are open.
    """

    def __init__(self, capacity: int, sample_rate: int):
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise SoundvjError(f"ring capacity: expected a positive number of samples, got {capacity!r}")
        if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or not 1000 <= sample_rate <= 768_000:
            raise SoundvjError(f"ring sample_rate: expected an integer rate in [1000, 768000] Hz, got {sample_rate!r}")
        self.capacity = capacity
        self.sample_rate = sample_rate
        self._buffer = np.zeros(capacity, dtype=np.float32)
        self._lock = threading.Lock()
        self.total_written = 0  # samples ever written; the ring holds the last `capacity` of them
        self._read_upto = 0  # total_written at the end of the last read_new
        self.overrun_samples = 0  # written but never read: dropped because the reader fell behind
        self._newest_arrival = math.nan
        self._last_block_size = 0
        self._last_block_peak = 0.0

    def write(self, block: np.ndarray, arrival_time: float | None = None) -> None:
        """Append [frames] or [frames, channels] float samples as mono (channel mean); allocation-free.

        `arrival_time` defaults to time.monotonic() now. Meant for the audio callback: it does not
        raise on odd shapes it can handle, and a block longer than the ring keeps its newest part.
        """
        now = time.monotonic() if arrival_time is None else arrival_time
        frames = block.shape[0]
        if frames == 0:
            return
        channels = block.shape[1] if block.ndim == 2 else 1
        # Peak over every channel before the downmix, so a clipping channel lights the clip light.
        peak = max(float(block.max()), -float(block.min()))
        with self._lock:
            skip = frames - self.capacity if frames > self.capacity else 0
            start = self.total_written + skip
            pos = start % self.capacity
            first = min(frames - skip, self.capacity - pos)
            self._downmix(block, skip, skip + first, self._buffer[pos : pos + first], channels)
            rest = frames - skip - first
            if rest:
                self._downmix(block, skip + first, frames, self._buffer[:rest], channels)
            self.total_written += frames
            lost = self.total_written - self.capacity - self._read_upto
            if lost > 0:
                self.overrun_samples += lost
                self._read_upto += lost
            self._newest_arrival = now
            self._last_block_size = frames - skip
            self._last_block_peak = peak

    @staticmethod
    def _downmix(block: np.ndarray, lo: int, hi: int, out: np.ndarray, channels: int) -> None:
        if block.ndim == 1:
            np.copyto(out, block[lo:hi], casting="same_kind")
        elif channels == 1:
            np.copyto(out, block[lo:hi, 0], casting="same_kind")
        else:
            np.add.reduce(block[lo:hi], axis=1, out=out)
            np.multiply(out, np.float32(1.0 / channels), out=out)

    def read_new(self) -> tuple[np.ndarray, float]:
        """Every sample written since the last call (oldest first, at most `capacity`), and when
        the newest of them arrived (monotonic seconds; nan if nothing was ever written)."""
        with self._lock:
            end = self.total_written
            count = end - self._read_upto
            out = np.empty(count, dtype=np.float32)
            if count:
                pos = self._read_upto % self.capacity
                first = min(count, self.capacity - pos)
                out[:first] = self._buffer[pos : pos + first]
                out[first:] = self._buffer[: count - first]
            self._read_upto = end
            return out, self._newest_arrival

    @property
    def read_position(self) -> int:
        """Index (in samples ever written) one past the last sample `read_new` returned."""
        return self._read_upto

    @property
    def newest_arrival(self) -> float:
        """Monotonic time the newest sample arrived (nan before the first write)."""
        return self._newest_arrival

    def peak_and_rms(self) -> tuple[float, float]:
        """Level of the last block written, for a meter: peak over all input channels (before the
        downmix, so any clipping channel shows) and RMS of the mono mix. (0, 0) before any write."""
        with self._lock:
            size = self._last_block_size  # the newest `size` samples in the ring
            if size == 0:
                return 0.0, 0.0
            pos = (self.total_written - size) % self.capacity
            first = min(size, self.capacity - pos)
            mono = np.concatenate([self._buffer[pos : pos + first], self._buffer[: size - first]])
            peak = self._last_block_peak
        rms = float(np.sqrt(np.mean(np.square(mono, dtype=np.float64)))) if mono.size else 0.0
        return peak, rms
