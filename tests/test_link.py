"""Ableton Link (`visualizer.control.link.LinkSync`) with real Link peers in two processes.

Link multicasts on every network interface, so nothing here starts Link in the test run's own
network. `test_two_processes_share_tempo_and_phase` re-runs this file's `inner` tests under
`unshare -n` (a new network namespace, as root) after `ip link set lo up` and a multicast route on
`lo`; the inner tests check again that the process sees no interface but `lo` before they start
Link, and the peer process (`tests/link_peer.py`, plain aalink) checks too. Without aalink, without
permission for `unshare -n`, or without `ip`, the test skips and says why.

The live session's wiring (`soundvj live --link`: ControlConfig.link, the render worker's
`set_link_state`) is tested too once the session has it; until then that test skips and says so.

The tests that need no Link session (a bad tempo, a missing aalink) run directly.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pytest

from core.control import BeatClock
from core.errors import SoundvjError
from core.params import Params
from tests.loopback_namespace import ROOT, inner_only, namespace_problem, only_loopback, run_inner_tests
from visualizer.control.config import ControlConfig
from visualizer.control.link import QUANTUM, LinkState, LinkSync
from visualizer.render_worker import RenderWorker

INSIDE = "SOUNDVJ_TEST_LINK_NAMESPACE"  # set for the re-run inside the loopback-only namespace
SHARE_LIMIT_S = 1.0  # a tempo change must reach the other process within this
PHASE_TOLERANCE_BEATS = 0.02  # 10 ms at 120 BPM
BPM_TOLERANCE = 0.01  # Link keeps a tempo as whole microseconds per beat: 137.5 reads 137.49989


inner = inner_only(INSIDE, "test_two_processes_share_tempo_and_phase")


# -- without a Link session --------------------------------------------------------------------------

def test_set_tempo_refuses_what_is_not_a_tempo():
    """A tempo from a control that is NaN, a string or out of range is a one-line error, and nothing is sent."""
    sync = LinkSync()
    for bad in (math.nan, math.inf, "fast", 0, 1000, True):
        with pytest.raises(SoundvjError) as e:
            sync.set_tempo(bad)  # type: ignore[arg-type]
        assert "\n" not in str(e.value) and str(e.value).startswith("Link tempo = ")
    assert not sync.joined and sync.status_text() == "Link off"


def test_missing_aalink_is_one_message_and_no_exception(monkeypatch):
    """Without aalink, join() returns False with one line saying so; taps and tempos are harmless."""
    monkeypatch.setitem(sys.modules, "aalink", None)  # import aalink raises ImportError
    messages: list[str] = []
    sync = LinkSync(on_message=messages.append)
    assert sync.join(120.0, wait=5.0) is False
    sync.tap()
    sync.set_tempo(100.0)
    sync.leave()
    assert not sync.joined and sync.peers == 0
    assert len(messages) == 1 and "aalink is not installed" in messages[0] and "\n" not in messages[0]


def test_link_state_extrapolates_on_its_tempo():
    """`LinkState.beat_at` runs the beat on at the state's tempo; phases are within the beat and the bar."""
    state = LinkState(bpm=120.0, beat=7.5, at=100.0, peers=1)
    assert state.beat_at(101.0) == pytest.approx(9.5)
    assert state.phase == pytest.approx(0.5) and state.bar_phase == pytest.approx(3.5 / QUANTUM)


# -- two processes in a loopback-only namespace ------------------------------------------------------

def test_two_processes_share_tempo_and_phase():
    """Re-runs the `inner` tests in a new network namespace with only `lo` up, so Link's multicast
    never leaves this process tree: two processes share tempo changes within 1 s and stay in phase."""
    problem = namespace_problem("aalink", "the live extra")
    if problem:
        pytest.skip(f"needs a loopback-only network namespace: {problem}")
    run_inner_tests("tests/test_link.py", INSIDE)  # every inner test runs, the live session's included


class LinkPeer:
    """`tests/link_peer.py` in its own process (in the same namespace): another Link app."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "link_peer.py")], cwd=ROOT,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, bufsize=1)
        assert self.read() == {"ready": True}

    def read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"link peer ended: {self.process.stderr.read()[-1000:]}")
        return json.loads(line)

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.read()

    def state(self) -> LinkState:
        s = self.ask("state")
        return LinkState(bpm=s["bpm"], beat=s["beat"], at=s["at"], peers=s["peers"])

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                os.kill(self.process.pid, 9)
                self.process.wait(5)


def wait_for(condition, timeout: float, step: float = 0.005) -> float | None:
    """Seconds until `condition()` held, or None if it did not within `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(step)
    return None


def bar_offset(ours: float, theirs: float) -> float:
    """How far apart two beat positions are within the bar, in beats, in [-QUANTUM/2, QUANTUM/2)."""
    return (ours - theirs + QUANTUM / 2) % QUANTUM - QUANTUM / 2


@pytest.fixture
def linked():
    """A LinkSync in this process, feeding a BeatClock as the render worker does, and a peer process;
    both joined and seeing each other."""
    assert only_loopback(), "Link must only run inside a loopback-only network namespace"
    clock = BeatClock()

    def follow(state: LinkState) -> None:  # what the render worker does between frames (monotonic timebase)
        clock.set_tempo(state.bpm, state.at, state.beat)

    messages: list[str] = []
    sync = LinkSync(post=follow, on_message=messages.append)
    peer = LinkPeer()
    try:
        assert sync.join(120.0, wait=5.0), messages
        seen = wait_for(lambda: sync.peers == 1 and peer.state().peers == 1, timeout=15.0, step=0.05)
        assert seen is not None, f"the peers never saw each other: {messages}"
        yield sync, peer, clock, messages
    finally:
        peer.stop()
        sync.leave()


@inner
def test_inner_tempo_changes_cross_both_ways_within_a_second(linked):
    """The peer's tempo reaches our beat clock, and ours (set, then tapped) reaches the peer, each within 1 s."""
    sync, peer, clock, messages = linked
    peer.ask("tempo 137.5")
    took = wait_for(lambda: abs(clock.bpm - 137.5) < BPM_TOLERANCE, SHARE_LIMIT_S)
    assert took is not None, f"our clock stayed at {clock.bpm} BPM"
    assert clock.tempo_source == "external"

    sync.set_tempo(91.0)
    took = wait_for(lambda: abs(peer.state().bpm - 91.0) < BPM_TOLERANCE, SHARE_LIMIT_S)
    assert took is not None, f"the peer stayed at {peer.state().bpm} BPM"

    now = time.monotonic()
    for k in range(4):  # four taps half a second apart: 120 BPM
        sync.tap(now - 1.5 + 0.5 * k)
    took = wait_for(lambda: abs(peer.state().bpm - 120.0) < BPM_TOLERANCE, SHARE_LIMIT_S)
    assert took is not None, f"the taps did not reach the peer ({peer.state().bpm} BPM)"
    assert wait_for(lambda: abs(clock.bpm - 120.0) < BPM_TOLERANCE, SHARE_LIMIT_S) is not None
    assert any("1 peer" in m for m in messages), messages


@inner
def test_inner_phase_stays_aligned_across_a_tempo_change(linked):
    """After the peer changes tempo, our beat clock's position within the bar matches the peer's."""
    sync, peer, clock, _ = linked
    peer.ask("tempo 128")
    assert wait_for(lambda: abs(clock.bpm - 128.0) < BPM_TOLERANCE, SHARE_LIMIT_S) is not None
    time.sleep(0.3)
    worst = 0.0
    for _ in range(10):
        theirs = peer.state()
        worst = max(worst, abs(bar_offset(clock.beat_at(theirs.at), theirs.beat)))
        ours = sync.state
        worst = max(worst, abs(bar_offset(ours.beat_at(theirs.at), theirs.beat)))
        time.sleep(0.05)
    assert worst < PHASE_TOLERANCE_BEATS, f"out of phase by {worst:.4f} beats"


@inner
def test_inner_a_failing_receiver_is_counted_and_leave_ends_the_session(linked):
    """A `post` that raises is a counted message and Link plays on; after leave() we are off Link
    and the peer is alone."""
    sync, peer, _, messages = linked
    good = sync.post
    calls = {"n": 0}

    def broken(state: LinkState) -> None:
        calls["n"] += 1
        if calls["n"] <= 3:
            raise RuntimeError("receiver broke")
        good(state)

    sync.post = broken
    assert wait_for(lambda: calls["n"] > 5, 2.0) is not None
    assert sync.reporter.counts.get("link") == 3 and sync.joined
    assert any("receiver broke" in m and "\n" not in m for m in messages), messages
    sync.leave()
    assert not sync.joined and sync.status_text() == "Link off"
    assert wait_for(lambda: peer.state().peers == 0, 15.0, step=0.1) is not None
    assert messages[-1] == "Link: left the session"


SESSION_HAS_LINK = "link" in ControlConfig.__dataclass_fields__ and hasattr(RenderWorker, "set_link_state")


@inner
@pytest.mark.skipif(not SESSION_HAS_LINK, reason="the live session has no Link wiring yet (ControlConfig.link, "
                                                 "RenderWorker.set_link_state)")
def test_inner_a_live_session_with_link_follows_and_leads_the_peer():
    """`LiveSession(control=ControlConfig(link=True))`: the peer's tempo reaches the frames' status as an
    external tempo, the session's taps reach the peer, and stopping the session leaves Link."""
    from tests.pipeline_helpers import tiny_model
    from visualizer.session import LiveSession

    assert only_loopback(), "Link must only run inside a loopback-only network namespace"
    messages: list[str] = []
    session = LiveSession(tiny_model(), Params(fps=24), control=ControlConfig(link=True), on_message=messages.append)
    peer = LinkPeer()
    try:
        session.start_control()
        session.worker.start()
        assert wait_for(lambda: session.link.peers == 1, 15.0, step=0.05) is not None, messages

        def shown_tempo() -> tuple[float, str]:
            status, _ = session.worker.status.peek()
            return (status.bpm, status.tempo_source) if status is not None else (math.nan, "")

        peer.ask("tempo 133")
        frame_limit = SHARE_LIMIT_S + 2.0 / 24  # Link's share, then the next frame
        reached = wait_for(lambda: abs(shown_tempo()[0] - 133.0) < BPM_TOLERANCE, frame_limit)
        assert reached is not None, f"the frames show {shown_tempo()}"
        assert shown_tempo()[1] == "external"

        now = time.monotonic()
        for k in range(4):  # a tap pad or key T: 120 BPM
            session.tap(now - 1.5 + 0.5 * k)
        took = wait_for(lambda: abs(peer.state().bpm - 120.0) < BPM_TOLERANCE, SHARE_LIMIT_S)
        assert took is not None, f"the taps did not reach the peer ({peer.state().bpm} BPM)"
        assert wait_for(lambda: abs(shown_tempo()[0] - 120.0) < BPM_TOLERANCE, frame_limit) is not None
    finally:
        session.stop()
        peer_alone = wait_for(lambda: peer.state().peers == 0, 15.0, step=0.1)
        peer.stop()
    assert session.link is None and peer_alone is not None
    assert "Link: left the session" in messages
