"""The PortAudio plumbing shared by the microphone input and the file player; no Qt.

- `load_sounddevice()`: the sounddevice module, or a one-line `SoundvjError` when the PortAudio library
  itself is missing (so only the audio side fails, not the import of the app).
- Devices by name: `list_input_devices` / `list_output_devices` (the system default first) and
  `find_input_device` / `find_output_device`. A performer sees names, and names survive a rescan;
  PortAudio renumbers its device indices whenever it re-initialises.
- `rescan_devices()`: re-initialise PortAudio so plugged/unplugged devices show up. PortAudio closes
  every stream when it terminates, so every object holding streams registers itself with
  `register_stream_owner` and is asked to close them before and to reopen them after.
- `close_stream_bounded`: closing a stream whose device vanished can hang inside ALSA; never wait
  longer than a bound.
- `CallbackHeartbeat` and `stream_stopped`: what the watchdogs of both stream kinds look at, with the
  shared timing (`STALL_SECONDS`, `RESUME_STEADY_SECONDS`, `GIVE_UP_SECONDS`, `STARTUP_GRACE_SECONDS`).

Everything that talks to PortAudio outside the audio callbacks holds `PORTAUDIO_LOCK`, because
PortAudio's open/close/terminate calls are not thread-safe with each other.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal, Protocol

from core.errors import SoundvjError, one_line

PORTAUDIO_LOCK = threading.RLock()

STALL_SECONDS = 0.5  # no callback for this long on a running stream: stalled (nothing written)
RESUME_STEADY_SECONDS = 0.3  # callbacks back without a gap for this long: a stall is over
GIVE_UP_SECONDS = 3.0  # a stall that lasts this long closes the stream
STARTUP_GRACE_SECONDS = 3.0  # a fresh stream may take this long to deliver its first block
STEADY_GAP_SECONDS = 0.1  # callbacks further apart than this are not "steady"
CLOSE_TIMEOUT_SECONDS = 2.0  # a stream whose device vanished may hang in close(); never wait longer

DeviceKind = Literal["input", "output"]


def load_sounddevice() -> ModuleType:
    """The sounddevice module, or a one-line SoundvjError when PortAudio itself is missing."""
    try:
        import sounddevice  # imported on first use: loading it loads (and initialises) libportaudio
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
    sd = load_sounddevice()
    key = "max_input_channels" if kind == "input" else "max_output_channels"
    with PORTAUDIO_LOCK:
        try:
            raw = sd.query_devices()
            apis = sd.query_hostapis()
        except sd.PortAudioError as err:
            raise SoundvjError(f"audio: PortAudio could not list devices ({one_line(err)})") from None
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


class StreamOwner(Protocol):
    """An object holding PortAudio streams that must survive `rescan_devices`."""

    def suspend_for_rescan(self) -> None:
        """Close the streams (PortAudio is about to terminate) and remember what to reopen."""

    def resume_after_rescan(self) -> None:
        """Reopen what `suspend_for_rescan` closed, by device name (indices may have changed)."""


_stream_owners: weakref.WeakSet[StreamOwner] = weakref.WeakSet()


def register_stream_owner(owner: StreamOwner) -> None:
    """Have `rescan_devices` suspend and resume `owner`'s streams (held weakly: no unregistering)."""
    _stream_owners.add(owner)


def rescan_devices() -> list[InputDevice]:
    """Re-initialise PortAudio so plugged/unplugged devices show up, then list the inputs.

    PortAudio closes every stream when it terminates, so the registered stream owners (running
    microphone inputs and file players) close theirs first and reopen them (by device name) afterwards.
    """
    sd = load_sounddevice()
    with PORTAUDIO_LOCK:
        owners = list(_stream_owners)
        for owner in owners:
            owner.suspend_for_rescan()
        # sounddevice documents these two calls as the way to refresh PortAudio's device list.
        sd._terminate()
        sd._initialize()
        for owner in owners:
            owner.resume_after_rescan()
    return list_input_devices()


def close_stream_bounded(stream: Any, timeout: float = CLOSE_TIMEOUT_SECONDS) -> bool:
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


class CallbackHeartbeat:
    """When a stream's callback last ran and since when it has run without gaps (for watchdogs).
    `beat` runs in the callback: two float assignments, no allocation."""

    def __init__(self) -> None:
        self.opened_at = time.monotonic()
        self.last = math.nan
        self.steady_since = math.nan

    def beat(self, now: float) -> None:
        """Note a callback at `now` (monotonic seconds)."""
        if not now - self.last <= STEADY_GAP_SECONDS:  # also true for the first beat (nan)
            self.steady_since = now
        self.last = now

    @property
    def started(self) -> bool:
        """True once the first callback ran."""
        return not math.isnan(self.last)

    def silent_for(self, now: float) -> float:
        """Seconds since the last callback (since opening, before the first one)."""
        return now - (self.opened_at if math.isnan(self.last) else self.last)

    def steady_for(self, now: float) -> float:
        """How long the callbacks have been coming without a gap (0 if they are not coming now)."""
        if not self.started or now - self.last > STEADY_GAP_SECONDS:
            return 0.0
        return now - self.steady_since


def stream_stopped(stream: Any) -> bool:
    """True if PortAudio stopped this stream by itself (a device error ends the callback thread)."""
    try:
        return stream is None or not stream.active
    except Exception:  # noqa: BLE001 - a stream PortAudio dropped under us
        return True
