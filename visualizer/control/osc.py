"""OSC in and out (python-osc for the message format; our own UDP threads).

In: `OscInput` listens on a UDP port (127.0.0.1 unless opened on purpose) on its own thread. It reads
what has arrived in one go (up to `batch` datagrams), parses it, keeps only the newest message per
address in that batch, and hands each to the dispatcher. So a flood costs at most one parameter
snapshot per address per read, memory is bounded by the batch and the kernel's socket buffer, and the
render thread only ever sees the newest snapshot between two frames. Messages in a bundle are applied
at once, whatever their time tag. Bad input (a datagram that is not OSC, an argument type we do not
read, a bundle nested too deeply, an unknown address, the wrong arguments) is counted by kind and
reported as rate-limited one-line messages; nothing raises out of the thread.

The built-in addresses are generated from the parameter registry (`osc_address_rows`), and
docs/controllers.md holds the same table (a test keeps them identical). Any other address can be
bound to a target in the mapping file.

Out: `OscOutput` is a frame sink like the recorder: the render thread's `feed` drops the frame into a
latest-value slot and wakes the sender thread, which sends one bundle per frame with the analysis and
the parameter values (`osc_output_rows`). A slow network or a missing receiver never slows the render
thread; frames it could not keep up with are skipped.
"""

from __future__ import annotations

import math
import select
import socket
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.parsing import osc_types

from core.control import MODULATABLE, SOURCES
from core.errors import SoundvjError, format_number, one_line, short_repr, suggest
from core.params import NAMES, PARAMS, Value
from visualizer.control.bindings import MAX_FADE_SECONDS, PRESS_LEVEL
from visualizer.control.dispatcher import ControlDispatcher
from visualizer.control.reporting import RateLimitedReporter
from visualizer.control.sink_thread import SinkThread
from visualizer.mailbox import LatestSlot

PREFIX = "/soundvj"
OUT_PREFIX = "/soundvj/out"
MAX_DATAGRAM = 65536
DEFAULT_BATCH = 256  # datagrams read before the newest per address is applied
MAX_BUNDLE_DEPTH = 4
READABLE_TAGS = frozenset("ifdhsTFNb")  # int, float, double, int64, string, true, false, nil, blob
POLL_SECONDS = 0.25  # how often the threads look at their stop flag
ACTION_ADDRESSES = {
    f"{PREFIX}/preset/next": "next_preset",
    f"{PREFIX}/preset/previous": "previous_preset",
    f"{PREFIX}/tap": "tap",
    f"{PREFIX}/record": "record",
    f"{PREFIX}/freeze": "freeze",
}


@dataclass(frozen=True)
class OscAddressRow:
    """One row of an address table: the address, its arguments, what it does."""

    address: str
    arguments: str
    effect: str


def osc_address_rows() -> list[OscAddressRow]:
    """The built-in input addresses, one per registry parameter and one per action."""
    rows = []
    for s in PARAMS:
        kind = "int" if s.kind == "int" else "float"
        if s.nullable:
            kind += " or nil"
        unit = f" {s.unit}" if s.unit else ""
        restart = "; restarts the stream" if not s.live else ""
        rows.append(OscAddressRow(f"{PREFIX}/param/{s.name}", kind,
                                  f"{s.label}: set to the value, in {s.range_text}{unit} (clamped){restart}"))
    press = f"no argument, or a number >= {format_number(PRESS_LEVEL)} (0 is a release and is ignored)"
    rows += [
        OscAddressRow(f"{PREFIX}/preset", "int or string", "crossfade to preset N (from 1, list order) or by name"),
        OscAddressRow(f"{PREFIX}/preset/next", press, "crossfade to the next preset"),
        OscAddressRow(f"{PREFIX}/preset/previous", press, "crossfade to the previous preset"),
        OscAddressRow(f"{PREFIX}/tap", press, "tap tempo: each press is a beat"),
        OscAddressRow(f"{PREFIX}/record", press, "start / stop recording"),
        OscAddressRow(f"{PREFIX}/freeze", press, "freeze / unfreeze the picture"),
        OscAddressRow(f"{PREFIX}/fade", "float", f"crossfade time for presets, in [0, {format_number(MAX_FADE_SECONDS)}] s"),
        OscAddressRow(f"{PREFIX}/mod/PARAM/SOURCE", "float",
                      "depth of PARAM modulated by SOURCE, in PARAM's units (0 removes it); PARAM: "
                      + ", ".join(MODULATABLE) + "; SOURCE: " + ", ".join(SOURCES)),
    ]
    return rows


def osc_output_rows() -> list[OscAddressRow]:
    """What `OscOutput` sends each frame (one bundle)."""
    rows = [
        OscAddressRow(f"{OUT_PREFIX}/frame", "int", "frame number"),
        OscAddressRow(f"{OUT_PREFIX}/level", "float", "input level in [0, 1] (0 = silence floor, 1 = 0 dB)"),
        OscAddressRow(f"{OUT_PREFIX}/bands", "float float float", "low, mid, high band levels in [0, 1]"),
        OscAddressRow(f"{OUT_PREFIX}/envelope", "float", "envelope follower in [0, 1]"),
        OscAddressRow(f"{OUT_PREFIX}/onset", "float int", "onset strength in [0, 1], onsets found since the last frame"),
        OscAddressRow(f"{OUT_PREFIX}/bpm", "float", "tempo, beats per minute"),
        OscAddressRow(f"{OUT_PREFIX}/phase", "float", "beat phase in [0, 1), 0 on the beat"),
    ]
    for s in PARAMS:
        kind = ("int" if s.kind == "int" else "float") + (" or nil" if s.nullable else "")
        rows.append(OscAddressRow(f"{OUT_PREFIX}/param/{s.name}", kind, f"{s.label} as rendered (modulations included)"))
    return rows


def markdown_table(rows: Sequence[OscAddressRow]) -> str:
    """`rows` as a Markdown table (docs/controllers.md embeds the generated tables)."""
    lines = ["| address | arguments | effect |", "|---|---|---|"]
    lines += [f"| `{r.address}` | {r.arguments} | {r.effect} |" for r in rows]
    return "\n".join(lines)


def osc_markdown_table() -> str:
    """The input address table as Markdown."""
    return markdown_table(osc_address_rows())


# -- parsing ---------------------------------------------------------------------------------------


class OscFormatError(ValueError):
    """A datagram that is not OSC we read; `kind` names the problem for the counters."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind


def parse_message(element: bytes) -> tuple[str, list[Any]]:
    """(address, arguments) of one OSC message; `OscFormatError` if it is not one we read.

    The type tags are checked before python-osc parses the arguments, so a tag it does not know is
    refused here instead of being logged once per message."""
    try:
        address, index = osc_types.get_string(element, 0)
        tags = osc_types.get_string(element, index)[0] if index < len(element) else ","
    except Exception as e:  # noqa: BLE001 - osc_types raises ParseError, UnicodeDecodeError, ...
        raise OscFormatError("malformed", f"not an OSC message ({one_line(e, limit=60)})") from None
    if not address.startswith("/") or not address.isprintable() or not address.isascii():
        raise OscFormatError("malformed", f"address {short_repr(address)} is not printable ASCII starting with '/'")
    if not tags.startswith(","):
        raise OscFormatError("malformed", f"{address}: type tags {short_repr(tags)} do not start with ','")
    unreadable = set(tags[1:]) - READABLE_TAGS
    if unreadable:
        raise OscFormatError("unsupported-type", f"{address}: argument type(s) {', '.join(sorted(unreadable))} "
                             f"not read (numbers, strings, true/false/nil only)")
    try:
        return address, OscMessage(element).params
    except Exception as e:  # noqa: BLE001
        raise OscFormatError("malformed", f"{address}: arguments do not match their type tags ({one_line(e, limit=60)})") from None


def parse_packet(dgram: bytes, depth: int = 0) -> list[tuple[str, list[Any]]]:
    """Every message in a datagram (a message, or a bundle of messages and bundles, in order)."""
    if dgram.startswith(b"/"):
        return [parse_message(dgram)]
    if not dgram.startswith(b"#bundle\x00"):
        raise OscFormatError("malformed", "not OSC (neither a message nor a bundle)")
    if depth >= MAX_BUNDLE_DEPTH:
        raise OscFormatError("malformed", f"bundles nested more than {MAX_BUNDLE_DEPTH} deep")
    messages, index = [], 16  # "#bundle\0" and the 8-byte time tag
    if len(dgram) < index:
        raise OscFormatError("malformed", "bundle shorter than its header")
    while index < len(dgram):
        if index + 4 > len(dgram):
            raise OscFormatError("malformed", "bundle element size cut short")
        (size,) = struct.unpack_from(">i", dgram, index)
        index += 4
        if size <= 0 or size % 4 or index + size > len(dgram):
            raise OscFormatError("malformed", f"bundle element of {size} bytes does not fit the bundle")
        messages += parse_packet(dgram[index:index + size], depth + 1)
        index += size
    return messages


# -- input -----------------------------------------------------------------------------------------


def _press(args: Sequence[Any]) -> bool | None:
    """True for a press (no argument, or a number >= 0.5), False for a release, None if not a number."""
    if not args:
        return True
    x = args[0]
    if isinstance(x, bool):
        return x
    if isinstance(x, (int, float)) and math.isfinite(x):
        return x >= PRESS_LEVEL
    return None


class OscInput:
    """A UDP OSC server on its own thread, driving `dispatcher`; see the module docstring.

    `port` 0 asks the system for a free port (tests); `bound_port` is the one in use after `start`.
    """

    def __init__(self, dispatcher: ControlDispatcher, host: str = "127.0.0.1", port: int = 0,
                 batch: int = DEFAULT_BATCH, reporter: RateLimitedReporter | None = None) -> None:
        self.dispatcher = dispatcher
        self.host, self.port, self.batch = host, port, batch
        self.reporter = reporter or dispatcher.reporter
        self.bound_port: int | None = None
        self.datagrams = 0  # read from the socket
        self.messages = 0  # OSC messages in them
        self.coalesced = 0  # messages replaced by a newer one to the same address in the same read
        self.routed = 0  # messages handed on (to a built-in address or a binding)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._known = [r.address for r in osc_address_rows()]

    def start(self) -> None:
        """Bind the socket (a one-line `SoundvjError` if that fails) and start the thread."""
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
            family, _, _, _, address = infos[0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind(address)
            except OSError:
                sock.close()
                raise
        except OSError as e:
            raise SoundvjError(f"--osc-port {self.port}: cannot listen on {self.host}:{self.port} ({one_line(e)})") from None
        sock.setblocking(False)  # the thread waits in select() and then reads what is there
        self._sock = sock
        self.bound_port = sock.getsockname()[1]
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="soundvj-osc-in", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread and close the socket."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _serve(self) -> None:
        sock = self._sock
        while not self._stop.is_set():
            try:
                readable, _, _ = select.select([sock], [], [], POLL_SECONDS)
            except (OSError, ValueError):  # closed under us by stop()
                break
            if not readable:
                continue
            batch: list[bytes] = []
            while len(batch) < self.batch:  # what has arrived, without waiting for more
                try:
                    batch.append(sock.recv(MAX_DATAGRAM))
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as e:
                    if not self._stop.is_set():
                        self.reporter.report("osc-socket", f"OSC: receive failed ({one_line(e)})")
                    break
            try:
                self.handle_datagrams(batch)
            except Exception as e:  # noqa: BLE001 - the thread outlives any surprise
                self.reporter.report("osc-error", f"OSC: {type(e).__name__}: {one_line(e)}")

    def handle_datagrams(self, datagrams: Sequence[bytes]) -> None:
        """Apply the newest message per address in `datagrams` (the thread's body; public so a
        benchmark can time it without a socket).

        A plain message's address is read without parsing the rest, and only the newest message
        per address is parsed and applied: under a flood, the work per datagram is a dictionary
        store. Bundles are parsed whole, in arrival order with the rest."""
        newest: dict[bytes, bytes | tuple[str, list[Any]]] = {}  # address -> datagram or parsed message
        count = 0
        self.datagrams += len(datagrams)
        for dgram in datagrams:
            end = dgram.find(b"\0") if dgram.startswith(b"/") else -1
            if end > 0:
                count += 1
                key = dgram[:end]
                newest.pop(key, None)  # re-inserted: the batch applies in order of the newest arrival
                newest[key] = dgram
                continue
            try:
                messages = parse_packet(dgram)
            except OscFormatError as e:
                self.reporter.report(f"osc-{e.kind}", f"OSC: ignored a packet: {e}")
                continue
            for address, args in messages:
                count += 1
                key = address.encode("ascii")  # parse_message checked it is ASCII
                newest.pop(key, None)
                newest[key] = (address, args)
        self.messages += count
        self.coalesced += count - len(newest)
        for item in newest.values():
            if isinstance(item, bytes):
                try:
                    address, args = parse_message(item)
                except OscFormatError as e:
                    self.reporter.report(f"osc-{e.kind}", f"OSC: ignored a packet: {e}")
                    continue
            else:
                address, args = item
            self.route(address, args)

    def route(self, address: str, args: list[Any]) -> None:
        """Apply one message: a built-in address, else a binding; an unknown address is reported."""
        d = self.dispatcher
        where = f"OSC {address}"
        if address.startswith(PREFIX + "/"):
            rest = address[len(PREFIX) + 1:]
            if rest.startswith("param/"):
                if len(args) != 1:
                    self._wrong_args(address, args, "one number")
                    return
                self.routed += 1
                d.set_param(rest[len("param/"):], args[0], where)
                return
            if rest == "preset":
                if len(args) != 1:
                    self._wrong_args(address, args, "a preset number or name")
                    return
                self.routed += 1
                d.pick_preset(args[0], where)
                return
            if rest == "fade":
                if len(args) != 1:
                    self._wrong_args(address, args, "seconds")
                    return
                self.routed += 1
                d.set_fade(args[0], where)
                return
            if rest.startswith("mod/") and rest.count("/") == 2:
                _, param, source = rest.split("/")
                if len(args) != 1:
                    self._wrong_args(address, args, "a depth")
                    return
                self.routed += 1
                d.set_modulation(param, source, args[0], where)
                return
            action = ACTION_ADDRESSES.get(address)
            if action is not None:
                pressed = _press(args)
                if pressed is None:
                    self._wrong_args(address, args, "no argument or a number")
                    return
                self.routed += 1
                if pressed:
                    d.perform(d.target_for(action), source=where)
                return
        elif d.osc_bound(address, args):
            self.routed += 1
            return
        self.reporter.report("osc-unknown-address", lambda: f"OSC: unknown address {short_repr(address)}; "
                             f"{suggest(address[:100], self._known)}")

    def _wrong_args(self, address: str, args: list[Any], expected: str) -> None:
        self.reporter.report("osc-arguments", f"OSC {address}: expected {expected}, got "
                             f"{len(args)} argument{'s' if len(args) != 1 else ''} {short_repr(tuple(args))}")


# -- output ----------------------------------------------------------------------------------------


def _osc_value(value: Value | float) -> Any:
    if value is None:
        return None
    return int(value) if isinstance(value, int) else float(value)


def analysis_messages(frame: Any) -> list[tuple[str, list[Any]]]:
    """The (address, arguments) `OscOutput` sends for one `PublishedFrame` (see `osc_output_rows`)."""
    out: list[tuple[str, list[Any]]] = [(f"{OUT_PREFIX}/frame", [int(frame.index)])]
    f = frame.features
    if f is not None:
        out += [
            (f"{OUT_PREFIX}/level", [float(f.level)]),
            (f"{OUT_PREFIX}/bands", [float(f.low), float(f.mid), float(f.high)]),
            (f"{OUT_PREFIX}/envelope", [float(f.envelope)]),
            (f"{OUT_PREFIX}/onset", [float(f.onset_strength), len(f.onsets)]),
        ]
    c = frame.clock
    if c is not None:
        out += [(f"{OUT_PREFIX}/bpm", [float(c.bpm)]), (f"{OUT_PREFIX}/phase", [float(c.phase)])]
    for name in NAMES:
        out.append((f"{OUT_PREFIX}/param/{name}", [_osc_value(getattr(frame.params, name))]))
    return out


def build_bundle(messages: Sequence[tuple[str, list[Any]]]) -> bytes:
    """One OSC bundle (to be applied at once) holding `messages`."""
    bundle = OscBundleBuilder(IMMEDIATELY)
    for address, args in messages:
        builder = OscMessageBuilder(address)
        for arg in args:
            builder.add_arg(arg)
        bundle.add_content(builder.build())
    return bundle.build().dgram


class OscOutput(SinkThread):
    """Sends each frame's analysis to (host, port) from its own thread; a `FrameSink` for the render worker."""

    def __init__(self, host: str, port: int, reporter: RateLimitedReporter | None = None) -> None:
        super().__init__("soundvj-osc-out", POLL_SECONDS)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as e:
            raise SoundvjError(f"--osc-out {host}:{port}: cannot resolve the host ({one_line(e)})") from None
        family, _, _, _, self.address = infos[0]
        self.host, self.port = host, port
        self.reporter = reporter or RateLimitedReporter(None)
        self.sent = 0
        self.failed = 0
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._slot: LatestSlot[Any] = LatestSlot()
        self._seq = 0

    def stop(self) -> None:
        """End the thread and close the socket."""
        super().stop()
        self._sock.close()

    def feed(self, frame: Any, audio: Any) -> None:
        """The render thread's hand-over: keep the newest frame, wake the sender (returns at once)."""
        self._slot.put(frame)
        self.wake()

    def _drain(self) -> None:
        frame, self._seq = self._slot.take_new(self._seq)
        if frame is None:
            return
        try:
            self._sock.sendto(build_bundle(analysis_messages(frame)), self.address)
            self.sent += 1
        except Exception as e:  # noqa: BLE001 - no receiver, a full buffer, an odd value: counted
            self.failed += 1
            self.reporter.report("osc-out", f"OSC out to {self.host}:{self.port}: {one_line(e)}")
