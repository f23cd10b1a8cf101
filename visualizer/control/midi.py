"""MIDI input: a controller's knobs, faders and pads as control events for the dispatcher.

rtmidi receives each message on its own thread (with JACK, the server's real-time process thread)
and keeps it in its own queue; no Python runs there. A Python callback would have to take the GIL
inside JACK's process cycle, and a busy interpreter (the render thread, the UI) then makes the cycle
late: JACK counts an xrun and the MIDI of that cycle is lost. One thread of ours ("soundvj-midi")
instead drains rtmidi's queue every millisecond while a controller moves (every few when idle) into
a bounded queue that drops the oldest, decodes with mido, hands CC and note events to `on_event`
(the control layer's dispatcher), and between messages rescans the ports. So a slow dispatcher, a
learn that writes the mapping file, or a burst from a controller never stalls MIDI timing, the
newest value of a knob always arrives, and nothing here touches the render pipeline.

Ports are chosen by name, because numbers change when devices come and go: `list_ports()` feeds a
picker, `open(name)` opens one, and `rescan()` (called by the thread every `rescan_seconds` and by a
"Rescan" button) notices a port that went away and opens it again when a port of that name comes
back. ALSA adds the device's client:port numbers to a name ("nanoKONTROL2:nanoKONTROL2 MIDI 1 24:0"),
and they change on re-plugging, so names are compared without them. The mapping lives in the
dispatcher, not here, so it is untouched by any of this.

With no MIDI system (python-rtmidi missing, no ALSA sequencer and no JACK server) or no port, the
input reports one message and stays closed; nothing raises into the app, and an explicit `rescan()`
tries again (a JACK server started later is found). A MIDI system restarted under the app (a JACK
server stopped and started again) is joined anew by `reconnect()`. Problems on the thread (an undecodable message, a
dispatcher that raised) are counted and reported as rate-limited one-line messages.
"""

from __future__ import annotations

import argparse
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from core.errors import SoundvjError, format_number, one_line, short_repr
from visualizer.control.reporting import RateLimitedReporter

# rtmidi's API names, in the order "auto" tries them on each platform (those compiled in).
API_NAMES = ("alsa", "jack", "coremidi", "winmm")
AUTO_API = "auto"
CLIENT_NAME = "soundvj"
INPUT_PORT_NAME = "midi in"
POLL_ACTIVE_S = 0.001  # how often rtmidi's queue is drained while messages arrive ...
POLL_IDLE_S = 0.005  # ... and when nothing came for ACTIVE_S (the first message of a gesture waits this)
ACTIVE_S = 1.0
RTMIDI_QUEUE = 4096  # rtmidi's own queue, drained into ours each poll; full only if our thread stalls

EventKind = Literal["cc", "note_on", "note_off"]
InputState = Literal["unavailable", "closed", "waiting", "open"]


@dataclass(frozen=True)
class MidiSettings:
    """How the MIDI input is set up; checked once, here.

    `port`: the port to open at start (a name as `list_ports` gives it; None: none until chosen).
    `api`: "auto" (of ALSA, JACK, ...: the first that lists `port`, else the first with any port,
    else the first that works) or one of `API_NAMES`.
    `rescan_seconds`: how often the thread looks for a lost or awaited port (0: only on `rescan()`).
    `queue_size`: messages waiting for the dispatcher; beyond it the oldest are dropped.
    """

    port: str | None = None
    api: str = AUTO_API
    client_name: str = CLIENT_NAME
    rescan_seconds: float = 2.0
    queue_size: int = 1024

    def __post_init__(self) -> None:
        where = "MIDI settings"
        if self.port is not None and (not isinstance(self.port, str) or not self.port.strip()):
            raise SoundvjError(f"{where}: port = {short_repr(self.port)}: must be a non-empty port name")
        if self.api not in (AUTO_API, *API_NAMES):
            raise SoundvjError(f"{where}: api = {short_repr(self.api)}: must be one of "
                               f"{', '.join((AUTO_API, *API_NAMES))}")
        if not isinstance(self.client_name, str) or not self.client_name.strip():
            raise SoundvjError(f"{where}: client_name = {short_repr(self.client_name)}: must be a non-empty name")
        if (isinstance(self.rescan_seconds, bool) or not isinstance(self.rescan_seconds, (int, float))
                or not 0 <= self.rescan_seconds <= 3600):
            raise SoundvjError(f"{where}: rescan_seconds = {short_repr(self.rescan_seconds)}: "
                               "must be a number of seconds in [0, 3600]")
        size = self.queue_size
        if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 65536:
            raise SoundvjError(f"{where}: queue_size = {short_repr(size)}: must be a whole number in [16, 65536]")


def add_midi_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --midi-port and --midi-api to `soundvj live`."""
    parser.add_argument("--midi-port", default=None, metavar="NAME",
                        help="listen to this MIDI input port, by name as the port list shows it (the "
                             "message line lists the ports when it is not found); it opens when it appears")
    parser.add_argument("--midi-api", default=AUTO_API, choices=(AUTO_API, *API_NAMES),
                        help="the MIDI system: auto (the first that lists --midi-port, else one with "
                             "ports), or one of them")


def midi_settings_from_args(args: argparse.Namespace) -> MidiSettings:
    """The `MidiSettings` of `soundvj live`'s flags (one-line `SoundvjError` naming the flag)."""
    try:
        return MidiSettings(port=args.midi_port, api=args.midi_api)
    except SoundvjError as e:
        flag = "--midi-port" if "port =" in str(e) else "--midi-api"
        raise SoundvjError(f"{flag}: {str(e).removeprefix('MIDI settings: ')}") from None


@dataclass(frozen=True)
class MidiEvent:
    """One CC or note message from a port.

    `channel` is 1-16 as controllers print it; `number` the controller or note number (0-127);
    `value` the CC value or the note's velocity (0-127; a note-on with velocity 0 arrives as
    "note_off", as the MIDI standard means it). `received_at` is time.monotonic() when our thread
    took it from rtmidi, for latency measurements.
    """

    kind: EventKind
    channel: int
    number: int
    value: int
    port: str
    received_at: float


MidiEventHandler = Callable[[MidiEvent], Any]


def decode(data: Sequence[int], port: str, received_at: float) -> MidiEvent | None:
    """The CC or note event in one raw message; None for other messages (clock, pitch bend,
    aftertouch, ...). Raises ValueError for bytes that are not a valid MIDI message."""
    import mido  # the live extra; imported where used so a missing package is a message, not a crash

    message = mido.Message.from_bytes(list(data))
    kind = message.type
    if kind == "control_change":
        return MidiEvent("cc", message.channel + 1, message.control, message.value, port, received_at)
    if kind in ("note_on", "note_off"):
        if kind == "note_on" and message.velocity == 0:
            kind = "note_off"
        return MidiEvent(kind, message.channel + 1, message.note, message.velocity, port, received_at)
    return None


_ALSA_ADDRESS = re.compile(r"\s+\d+:\d+$")


def port_key(name: str) -> str:
    """A port's name without ALSA's trailing client:port numbers, which change when it is re-plugged."""
    return _ALSA_ADDRESS.sub("", name.strip())


def find_port(wanted: str, names: Sequence[str]) -> int | None:
    """Index of the port called `wanted` in `names`: the exact name first, else the same name
    without ALSA's numbers, else the one port whose name contains `wanted` (any case), so a
    performer can type "nanoKONTROL2" for "nanoKONTROL2:nanoKONTROL2 MIDI 1 24:0". None if there
    is none, or if several ports contain it (which one would be a guess)."""
    if wanted in names:
        return list(names).index(wanted)
    key = port_key(wanted)
    for index, name in enumerate(names):
        if port_key(name) == key:
            return index
    part = key.casefold()
    containing = [index for index, name in enumerate(names) if part in name.casefold()]
    return containing[0] if len(containing) == 1 else None


class MidiInput:
    """A MIDI input port by name, with its own thread; see the module docstring.

    In the app: `MidiInput(dispatcher.midi, settings, reporter=dispatcher.reporter)`, so CC and
    notes reach the bindings and MIDI learn, and its messages reach the session's message line.

    Every public method returns at once and never raises for a missing MIDI system or port: the
    outcome is `state` ("unavailable", "closed", "waiting" for a named port, "open") and a message.
    Methods may be called from any thread (the UI's picker, the session, tests).
    """

    def __init__(
        self,
        on_event: MidiEventHandler,
        settings: MidiSettings = MidiSettings(),
        on_message: Callable[[str], Any] | None = None,
        reporter: RateLimitedReporter | None = None,
    ) -> None:
        self.on_event = on_event
        self.settings = settings
        # The dispatcher's reporter when given, so the session counts every control problem in one place.
        self.reporter = reporter or RateLimitedReporter(on_message)
        self.state: InputState = "closed"
        self.api_name: str | None = None  # the rtmidi API in use ("jack", "alsa", ...)
        self.wanted_port: str | None = settings.port  # what the performer chose; kept while it is away
        self.port_name: str | None = None  # the full name of the port open now
        self.error: str | None = None  # why MIDI is unavailable
        # Messages taken from the queue, handed to `on_event`, dropped by a full queue, and not
        # control events (clock, pitch bend, ...). Each is written by one thread only.
        self.received = self.delivered = self.dropped = self.ignored = 0
        self._went_away = False  # the wanted port was open and disappeared (its return is news)
        self._midi_in: Any = None  # rtmidi.MidiIn: our client on the MIDI system
        self._queue: deque[tuple[list[int], float, str]] = deque(maxlen=settings.queue_size)
        self._stop = threading.Event()
        self._lock = threading.RLock()  # guards the rtmidi client; the rtmidi callback never takes it
        self._thread: threading.Thread | None = None
        self._last_rescan = 0.0

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect to the MIDI system, open `settings.port` if given, start the thread."""
        self._stop.clear()
        with self._lock:
            self._connect_backend()
            if self.wanted_port is not None and self.state != "unavailable":
                self._open_wanted(announce=True)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="soundvj-midi", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Close the port and the MIDI client, end the thread."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._thread = None
        with self._lock:
            self._close_port()
            self._release_backend()
            if self.state != "unavailable":
                self.state = "closed"

    def __enter__(self) -> MidiInput:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- ports --------------------------------------------------------------------------------------

    def list_ports(self) -> list[str]:
        """The input ports by name, for a picker ([] with no MIDI system)."""
        with self._lock:
            if self._midi_in is None:
                self._connect_backend()
            if self._midi_in is None:
                return []
            try:
                return list(self._midi_in.get_ports())
            except Exception as e:  # noqa: BLE001 - a MIDI system that died is a message, not a crash
                self._lose_backend(e)
                return []

    def open(self, name: str) -> bool:
        """Listen to the port called `name` (the picker's choice), closing the one open now. If it is
        not there, the input waits for it and the rescan opens it when it appears. True if open now."""
        with self._lock:
            self.wanted_port = name
            self._close_port()
            if self._midi_in is None:
                self._connect_backend()
            if self.state == "unavailable":
                return False
            return self._open_wanted(announce=True)

    def close(self) -> None:
        """Stop listening (no port chosen); the MIDI client stays for the picker."""
        with self._lock:
            self.wanted_port = None
            self._close_port()
            if self.state != "unavailable":
                self.state = "closed"

    def rescan(self, retry_unavailable: bool = True) -> InputState:
        """Look at the ports again: a port that went away is closed with a message, a port awaited
        by name is opened when it appears (the dispatcher's mapping is untouched), and a MIDI system
        that was unavailable is tried again if `retry_unavailable` (the thread's periodic rescan does
        not: libasound prints to stderr on every failed attempt). Returns the state after it."""
        with self._lock:
            self._last_rescan = time.monotonic()
            if self._midi_in is None:
                if self.state == "unavailable" and not retry_unavailable:
                    return self.state
                self._connect_backend(quiet=self.state == "unavailable")
                if self._midi_in is None:
                    return self.state
            if self.wanted_port is None:
                return self.state
            try:
                names = list(self._midi_in.get_ports())
            except Exception as e:  # noqa: BLE001
                self._lose_backend(e)
                return self.state
            index = find_port(self.wanted_port, names)
            if self.state == "open":
                if index is None or port_key(names[index]) != port_key(self.port_name):
                    gone = self.port_name
                    self._close_port()
                    self.state = "waiting"
                    self._went_away = True
                    self.reporter.say(f"MIDI: port {gone!r} went away; the mapping is kept, "
                                      "and the port opens again when it comes back")
                elif names[index] != self.port_name:  # re-plugged under new ALSA numbers
                    self._close_port()
                    self._open_wanted(announce=False)
            elif index is not None:
                returning = self._went_away
                if self._open_wanted(announce=not returning) and returning:
                    self.reporter.say(f"MIDI: port {self.port_name!r} is back; listening again")
            return self.state

    def reconnect(self) -> InputState:
        """Drop our client on the MIDI system and connect anew, then open the wanted port: for a
        MIDI system that was restarted under us (a JACK server stopped and started again keeps
        listing its old ports to a client of the old one). The mapping is untouched."""
        with self._lock:
            self._close_port()
            self._release_backend()
            self.state = "closed"
            self._connect_backend()
            if self.wanted_port is not None and self.state != "unavailable":
                self._open_wanted(announce=True)
            return self.state

    # -- status -------------------------------------------------------------------------------------

    def status_text(self) -> str:
        """One line for a status bar or a picker's label."""
        if self.state == "unavailable":
            return f"MIDI unavailable: {self.error}"
        if self.state == "open":
            return f"MIDI: {self.port_name} ({self.api_name})"
        if self.state == "waiting":
            return f"MIDI: waiting for {self.wanted_port} ({self.api_name})"
        return f"MIDI: no port open ({self.api_name})"

    # -- internals (called with the lock held) ------------------------------------------------------

    def _connect_backend(self, quiet: bool = False) -> None:
        """Create our rtmidi client on the chosen API, or with "auto" on the first API that lists
        the wanted port, else the first with any port, else the first that works (a system with no
        controller plugged in yet). On failure the state is "unavailable" with the reason, said once
        (a retry that fails the same way stays quiet when `quiet`)."""
        if self._midi_in is not None:
            return
        try:
            import mido  # noqa: F401 - decode() needs it; missing is the same message as rtmidi missing
            import rtmidi
        except ImportError as e:
            self._unavailable(f"python-rtmidi/mido not installed ({one_line(e)}; pip install 'soundvj[live]')", quiet)
            return
        compiled = {rtmidi.get_api_name(api): api for api in rtmidi.get_compiled_api()}
        auto = self.settings.api == AUTO_API
        candidates = [n for n in API_NAMES if n in compiled] if auto else [self.settings.api]
        problems: list[str] = []
        working: list[tuple[int, str, Any]] = []  # (rank: 0 lists the wanted port, 1 any port, 2 none)
        for name in candidates:
            if name not in compiled:
                problems.append(f"{name}: not compiled into python-rtmidi")
                continue
            try:
                midi_in = rtmidi.MidiIn(compiled[name], self.settings.client_name, RTMIDI_QUEUE)
                names = list(midi_in.get_ports())
            except Exception as e:  # noqa: BLE001 - rtmidi raises its own errors (SystemError subclass)
                problems.append(f"{name}: {one_line(e, limit=100)}")
                continue
            wanted_here = self.wanted_port is not None and find_port(self.wanted_port, names) is not None
            working.append((0 if wanted_here else 1 if names else 2, name, midi_in))
            if wanted_here or not auto:
                break
        if not working:
            self._unavailable("; ".join(problems) or "no MIDI API in python-rtmidi", quiet)
            return
        _, name, midi_in = min(working, key=lambda w: w[0])  # the first of the best rank
        for _, _, other in working:
            if other is not midi_in:
                other.delete()
        self._use_backend(name, midi_in)

    def _use_backend(self, name: str, midi_in: Any) -> None:
        self._midi_in = midi_in
        self.api_name = name
        self.error = None
        self.state = "closed"

    def _unavailable(self, reason: str, quiet: bool) -> None:
        self.state = "unavailable"
        self.error = reason
        if not quiet:
            self.reporter.say(f"MIDI unavailable: {reason}; playing on without MIDI")

    def _lose_backend(self, error: BaseException) -> None:
        self._close_port()
        self._release_backend()
        self._unavailable(f"the MIDI system stopped answering ({one_line(error, limit=100)})", quiet=False)

    def _release_backend(self) -> None:
        if self._midi_in is not None:
            try:
                self._midi_in.delete()
            except Exception:  # noqa: BLE001 - already gone with its server
                pass
            self._midi_in = None

    def _open_wanted(self, announce: bool) -> bool:
        """Open the port named `wanted_port` if it is listed; else state "waiting" (with a message
        if `announce`). True if open now."""
        try:
            names = list(self._midi_in.get_ports())
        except Exception as e:  # noqa: BLE001
            self._lose_backend(e)
            return False
        index = find_port(self.wanted_port, names)
        if index is None:
            self.state = "waiting"
            if announce:
                listed = ", ".join(repr(n) for n in names[:8]) or "none"
                self.reporter.say(f"MIDI: port {self.wanted_port!r} not found (ports: {listed}); "
                                  "it opens when it appears")
            return False
        name = names[index]
        self._went_away = False
        try:
            self._midi_in.open_port(index, INPUT_PORT_NAME)
        except Exception as e:  # noqa: BLE001 - the port vanished between listing and opening
            self.state = "waiting"
            self.reporter.say(f"MIDI: could not open port {name!r} ({one_line(e, limit=100)}); trying again on rescan")
            return False
        self.port_name = name
        self.state = "open"
        if announce:
            self.reporter.say(f"MIDI: listening to {name!r} ({self.api_name})")
        return True

    def _close_port(self) -> None:
        if self._midi_in is not None and self.port_name is not None:
            try:
                self._midi_in.close_port()
            except Exception:  # noqa: BLE001 - closing a port whose device is gone
                pass
        self.port_name = None

    # -- the MIDI thread -----------------------------------------------------------------------------

    def _drain_rtmidi(self) -> int:
        """Move what rtmidi has queued into ours, stamped now; returns how many came."""
        with self._lock:
            midi_in, port = self._midi_in, self.port_name
            if midi_in is None or port is None:
                return 0
            count = 0
            while count < RTMIDI_QUEUE:
                message = midi_in.get_message()
                if message is None:
                    break
                if len(self._queue) == self._queue.maxlen:
                    self.dropped += 1
                self._queue.append((message[0], time.monotonic(), port))
                count += 1
            return count

    def _run(self) -> None:
        interval = self.settings.rescan_seconds
        dropped_said = 0
        last_message = 0.0
        while not self._stop.is_set():
            try:
                if self._drain_rtmidi() or self._queue:
                    last_message = time.monotonic()
                    self._deliver_one()  # then drain again: the newest always gets in
                    continue
                if self.dropped > dropped_said:
                    self.reporter.report("midi-dropped", f"MIDI: {self.dropped - dropped_said} messages dropped "
                                         "(more arrived than the control layer took; the newest were kept)")
                    dropped_said = self.dropped
                if interval > 0 and time.monotonic() - self._last_rescan >= interval:
                    self.rescan(retry_unavailable=False)
            except Exception as e:  # noqa: BLE001 - the thread must outlive any surprise
                self.reporter.report("midi-thread", f"MIDI: {type(e).__name__}: {one_line(e)}")
            active = time.monotonic() - last_message < ACTIVE_S
            self._stop.wait(POLL_ACTIVE_S if active else POLL_IDLE_S)

    def _deliver_one(self) -> None:
        try:
            data, received_at, port = self._queue.popleft()
        except IndexError:
            return
        self.received += 1
        try:
            event = decode(data, port, received_at)
        except Exception as e:  # noqa: BLE001 - mido says ValueError; any surprise is bad input too
            shown = " ".join(f"{byte:02X}" for byte in data[:8]) + (" ..." if len(data) > 8 else "")
            self.reporter.report("midi-malformed", f"MIDI: ignored a malformed message from {port!r}: "
                                 f"{shown} ({one_line(e, limit=80)})")
            return
        if event is None:
            self.ignored += 1
            return
        try:
            self.on_event(event)
            self.delivered += 1
        except Exception as e:  # noqa: BLE001 - a dispatcher bug must not stop the MIDI thread
            self.reporter.report("midi-handler", f"MIDI: {event.kind} {event.number} on channel {event.channel} "
                                 f"was not applied ({one_line(e)})")


def describe_event(event: MidiEvent) -> str:
    """How a performer reads an event: "CC 7 = 100 (ch 1)", "note 36 on, velocity 90 (ch 10)"."""
    if event.kind == "cc":
        return f"CC {event.number} = {format_number(event.value)} (ch {event.channel})"
    state = "on" if event.kind == "note_on" else "off"
    return f"note {event.number} {state}, velocity {event.value} (ch {event.channel})"
