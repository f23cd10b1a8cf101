"""Ableton Link: play on the tempo and beat phase of the other Link apps on the network (a DJ's deck,
a drum machine, Ableton Live), and lead them when the performer taps or sets a tempo.

`LinkSync.join()` starts one thread ("soundvj-link") running an asyncio loop (aalink wants one) that
owns the `aalink.Link` object; nothing else touches it. Every `POLL_SECONDS` the thread reads the
session's tempo, beat and peer count and hands a `LinkState` to `post` (in the app: a latest-value
slot the render worker reads between frames, where it calls `BeatClock.set_tempo`), so the render
thread never waits on Link or on the network. A tap, a tempo the performer sets and `leave()` are
posted to the thread the other way (a bounded queue of taps, a latest-value slot of tempo) and
return at once, so a MIDI pad, an OSC message or the window can call them from any thread.

Times: aalink's own clock (`Link.time`) is CLOCK_MONOTONIC_RAW on Linux, which drifts from
`time.monotonic()` (CLOCK_MONOTONIC, what every other part of the app stamps with) by NTP's slewing
since boot, so `LinkState.at` is `time.monotonic()` read around the beat read, never `Link.time`.
The beat is Link's with a quantum of `QUANTUM` (4: a bar of four), so the beat within the bar
(`beat % 4`) agrees between peers, and LFOs of up to a bar line up with theirs.

Taps: while joined, a tap leads the whole Link session, so the thread keeps its own `BeatClock` for
tap tempo (the same median-of-intervals rule as the render worker's taps) and sets Link's tempo;
the new tempo comes back to the render worker with the next state, like any peer's change. Taps
change the tempo only: the session's phase is shared by everyone on it and stays where it is.

Missing aalink or a failure (Link cannot start, a read raises) is a one-line message through the
reporter; `join()` never raises for it, the thread never lets an exception out, and the show goes on
with the beat clock's own tempo.

Link sends UDP multicast on every network interface: tests run it only inside a loopback-only
network namespace (`tests/test_link.py`).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.control import BeatClock
from core.control.beat_clock import ANY_BPM
from core.control.checks import checked_number
from core.errors import format_number, one_line
from visualizer.control.reporting import RateLimitedReporter
from visualizer.mailbox import LatestSlot

QUANTUM = 4  # beats per bar: phase is shared modulo a bar, as Link apps usually do
POLL_SECONDS = 0.01  # how often the session's tempo and beat are read and posted
MAX_WAITING_TAPS = 32  # taps posted between two polls beyond this are dropped
DEFAULT_BPM = 120.0
STOP_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class LinkState:
    """The Link session read at `at` (time.monotonic()): tempo, beat position with `QUANTUM` 4
    (continuous; whole numbers are beats, multiples of 4 are bar starts), and how many peers."""

    bpm: float
    beat: float
    at: float
    peers: int

    def beat_at(self, t: float) -> float:
        """The beat position at monotonic time `t`, on this state's tempo."""
        return self.beat + (t - self.at) * self.bpm / 60.0

    @property
    def phase(self) -> float:
        """Where in the beat `at` falls, in [0, 1)."""
        return self.beat % 1.0

    @property
    def bar_phase(self) -> float:
        """Where in the bar of `QUANTUM` beats `at` falls, in [0, 1): what Link keeps equal on all peers."""
        return (self.beat % QUANTUM) / QUANTUM


def check_bpm(bpm: object, where: str = "Link tempo") -> float:
    """`bpm` as a float in the tempos a tap or an external clock may set, else a one-line `SoundvjError`."""
    return checked_number(where, bpm, *ANY_BPM)


class LinkSync:
    """Joins or leaves an Ableton Link session; see the module docstring.

    In the app: `LinkSync(post=worker.set_link_state, reporter=dispatcher.reporter)`, `join(bpm)` when
    `--link` is given (or the performer turns Link on), `tap(at)` / `set_tempo(bpm)` for the tempo
    controls while `joined`, `leave()` when the session stops. `state` is the newest `LinkState`
    (None before the first read) for a status line; `peers` its peer count.
    """

    def __init__(
        self,
        post: Callable[[LinkState], Any] | None = None,
        reporter: RateLimitedReporter | None = None,
        on_message: Callable[[str], Any] | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.post = post
        self.reporter = reporter or RateLimitedReporter(on_message)
        self.poll_seconds = checked_number("Link poll_seconds", poll_seconds, 0.001, 1.0)
        self.state: LinkState | None = None
        self.taps_dropped = 0  # taps beyond MAX_WAITING_TAPS between two polls
        self._taps: deque[float] = deque(maxlen=MAX_WAITING_TAPS)
        self._tempo_requests: LatestSlot[float] = LatestSlot()
        self._tempo_seq = 0
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._started = threading.Event()  # set once the thread has joined Link, or failed to
        self._running = False  # Link is enabled on the thread

    # -- any thread -------------------------------------------------------------------------------

    @property
    def joined(self) -> bool:
        """True while the thread holds an enabled Link session."""
        return self._running and self._thread is not None and self._thread.is_alive()

    @property
    def peers(self) -> int:
        """Other Link apps on the session, as last read (0 when not joined)."""
        state = self.state
        return state.peers if state is not None and self.joined else 0

    def join(self, bpm: float = DEFAULT_BPM, wait: float = 0.0) -> bool:
        """Start the Link thread with `bpm` as our tempo (a session with peers keeps its own). Returns
        at once unless `wait` > 0 (then up to `wait` seconds, until Link is enabled or has failed);
        the result is `joined`. A missing aalink or a failure is a message, never an exception."""
        bpm = check_bpm(bpm, "Link starting tempo")
        if self._thread is not None and self._thread.is_alive():
            return self.joined
        self._stop_event.clear()
        self._started.clear()
        self._thread = threading.Thread(target=self._thread_main, args=(bpm,), name="soundvj-link", daemon=True)
        self._thread.start()
        if wait > 0:
            self._started.wait(wait)
        return self.joined

    def leave(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Leave the Link session and end the thread (waits up to `timeout` seconds for it)."""
        self._stop_event.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and threading.current_thread() is not thread:
            thread.join(timeout)

    def tap(self, at: float | None = None) -> None:
        """A tempo tap at monotonic time `at` (default now); two taps or more set the session's tempo."""
        if len(self._taps) == self._taps.maxlen:
            self.taps_dropped += 1
        self._taps.append(time.monotonic() if at is None else float(at))

    def set_tempo(self, bpm: float) -> None:
        """Set the session's tempo (every peer follows); a bad number is a one-line `SoundvjError`."""
        self._tempo_requests.put(check_bpm(bpm))

    def status_text(self) -> str:
        """One line for a status bar: "Link 128 BPM, 2 peers", or "Link off"."""
        state = self.state
        if not self.joined or state is None:
            return "Link off"
        return f"Link {format_number(round(state.bpm, 1))} BPM, {_peers_text(state.peers)}"

    def __enter__(self) -> LinkSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.leave()

    # -- the Link thread --------------------------------------------------------------------------

    def _thread_main(self, bpm: float) -> None:
        try:
            asyncio.run(self._run(bpm))
        except Exception as e:  # noqa: BLE001 - Link failing must not end the show
            self.reporter.say(f"Link: {type(e).__name__}: {one_line(e, limit=120)}; playing on without Link")
        finally:
            self._running = False
            self.state = None
            self._started.set()

    async def _run(self, bpm: float) -> None:
        try:
            import aalink
        except ImportError as e:
            self.reporter.say(f"Link unavailable: aalink is not installed ({one_line(e, limit=80)}); "
                              "playing on without Link (pip install aalink)")
            return
        link = aalink.Link(bpm)  # takes this thread's running loop
        link.quantum = QUANTUM
        link.enabled = True
        self._running = True
        self._started.set()
        self.reporter.say(f"Link: joined at {format_number(round(link.tempo, 2))} BPM (quantum {QUANTUM})")
        tap_clock = BeatClock()  # tap tempo only; its beat position is not used
        try:
            while not self._stop_event.is_set():
                try:
                    self._poll_once(link, tap_clock)
                except Exception as e:  # noqa: BLE001 - count, say now and then, keep polling
                    self.reporter.report("link", f"Link: {type(e).__name__}: {one_line(e, limit=120)}")
                await asyncio.sleep(self.poll_seconds)
        finally:
            self._running = False
            link.enabled = False
            self.reporter.say("Link: left the session")

    def _poll_once(self, link: Any, tap_clock: BeatClock) -> None:
        """Send what the performer asked, read the session, say when the peers change, post the state."""
        self._send_tempo(link, tap_clock)
        before = self.state
        state = self._read(link)
        self.state = state
        if state.peers != (before.peers if before is not None else 0):
            self.reporter.say(f"Link: {_peers_text(state.peers)} at {format_number(round(state.bpm, 2))} BPM")
        if self.post is not None:
            self.post(state)

    def _send_tempo(self, link: Any, tap_clock: BeatClock) -> None:
        """Apply what the performer asked since the last poll: taps (their tempo), then a set tempo."""
        wanted = None
        while self._taps:
            tapped = tap_clock.tap(self._taps.popleft())
            if tapped is not None:
                wanted = tapped
        requested, self._tempo_seq = self._tempo_requests.take_new(self._tempo_seq)
        if requested is not None:
            wanted = requested
        if wanted is not None:
            link.tempo = wanted

    def _read(self, link: Any) -> LinkState:
        """The session now; `at` is time.monotonic() halfway through the beat read (see the module docstring)."""
        bpm = float(link.tempo)
        before = time.monotonic()
        beat = float(link.beat)
        after = time.monotonic()
        if not (math.isfinite(bpm) and math.isfinite(beat)):
            raise ValueError(f"Link gave tempo {bpm!r}, beat {beat!r}")
        return LinkState(bpm=bpm, beat=beat, at=0.5 * (before + after), peers=int(link.num_peers))


def _peers_text(peers: int) -> str:
    return "no peers" if peers == 0 else ("1 peer" if peers == 1 else f"{peers} peers")
