"""Playing an audio file through the output device, with the output stream as the picture's clock.

Each block the output callback plays is also written (as mono) into the `SampleRing`, so the render
thread hears exactly what the speakers get, at the playhead: pause, seek and loop move the picture
with the sound, and a slow render thread never makes the audio run ahead of the file position.

Without a usable output device (none at all, one that cannot be opened, or one that disappears
mid-set) a wall-clock thread takes over the same job silently: same API, same ring contents, and
`clock` / `error` say so. Nothing here raises into PortAudio, and only the constructor raises at
all (a file that cannot be decoded, or an output device name that does not exist).
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from core.audio.decode import decode_audio
from core.audio.resampling import resample, to_mono
from core.errors import SoundvjError, one_line
from visualizer.portaudio import (
    GIVE_UP_SECONDS,
    PORTAUDIO_LOCK,
    RESUME_STEADY_SECONDS,
    STALL_SECONDS,
    STARTUP_GRACE_SECONDS,
    AudioDevice,
    CallbackHeartbeat,
    close_stream_bounded,
    find_output_device,
    list_output_devices,
    load_sounddevice,
    register_stream_owner,
    stream_stopped,
)
from visualizer.audio_ring import SampleRing

_MONITOR_PERIOD = 0.01  # the wall clock's tick and the output watchdog's check


class FilePlayer:
    """Plays a decoded audio file (anything core's decode reads) through the output device with
    play / pause / seek / loop; the output stream's callback is the clock and feeds the ring.

    `state`: "ready" (never played) | "playing" | "paused" | "ended" (end of file without loop).
    While paused or ended the ring receives silence, so the picture keeps running. `clock` is
    "output" (the sound card paces playback) or "wall" (no usable output: silent, wall-clock paced).
    """

    def __init__(
        self,
        path: str | Path,
        ring: SampleRing,
        output_device: str | None = None,
        loop: bool = False,
        *,
        blocksize: int = 512,
        latency: str | float = "low",
    ):
        self.path = Path(path)
        self.ring = ring
        self.loop = bool(loop)
        self.blocksize = blocksize
        self.latency = latency
        decoded = decode_audio(self.path)  # SoundvjError naming the file if it cannot be read
        rate = ring.sample_rate
        # The ring gets exactly what core's load_mono gives (downmix, then resample), so the live
        # picture hears what an offline render of the same file hears.
        self._mono = resample(to_mono(decoded.samples), decoded.sample_rate, rate).contiguous().numpy()
        if decoded.channels == 2:
            stereo = resample(decoded.samples, decoded.sample_rate, rate)
            self._stereo: np.ndarray | None = np.ascontiguousarray(stereo.numpy().T)
        else:
            self._stereo = None  # mono (or a >2-channel mix): both speakers get the mono mix
        self._frames = self._mono.shape[0]
        self.duration = self._frames / rate
        self._silence = np.zeros(max(blocksize, 4096), dtype=np.float32)

        self._output: AudioDevice | None = None
        if output_device is not None:
            self._output = find_output_device(output_device)  # SoundvjError: name and choices
        self._output_name = output_device

        self.state = "ready"
        self.error: str | None = None
        self.clock: str | None = None  # "output" | "wall" once playback started
        self._pos = 0  # next file sample to play (the playhead)
        self._seek_to: int | None = None  # applied by the clock at its next block
        self._playing = False
        self._file_samples_written = 0

        self._stream: Any = None
        self._stream_token: object | None = None  # the callback of an older stream writes nothing
        self._heartbeat = CallbackHeartbeat()
        self._stalled_at = math.nan  # the output stream stalled and the wall clock stands in
        self._fill_lock = threading.Lock()  # the callback and the wall clock never fill at once
        self._wall_started = 0.0
        self._wall_produced = 0
        self._lock = PORTAUDIO_LOCK  # transitions; the callback never takes it
        self._closed = threading.Event()
        self._monitor: threading.Thread | None = None
        self._suspended_for_rescan = False
        self._reopen_after_rescan = False
        register_stream_owner(self)

    # ---- public API -------------------------------------------------------------------------

    @property
    def position(self) -> float:
        """The playhead in seconds (samples handed to the output so far, modulo seeks and loops)."""
        pending = self._seek_to
        return (self._pos if pending is None else pending) / self.ring.sample_rate

    @property
    def output_device_name(self) -> str | None:
        """The name of the output device in use, or None (the wall clock)."""
        return None if self._output is None else self._output.name

    @property
    def output_latency(self) -> float:
        """Seconds from a block entering the ring to its being heard (the output stream's latency;
        0 on the wall clock), for a picture that should line up with the speakers."""
        stream = self._stream
        try:
            return float(stream.latency) if stream is not None and self.clock == "output" else 0.0
        except Exception:  # noqa: BLE001 - a stream PortAudio dropped under us
            return 0.0

    def played_from_start(self) -> int:
        """Samples of the file written into the ring so far (loops and seeks included)."""
        return self._file_samples_written

    def play(self) -> None:
        """Start or resume; after the end, play again from the start."""
        with self._lock:
            if self._closed.is_set():
                raise SoundvjError(f"file player {str(self.path)!r}: already closed")
            if self.state == "ended":
                self._seek_to = 0
            self._playing = True
            self.state = "playing"
            if self.clock is None:
                self._start_clock()

    def pause(self) -> None:
        """Hold the playhead; the ring receives silence meanwhile."""
        with self._lock:
            if self.state == "playing":
                self._playing = False
                self.state = "paused"

    def seek(self, seconds: float) -> None:
        """Move the playhead to `seconds` (clamped to the file); takes effect at the next block."""
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds):
            raise SoundvjError(f"seek: expected a position in seconds, got {seconds!r}")
        target = min(max(0, round(seconds * self.ring.sample_rate)), self._frames)
        with self._lock:
            self._seek_to = target
            if self.state == "ended" and target < self._frames:
                self.state = "paused"

    def close(self) -> None:
        """Stop the clock and close the output stream."""
        with self._lock:
            self._closed.set()
            self._playing = False
            self._close_stream()
        monitor = self._monitor
        if monitor is not None and monitor is not threading.current_thread():
            monitor.join(2.0)

    def __enter__(self) -> FilePlayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the clock: one block of playback ---------------------------------------------------

    def _fill(self, out: np.ndarray | None, frames: int, now: float) -> None:
        """Advance the playhead by `frames`: copy the file into `out` (if any) and into the ring;
        silence where there is no file to play. Allocation-free (called from the audio callback)."""
        seek = self._seek_to
        if seek is not None:
            self._seek_to = None
            self._pos = seek
        done = 0
        while done < frames and self._playing:
            n = min(frames - done, self._frames - self._pos)
            if n > 0:
                lo, hi = self._pos, self._pos + n
                if out is not None:
                    if self._stereo is not None:
                        out[done : done + n] = self._stereo[lo:hi]
                    else:
                        out[done : done + n] = self._mono[lo:hi, None]
                self.ring.write(self._mono[lo:hi], arrival_time=now)
                self._file_samples_written += n
                self._pos = hi
                done += n
            if self._pos >= self._frames:
                if self.loop:
                    self._pos = 0
                else:
                    self._playing = False
                    self.state = "ended"
        while done < frames:  # paused or ended: silence out, silence into the ring
            n = min(frames - done, self._silence.size)
            if out is not None:
                out[done : done + n] = 0.0
            self.ring.write(self._silence[:n], arrival_time=now)
            done += n

    def _start_clock(self) -> None:
        if not self._open_output():
            self._start_wall_clock()
        if self._monitor is None:
            self._monitor = threading.Thread(target=self._monitor_loop, name="soundvj-file-clock", daemon=True)
            self._monitor.start()

    def _open_output(self) -> bool:
        """Open and start the output stream; False (with `error` set) when there is none usable."""
        try:
            sd = load_sounddevice()
            if self._output_name is None:
                outputs = list_output_devices()
                device = outputs[0] if outputs else None  # the system default when there is one
            else:
                device = find_output_device(self._output_name)  # again: indices change after a rescan
        except SoundvjError as err:
            self.error = f"{err}; playing silently on the wall clock"
            return False
        if device is None:
            self.error = "no audio output device found; playing silently on the wall clock"
            return False
        token = object()

        def callback(outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            try:
                now = time.monotonic()
                if self._stream_token is not token:
                    outdata.fill(0.0)
                    return
                self._heartbeat.beat(now)
                if self.clock != "output":  # stalled a moment ago; the wall clock plays until it is steady
                    outdata.fill(0.0)
                    return
                with self._fill_lock:
                    self._fill(outdata, frames, now)
            except Exception as err:  # noqa: BLE001 - never raise into PortAudio
                outdata.fill(0.0)
                self.error = f"output callback failed ({one_line(err)})"

        with PORTAUDIO_LOCK:
            try:
                stream = sd.OutputStream(
                    device=device.index,
                    channels=min(2, device.channels),
                    samplerate=self.ring.sample_rate,
                    dtype="float32",
                    blocksize=self.blocksize,
                    latency=self.latency,
                    callback=callback,
                )
            except sd.PortAudioError as err:
                self.error = (
                    f"output device {device.name!r}: could not be opened ({one_line(err)}); "
                    "playing silently on the wall clock"
                )
                return False
            if min(2, device.channels) == 1 and self._stereo is not None:
                self._stereo = None  # a mono output device gets the mono mix
            self._stream, self._stream_token = stream, token
            self._heartbeat = CallbackHeartbeat()
            self._output = device
            stream.start()
        self.clock = "output"
        self.error = None
        return True

    def _close_stream(self) -> None:
        stream, self._stream, self._stream_token = self._stream, None, None
        if stream is not None:
            close_stream_bounded(stream)

    def _start_wall_clock(self) -> None:
        self._wall_started = time.monotonic()
        self._wall_produced = 0
        self.clock = "wall"

    def _monitor_loop(self) -> None:
        """Tick the wall clock when it is the clock; watch that the output keeps playing."""
        while not self._closed.wait(_MONITOR_PERIOD):
            with self._lock:
                if self._closed.is_set() or self._suspended_for_rescan:
                    continue
                self._check_output(time.monotonic())
                if self.clock == "wall":
                    self._tick_wall_clock()

    def _check_output(self, now: float) -> None:
        """Output dead: close it, the wall clock plays on. Stalled: the wall clock stands in while
        the stream stays open; steady callbacks again within GIVE_UP_SECONDS: back to the output."""
        stream, beat, name = self._stream, self._heartbeat, self.output_device_name
        if stream is None:
            return
        if stream_stopped(stream) or (not beat.started and beat.silent_for(now) > STARTUP_GRACE_SECONDS):
            self._close_stream()
            if self.clock != "wall":
                self._start_wall_clock()
            self.error = f"output device {name!r}: stopped playing (device gone?); playing silently on the wall clock"
        elif self.clock == "output":
            if beat.started and beat.silent_for(now) > STALL_SECONDS:
                self._stalled_at = now
                self._start_wall_clock()
                self.error = f"output device {name!r}: stalled; playing silently on the wall clock"
        elif beat.steady_for(now) >= RESUME_STEADY_SECONDS:
            self.clock, self.error = "output", None  # the callback fills from its next block on
        elif now - self._stalled_at > GIVE_UP_SECONDS:
            self._close_stream()
            self.error = f"output device {name!r}: stopped playing (device gone?); playing silently on the wall clock"

    def _tick_wall_clock(self) -> None:
        now = time.monotonic()
        due = math.floor((now - self._wall_started) * self.ring.sample_rate) - self._wall_produced
        while due >= self.blocksize:
            with self._fill_lock:
                self._fill(None, self.blocksize, now)
            self._wall_produced += self.blocksize
            due -= self.blocksize

    # ---- PortAudio re-initialisation (rescan_devices) ---------------------------------------

    def suspend_for_rescan(self) -> None:
        """Close the output stream before PortAudio terminates; remember whether one was open."""
        with self._lock:
            self._suspended_for_rescan = True
            self._reopen_after_rescan = self._stream is not None  # playing, or stalled on the wall clock
            self._close_stream()

    def resume_after_rescan(self) -> None:
        """Reopen the output (by device name) if one was open; if it cannot open, the wall clock takes over."""
        with self._lock:
            self._suspended_for_rescan = False
            if self._reopen_after_rescan and not self._closed.is_set():
                if not self._open_output():
                    self._start_wall_clock()
