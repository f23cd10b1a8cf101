"""Microphone / line-in through PortAudio (sounddevice), feeding a `SampleRing`; no Qt.

The PortAudio plumbing (devices by name, the lock, bounded closes, rescans, heartbeats) is
`visualizer.portaudio`; this module is the input stream on top of it and its watchdog.

What can go wrong on stage and what happens:

* No input device at all: `MicInput.start()` leaves state "no-device" with a one-line `error`;
  nothing is written and the picture runs on silence. Nothing raises.
* A named device that does not exist: `find_input_device` raises `SoundvjError` naming the device
  and the choices (the CLI prints it and exits 2; the UI shows it).
* The device disappears mid-set (unplugged, audio server gone): a watchdog notices that the
  stream stopped (closes it at once) or that its callbacks stopped for > `STALL_SECONDS`, and sets
  state "lost" with a message. Nothing is written while lost. A stall can be a hiccup (a starved
  CPU): if the callbacks come back steadily within `GIVE_UP_SECONDS` the input is "running" again
  by itself; otherwise the stream is closed, and `rescan_devices()` then `switch(name)` resumes.
* The device cannot run at the ring's rate: it opens at its own default rate, the callback fills
  a raw ring at that rate, and a pump thread resamples into the ring (`LowLatencyResampler`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from core.errors import SoundvjError, one_line
from visualizer.audio_ring import SampleRing
from visualizer.low_latency_resampler import LowLatencyResampler
from visualizer.portaudio import (
    GIVE_UP_SECONDS,
    PORTAUDIO_LOCK,
    RESUME_STEADY_SECONDS,
    STALL_SECONDS,
    STARTUP_GRACE_SECONDS,
    AudioDevice,
    CallbackHeartbeat,
    close_stream_bounded,
    find_input_device,
    list_input_devices,
    load_sounddevice,
    register_stream_owner,
    stream_stopped,
)

WATCHDOG_PERIOD = 0.05  # how often the watchdog looks at the open stream
RESAMPLE_PUMP_PERIOD = 0.005  # how often the pump thread resamples what the callback wrote


class NoInputDevice(SoundvjError):
    """The system default input was asked for and there is no input device at all."""


class _OpenStream:
    """One open input stream and what its callback and the watchdog share."""

    def __init__(self, device: AudioDevice, rate: int, resampler: LowLatencyResampler | None, raw: SampleRing | None):
        self.device = device
        self.rate = rate
        self.resampler = resampler
        self.raw_ring = raw  # the callback's target when resampling, else None
        self.stream: Any = None
        self.heartbeat = CallbackHeartbeat()
        self.writing = True  # False while stalled: a late block after a stall is not written
        self.stalled_at = math.nan
        self.callback_error: str | None = None
        self.pump: threading.Thread | None = None
        self.closing = threading.Event()


class MicInput:
    """Opens an input stream on a device by name (None = system default) at the ring's sample rate
    (resampling if the device cannot do that rate), writing into the ring.

    `switch(name)` opens the new stream before closing the old one. A watchdog notices a device that
    disappears (stream stopped, or no callback for > STALL_SECONDS, or a PortAudio error) and sets
    `error` (one line) and `state` ("running" | "stopped" | "lost" | "no-device"); while lost nothing
    is written. Nothing ever raises out of the callback. `overflows` counts input overflows.
    """

    def __init__(
        self,
        ring: SampleRing,
        device: str | None = None,
        *,
        blocksize: int = 512,
        latency: str | float = "low",
        device_rate: int | None = None,
    ):
        """`blocksize` frames per callback (512 = 11.6 ms at 44.1 kHz); `device_rate` opens the
        device at that rate and resamples to the ring's (None: the ring's rate when possible)."""
        self.ring = ring
        self.blocksize = blocksize
        self.latency = latency
        self.device_rate = device_rate
        self.state = "stopped"
        self.error: str | None = None
        self.device_name: str | None = None  # the device of the open (or lost) stream
        self._requested: str | None = device
        self.overflows = 0
        self._active: _OpenStream | None = None
        self._listeners: list[Callable[[str, str | None], None]] = []
        # Transitions (start/stop/switch/watchdog/rescan) take PortAudio's lock itself: one lock, one
        # order, no deadlock with rescan_devices. The callback never takes it.
        self._lock = PORTAUDIO_LOCK
        self._watchdog: threading.Thread | None = None
        self._stop_watchdog = threading.Event()
        self._suspended_for_rescan = False
        self._reopen_after_rescan = False
        register_stream_owner(self)

    # ---- public API -------------------------------------------------------------------------

    @property
    def resampling(self) -> bool:
        """True when the device runs at another rate and the pump thread resamples."""
        active = self._active
        return active is not None and active.resampler is not None

    @property
    def device_rate_in_use(self) -> int | None:
        """The rate the device was opened at (None while no stream is open)."""
        active = self._active
        return None if active is None else active.rate

    def on_state_change(self, callback: Callable[[str, str | None], None]) -> None:
        """Call `callback(state, error)` (from a non-UI thread) whenever state or error changes."""
        self._listeners.append(callback)

    def start(self) -> None:
        """Open the requested device and start writing into the ring.

        No input device at all: state "no-device" (no exception). A named device that does not
        exist or cannot be opened: SoundvjError (one line), state unchanged.
        """
        with self._lock:
            if self.state == "running":
                return
            try:
                opened = self._open(self._requested)
            except NoInputDevice as err:
                self._set_state("no-device", str(err))
                return
            stalled = self._active  # lost on a stall, still open: replaced
            self._activate(opened)
            if stalled is not None:
                self._close(stalled)
            self._ensure_watchdog()

    def stop(self) -> None:
        """Close the stream and stop the watchdog; state "stopped"."""
        with self._lock:
            active, self._active = self._active, None
            self._stop_watchdog.set()
            if active is not None:
                self._close(active)
            self._set_state("stopped", None)
        watchdog = self._watchdog
        if watchdog is not None and watchdog is not threading.current_thread():
            watchdog.join(2.0)
        self._watchdog = None

    close = stop

    def switch(self, device: str | None) -> None:
        """Move to another device (None = system default): the new stream opens and runs before the
        old one closes, so there is no gap. On failure SoundvjError, and the old stream keeps going
        (with no device at all and nothing running, state "no-device" instead)."""
        with self._lock:
            try:
                opened = self._open(device)
            except NoInputDevice as err:
                if self._active is not None:
                    raise  # a SoundvjError; what runs keeps running
                self._set_state("no-device", str(err))
                return
            old = self._active
            self._requested = device
            self._activate(opened)
            if old is not None:
                self._close(old)
            self._ensure_watchdog()

    def __enter__(self) -> MicInput:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- opening and closing ----------------------------------------------------------------

    def _resolve(self, name: str | None) -> AudioDevice | None:
        if name is not None:
            return find_input_device(name)
        devices = list_input_devices()
        return devices[0] if devices else None  # the default when there is one

    def _open(self, name: str | None) -> _OpenStream:
        """Open and start a stream; NoInputDevice when asked for the default and there is none."""
        try:
            sd = load_sounddevice()
            device = self._resolve(name)
        except SoundvjError as err:
            if name is None:  # no PortAudio, or PortAudio cannot list: the app runs on silence
                raise NoInputDevice(f"{err}; the picture runs on silence") from None
            raise
        if device is None:
            raise NoInputDevice("no audio input device found; the picture runs on silence")
        channels = min(2, device.channels)
        rate = self.device_rate or self.ring.sample_rate
        with PORTAUDIO_LOCK:
            try:
                sd.check_input_settings(device=device.index, channels=channels, dtype="float32", samplerate=rate)
            except sd.PortAudioError:
                if self.device_rate is not None:
                    raise SoundvjError(
                        f"input device {device.name!r}: cannot record at {rate} Hz; "
                        f"its default rate is {device.default_samplerate:g} Hz"
                    ) from None
                rate = int(device.default_samplerate)
        resampler = raw = None
        if rate != self.ring.sample_rate:
            resampler = LowLatencyResampler(rate, self.ring.sample_rate)
            raw = SampleRing(max(rate, 4 * self.blocksize), rate)  # 1 s of slack for the pump thread
        opened = _OpenStream(device, rate, resampler, raw)
        target = raw if raw is not None else self.ring

        def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            try:
                opened.heartbeat.beat(time.monotonic())
                if status.input_overflow:
                    self.overflows += 1
                if self._active is opened and opened.writing and not opened.closing.is_set():
                    target.write(indata)
            except Exception as err:  # noqa: BLE001 - never raise into PortAudio; the watchdog reports it
                opened.callback_error = one_line(err)

        with PORTAUDIO_LOCK:
            try:
                opened.stream = sd.InputStream(
                    device=device.index,
                    channels=channels,
                    samplerate=rate,
                    dtype="float32",
                    blocksize=self.blocksize,
                    latency=self.latency,
                    callback=callback,
                )
                opened.heartbeat.opened_at = time.monotonic()
                opened.stream.start()
            except sd.PortAudioError as err:
                if opened.stream is not None:
                    opened.stream.close(ignore_errors=True)
                raise SoundvjError(f"input device {device.name!r}: could not be opened ({one_line(err)})") from None
        if resampler is not None:
            opened.pump = threading.Thread(target=self._pump, args=(opened,), name="soundvj-resample", daemon=True)
            opened.pump.start()
        return opened

    def _pump(self, opened: _OpenStream) -> None:
        """Resample the raw ring into the ring until the stream closes (not in the callback: it allocates)."""
        assert opened.raw_ring is not None and opened.resampler is not None
        while not opened.closing.wait(RESAMPLE_PUMP_PERIOD):
            samples, arrived = opened.raw_ring.read_new()
            if samples.size:
                out = opened.resampler.process(samples)
                if out.size and self._active is opened and opened.writing:
                    self.ring.write(out, arrival_time=arrived)

    def _activate(self, opened: _OpenStream) -> None:
        self._active = opened
        self.device_name = opened.device.name
        self._set_state("running", None)

    def _close(self, opened: _OpenStream) -> None:
        opened.closing.set()
        if opened.stream is not None:
            close_stream_bounded(opened.stream)

    # ---- watchdog ---------------------------------------------------------------------------

    def _ensure_watchdog(self) -> None:
        if self._watchdog is not None and self._watchdog.is_alive():
            return
        self._stop_watchdog = threading.Event()
        self._watchdog = threading.Thread(
            target=self._watch, args=(self._stop_watchdog,), name="soundvj-input-watchdog", daemon=True
        )
        self._watchdog.start()

    def _watch(self, stop: threading.Event) -> None:
        while not stop.wait(WATCHDOG_PERIOD):
            with self._lock:
                active = self._active
                if active is None or self._suspended_for_rescan:
                    continue
                self._check(active, time.monotonic())

    def _check(self, active: _OpenStream, now: float) -> None:
        """One watchdog look at the open stream: lose it, stall it, resume it or leave it be."""
        name = active.device.name
        beat = active.heartbeat
        fatal = None
        if active.callback_error is not None:
            fatal = f"input device {name!r}: audio callback failed ({active.callback_error})"
        elif stream_stopped(active.stream):
            fatal = f"input device {name!r}: the stream stopped (device gone?)"
        elif not beat.started and beat.silent_for(now) > STARTUP_GRACE_SECONDS:
            fatal = f"input device {name!r}: no audio arrived within {STARTUP_GRACE_SECONDS:g} s of opening"
        if fatal is not None:
            self._give_up(active, f"{fatal}; the picture runs on silence")
        elif active.writing:
            if beat.started and beat.silent_for(now) > STALL_SECONDS:
                active.writing, active.stalled_at = False, now
                self._set_state(
                    "lost",
                    f"input device {name!r}: stopped delivering audio (no data for {STALL_SECONDS:g} s; unplugged "
                    "or audio server gone?); the picture runs on silence",
                )
        elif beat.steady_for(now) >= RESUME_STEADY_SECONDS:
            active.writing = True  # the stall was a hiccup: the device delivers again
            self._set_state("running", None)
        elif now - active.stalled_at > GIVE_UP_SECONDS:
            self._give_up(active, self.error)

    def _give_up(self, active: _OpenStream, message: str | None) -> None:
        self._active = None
        self._close(active)
        self._set_state("lost", message)

    def _set_state(self, state: str, error: str | None) -> None:
        if (state, error) == (self.state, self.error):
            return
        self.state, self.error = state, error
        for listener in list(self._listeners):
            try:
                listener(state, error)
            except Exception:  # noqa: BLE001 - a broken listener must not stop the audio side
                pass

    # ---- PortAudio re-initialisation (rescan_devices) ---------------------------------------

    def suspend_for_rescan(self) -> None:
        """Close the stream before PortAudio terminates; remember whether it was running."""
        with self._lock:
            self._suspended_for_rescan = True
            active, self._active = self._active, None
            self._reopen_after_rescan = active is not None and self.state == "running"
            if active is not None:
                self._close(active)

    def resume_after_rescan(self) -> None:
        """Reopen the stream (by device name) if it was running before the rescan."""
        with self._lock:
            self._suspended_for_rescan = False
            if not self._reopen_after_rescan:
                return
            try:
                opened = self._open(self.device_name if self._requested is not None else None)
            except SoundvjError as err:
                self._set_state("lost", str(err))
                return
            self._activate(opened)
