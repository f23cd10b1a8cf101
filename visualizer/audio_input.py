"""Microphone / line-in through PortAudio (sounddevice), feeding a `SampleRing`; no Qt.

Devices are picked by name (what a performer sees and what survives a rescan), never by index
(PortAudio renumbers devices when it re-initialises). Everything that talks to PortAudio outside
the audio callbacks holds `PORTAUDIO_LOCK`, because PortAudio's open/close/terminate calls are not
thread-safe with each other.

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
  a raw ring at that rate, and a pump thread resamples into the ring (`StreamingResampler`).
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from core.errors import SoundvjError
from visualizer.audio_ring import SampleRing

PORTAUDIO_LOCK = threading.RLock()

STALL_SECONDS = 0.5  # no callback for this long on a running stream: "lost" (nothing written)
RESUME_STEADY_SECONDS = 0.3  # callbacks back without a gap for this long: a stall is over
GIVE_UP_SECONDS = 3.0  # a stall that lasts this long closes the stream (rescan + switch to resume)
STARTUP_GRACE_SECONDS = 3.0  # a fresh stream may take this long to deliver its first block
_STEADY_GAP_SECONDS = 0.1  # callbacks further apart than this are not "steady"
WATCHDOG_PERIOD = 0.05
RESAMPLE_PUMP_PERIOD = 0.005
_CLOSE_TIMEOUT = 2.0  # a stream whose device vanished may hang in close(); never wait longer

DeviceKind = Literal["input", "output"]


def _sounddevice():
    """The sounddevice module, or a one-line SoundvjError when PortAudio itself is missing."""
    try:
        import sounddevice
    except OSError as err:  # raised when libportaudio is not installed
        raise SoundvjError(
            f"audio: the PortAudio library could not be loaded ({err}); install it (Debian: apt install libportaudio2)"
        ) from None
    return sounddevice


@dataclass(frozen=True)
class AudioDevice:
    """A PortAudio device as the picker shows it. `channels` counts the channels of `kind`."""

    name: str
    host_api: str
    index: int
    channels: int
    default_samplerate: float
    is_default: bool
    kind: DeviceKind = "input"

    @property
    def label(self) -> str:
        """What the picker shows: the name and the host API (the same name can exist under several)."""
        return f"{self.name} ({self.host_api})"


InputDevice = AudioDevice  # an AudioDevice of kind "input"


def _list_devices(kind: DeviceKind) -> list[AudioDevice]:
    sd = _sounddevice()
    key = "max_input_channels" if kind == "input" else "max_output_channels"
    with PORTAUDIO_LOCK:
        try:
            raw = sd.query_devices()
            apis = sd.query_hostapis()
        except sd.PortAudioError as err:
            raise SoundvjError(f"audio: PortAudio could not list devices ({_one_line(err)})") from None
        try:
            default_index = sd.query_devices(kind=kind)["index"]
        except (sd.PortAudioError, ValueError):
            default_index = -1  # PortAudio knows no default of this kind
    devices = [
        AudioDevice(
            name=d["name"],
            host_api=apis[d["hostapi"]]["name"],
            index=d["index"],
            channels=int(d[key]),
            default_samplerate=float(d["default_samplerate"]),
            is_default=d["index"] == default_index,
            kind=kind,
        )
        for d in raw
        if d[key] > 0
    ]
    devices.sort(key=lambda dev: not dev.is_default)  # stable: the default first, then PortAudio's order
    return devices


def list_input_devices() -> list[InputDevice]:
    """Every device with input channels, the system default first (PortAudio's cached list)."""
    return _list_devices("input")


def list_output_devices() -> list[AudioDevice]:
    """Every device with output channels, the system default first."""
    return _list_devices("output")


# Objects holding open streams; they close them before PortAudio re-initialises and reopen after.
_STREAM_OWNERS: weakref.WeakSet = weakref.WeakSet()


def rescan_devices() -> list[InputDevice]:
    """Re-initialise PortAudio so plugged/unplugged devices show up, then list the inputs.

    PortAudio closes every stream when it terminates, so running `MicInput`s and `FilePlayer`s
    close theirs first and reopen them (by device name) afterwards.
    """
    sd = _sounddevice()
    with PORTAUDIO_LOCK:
        owners = list(_STREAM_OWNERS)
        for owner in owners:
            owner._before_rescan()
        sd._terminate()  # sounddevice's documented way to refresh the device list
        sd._initialize()
        for owner in owners:
            owner._after_rescan()
    return list_input_devices()


def _find_device(name: str, kind: DeviceKind) -> AudioDevice:
    devices = _list_devices(kind)
    wanted = name.strip()
    for test in (
        lambda d: d.name == wanted,
        lambda d: d.label == wanted,
        lambda d: d.name.casefold() == wanted.casefold(),
    ):
        found = [d for d in devices if test(d)]
        if found:
            return found[0]  # a name under several host APIs: the default's API comes first
    found = [d for d in devices if wanted.casefold() in d.label.casefold()]
    if len(found) == 1:
        return found[0]
    choices = ", ".join(repr(d.name) for d in devices) or f"none (no {kind} devices found)"
    if found:
        many = ", ".join(repr(d.label) for d in found)
        raise SoundvjError(f"{kind} device {name!r}: matches several devices ({many}); give the full name")
    raise SoundvjError(f"{kind} device {name!r}: not found; choices: {choices}")


def find_input_device(name: str) -> InputDevice:
    """The input device called `name`: exact name (or label), then case-insensitive, then a unique
    case-insensitive substring. SoundvjError naming the device and the choices if none."""
    return _find_device(name, "input")


def find_output_device(name: str) -> AudioDevice:
    """The output device called `name`, matched as `find_input_device` does."""
    return _find_device(name, "output")


class NoInputDevice(SoundvjError):
    """The system default input was asked for and there is no input device at all."""


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def close_stream_bounded(stream: Any, timeout: float = _CLOSE_TIMEOUT) -> bool:
    """Abort and close a PortAudio stream without ever blocking the caller longer than `timeout`.

    A stream whose device vanished can hang inside ALSA on close; then the closing thread is
    abandoned (it is a daemon) rather than freezing the app. True if the close finished.
    """

    def close() -> None:
        try:
            stream.abort(ignore_errors=True)
            stream.close(ignore_errors=True)
        except Exception:  # noqa: BLE001 - the stream is gone either way
            pass

    # The caller's thread holds the lock for the closer (which must not take it: the caller may
    # already hold it, e.g. during a rescan).
    with PORTAUDIO_LOCK:
        closer = threading.Thread(target=close, name="soundvj-stream-close", daemon=True)
        closer.start()
        closer.join(timeout)
    return not closer.is_alive()


class StreamingResampler:
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


class CallbackHeartbeat:
    """When a stream's callback last ran and since when it has run without gaps (for watchdogs).
    `beat` runs in the callback: two float assignments, no allocation."""

    def __init__(self) -> None:
        self.opened_at = time.monotonic()
        self.last = math.nan
        self.steady_since = math.nan

    def beat(self, now: float) -> None:
        if not now - self.last <= _STEADY_GAP_SECONDS:  # also true for the first beat (nan)
            self.steady_since = now
        self.last = now

    @property
    def started(self) -> bool:
        return not math.isnan(self.last)

    def silent_for(self, now: float) -> float:
        """Seconds since the last callback (since opening, before the first one)."""
        return now - (self.opened_at if math.isnan(self.last) else self.last)

    def steady_for(self, now: float) -> float:
        """How long the callbacks have been coming without a gap (0 if they are not coming now)."""
        if not self.started or now - self.last > _STEADY_GAP_SECONDS:
            return 0.0
        return now - self.steady_since


def stream_stopped(stream: Any) -> bool:
    """True if PortAudio stopped this stream by itself (a device error ends the callback thread)."""
    try:
        return stream is None or not stream.active
    except Exception:  # noqa: BLE001 - a stream PortAudio dropped under us
        return True


class _OpenStream:
    """One open input stream and what its callback and the watchdog share."""

    def __init__(self, device: AudioDevice, rate: int, resampler: StreamingResampler | None, raw: SampleRing | None):
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
        _STREAM_OWNERS.add(self)

    # ---- public API -------------------------------------------------------------------------

    @property
    def resampling(self) -> bool:
        """True when the device runs at another rate and the pump thread resamples."""
        active = self._active
        return active is not None and active.resampler is not None

    @property
    def device_rate_in_use(self) -> int | None:
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
            sd = _sounddevice()
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
            resampler = StreamingResampler(rate, self.ring.sample_rate)
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
                opened.callback_error = _one_line(err)

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
                raise SoundvjError(f"input device {device.name!r}: could not be opened ({_one_line(err)})") from None
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

    def _before_rescan(self) -> None:
        with self._lock:
            self._suspended_for_rescan = True
            active, self._active = self._active, None
            self._reopen_after_rescan = active is not None and self.state == "running"
            if active is not None:
                self._close(active)

    def _after_rescan(self) -> None:
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
