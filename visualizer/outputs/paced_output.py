"""A network output that sends at a constant frame rate: what the stream and NDI senders share.

Receivers (a video mixer, OBS, a hardware switcher) expect a constant frame rate, while the render
thread's rate dips when a frame takes long. So an output keeps its own clock on its own thread: at
every 1/fps of wall time it sends one frame, the newest picture the render thread published, repeated
when none came since (counted as a repeat), scaled to the output's size with the Lanczos-3 scaler of
`core.frame_scaling`. The render thread only drops the picture into a one-slot mailbox and appends
the audio it read to a queue: `feed` returns at once.

When the destination is slow (a congested network, an encoder that cannot keep up) sending blocks the
output's own thread, never the render thread. Once it returns, the slots that went by are skipped
(counted as dropped) and their sound discarded, so the output stays live instead of working off a
backlog.

With sound, the audio the render thread heard goes out beside the pictures, one slot's worth per
frame. A jitter buffer of `JITTER_SLOTS` slots absorbs the render thread's uneven delivery, and the
picture sent with a slot is the newest one whose sound has gone out by then, so picture and sound
are the same moment of the set (the recorder's rule), delayed together by the buffer. When the sound
stops coming (input lost, render stalled) the slots are filled with silence until the buffer is
full again; a backlog beyond `MAX_BACKLOG_SLOTS` (after a stall) is discarded, oldest first.

Subclasses open the destination (`_connect`), send one slot (`_send`), say whether the destination
took frames and whether it still works (`_delivering`, `_problem`) and close it (`_disconnect`), all
on the output's thread. `reconnect()` closes and opens again on that thread. A failure is one line
through `on_message` and the state "failed"; the show goes on.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Callable

import numpy as np

from core.errors import SoundvjError, one_line
from core.frame_scaling import scale_rgb_to_cover
from visualizer.mailbox import LatestSlot
from visualizer.render_worker import PublishedFrame

MAX_LAG_SECONDS = 0.25  # behind the clock by more than this after a slow send: skip, do not catch up
JITTER_SLOTS = 2  # sound buffered before it goes out: absorbs the render thread's uneven delivery
MAX_BACKLOG_SLOTS = JITTER_SLOTS + 4  # sound queued beyond this (after a stall) is discarded
HISTORY_SECONDS = 1.0  # pictures kept to pair with their sound (only while sending sound)
STALL_SECONDS = 1.0  # no slot sent for this long while live: the status says the output is stuck
QUEUED_SOUND_SECONDS = 2.0  # sound chunks kept while sending is stuck or failed (later ones are dropped)


class PacedOutput:
    """Send the render worker's frames (and optionally its sound) at a constant `fps`, scaled to
    `width` x `height`; see the module docstring. `sample_rate=None`: pictures only.

    States: "starting" (opening, or open and no frame taken yet) -> "live" -> "failed" (`error`
    says why; `reconnect()` tries again) or "stopped".
    """

    kind = "output"  # how messages name this kind of output, e.g. "stream", "NDI"

    def __init__(self, label: str, fps: float, width: int, height: int, sample_rate: int | None = None,
                 on_message: Callable[[str], None] | None = None) -> None:
        if not (math.isfinite(fps) and fps > 0):
            raise SoundvjError(f"{label}: frame rate {fps!r}: expected a positive number")
        self.label = label
        self.fps = float(fps)
        self.width, self.height = int(width), int(height)
        self.sample_rate = None if sample_rate is None else int(sample_rate)
        self.on_message = on_message
        self.state = "starting"
        self.error: str | None = None
        self.frames_sent = 0  # slots sent, repeats included
        self.frames_repeated = 0  # slots that sent the same picture again (the render rate dipped)
        self.frames_dropped = 0  # slots skipped because sending was too slow (network, encoder)
        self.silence_samples = 0  # samples of silence sent where the sound did not arrive in time
        self.discarded_samples = 0  # samples of sound dropped (a backlog after a stall)
        self.connects = 0
        self._frames: LatestSlot[tuple[np.ndarray, int]] = LatestSlot()
        self._audio: deque[tuple[np.ndarray, int]] = deque()  # (chunk, position of its first sample)
        self._max_chunks = max(8, int(QUEUED_SOUND_SECONDS * self.fps))  # the render thread feeds one a frame
        self._fed_samples = 0  # written by the render thread only
        self._consumed = 0  # sound samples sent or discarded: the position in what the render thread fed
        self._primed = False  # the jitter buffer is full and sound goes out
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._reconnect = threading.Event()
        self._last_sent_at = math.nan
        self.started_at = math.nan  # time.monotonic() when this connection's first frame went out
        self._thread = threading.Thread(target=self._run, name=f"soundvj-{self.kind.lower()}", daemon=True)

    def start(self) -> PacedOutput:
        """Start the output's thread (it opens the destination); returns self."""
        self._thread.start()
        return self

    # -- render thread ----------------------------------------------------------------------------

    def feed(self, frame: PublishedFrame, audio: np.ndarray) -> None:
        """Take the newest frame and the sound heard since the previous call; returns at once."""
        if self._stopping.is_set():
            return
        if self.sample_rate is not None and audio.size:
            if len(self._audio) < self._max_chunks:  # else sending is stuck or failed: drop, do not hoard
                self._audio.append((audio, self._fed_samples))  # a private copy already (SampleRing.read_new)
            self._fed_samples += audio.size
        self._frames.put((frame.image, self._fed_samples))
        self._wake.set()

    # -- any thread -------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """True while the output is starting or live (not failed, not stopped)."""
        return self.state in ("starting", "live")

    @property
    def queued_sound_seconds(self) -> float:
        """Sound fed and not yet sent, in seconds (0 without sound)."""
        if self.sample_rate is None:
            return 0.0
        return sum(chunk.size for chunk, _ in list(self._audio)) / self.sample_rate

    @property
    def stalled_seconds(self) -> float:
        """Seconds since the last frame went out, while live (0 if sending goes on normally)."""
        if self.state != "live" or math.isnan(self._last_sent_at):
            return 0.0
        idle = time.monotonic() - self._last_sent_at
        return idle if idle > STALL_SECONDS else 0.0

    def status_text(self) -> str:
        """One short line for the status bar: the state and the counts."""
        if self.state == "failed":
            return f"{self.kind} failed"
        if self.state == "stopped":
            return f"{self.kind} off"
        counts = f"{self.frames_sent} sent, {self.frames_repeated} repeated, {self.frames_dropped} dropped"
        stalled = self.stalled_seconds
        if stalled:
            return f"{self.kind} stuck {stalled:.0f} s ({counts})"
        return f"{self.kind} {self.state} ({counts})"

    def wait_live(self, timeout: float) -> bool:
        """Wait up to `timeout` s for the output to go live; False if it failed or did not in time."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.state == "starting":
            time.sleep(0.02)
        return self.state == "live"

    def reconnect(self) -> None:
        """Close the destination and open it again, on the output's thread (returns at once)."""
        if not self._stopping.is_set():
            self._reconnect.set()
            self._wake.set()
            self._interrupt()  # a send stuck on a dead destination would never see the request

    def stop(self, wait: bool = True, timeout: float = 5.0) -> None:
        """End the output: close the destination (an encoder flushes, a connection closes) and wait up
        to `timeout` s for the thread; `wait=False` returns at once and ends it on a helper thread."""
        self._stopping.set()
        self._wake.set()
        if not wait:
            threading.Thread(target=self.stop, name=f"soundvj-{self.kind.lower()}-stop", daemon=True).start()
            return
        if not self._thread.is_alive() or threading.current_thread() is self._thread:
            return
        self._thread.join(min(timeout, 1.0))
        if self._thread.is_alive():
            self._interrupt()  # a send blocked on a stuck destination returns once it is cut off
            self._thread.join(timeout)

    # -- what a destination implements (all on the output's thread but `_interrupt`) ---------------

    def _connect(self) -> None:
        """Open the destination; a problem is a SoundvjError (one line)."""
        raise NotImplementedError

    def _send(self, image: np.ndarray, audio: np.ndarray | None) -> None:
        """Send one slot: uint8 RGB [height, width, 3] and its sound (float32 mono) or None. May block
        while the destination is slow; a failure raises (SoundvjError or OSError)."""
        raise NotImplementedError

    def _delivering(self) -> bool:
        """True once the destination has taken frames (an encoder wrote them out, a receiver connected)."""
        return True

    def _problem(self) -> str | None:
        """Why the destination stopped working (one line), or None while it works."""
        return None

    def _explain_failure(self) -> str | None:
        """After a send raised: what the destination says went wrong (it may take a moment to say)."""
        return self._problem()

    def _disconnect(self) -> None:
        """Close the destination (never raises; called even after a failed `_connect`)."""

    def _interrupt(self) -> None:
        """From any thread: make a `_send` that blocks forever return (e.g. end the encoder process)."""

    # -- the output's thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._reconnect.clear()
                self._set_state("starting")
                try:
                    self.connects += 1
                    self._connect()
                    self._play()
                except SoundvjError as e:
                    self._fail(str(e))
                except (OSError, ValueError, RuntimeError) as e:
                    self._fail(self._explain_failure() or f"{self.label}: {one_line(e)}")
                except Exception as e:  # noqa: BLE001 - the show goes on; the performer reads the message
                    self._fail(f"{self.label}: {type(e).__name__}: {one_line(e)}")
                finally:
                    self._disconnect()
                while not (self._stopping.is_set() or self._reconnect.is_set()):
                    self._wake.wait(0.5)
                    self._wake.clear()
        finally:
            if self.state != "failed":
                self.state = "stopped"

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        if state == "starting":
            self.error = None
        elif state == "live" and self.on_message:
            self.on_message(f"{self.label}: live ({self.width}x{self.height}, {self.fps:g} fps"
                            f"{', with sound' if self.sample_rate else ''})")

    def _fail(self, message: str) -> None:
        if self._stopping.is_set():
            return  # ending on purpose: whatever the destination says now is no news
        if self._reconnect.is_set():
            return  # cut off to reconnect: the next attempt says how it went
        self.error = one_line(message)
        self.state = "failed"
        if self.on_message:
            self.on_message(self.error)

    def _play(self) -> None:
        """Send slots at the frame rate until stopped, asked to reconnect or failed (raises)."""
        period = 1.0 / self.fps
        history: deque[tuple[np.ndarray, int]] = deque(maxlen=max(4, int(HISTORY_SECONDS * self.fps)))
        frame_seq = 0
        started: float | None = None
        slot = 0
        previous: np.ndarray | None = None
        scaled: np.ndarray | None = None
        self._primed = False
        self._audio.clear()  # sound from before this connection is stale
        while not (self._stopping.is_set() or self._reconnect.is_set()):
            taken, frame_seq = self._frames.take_new(frame_seq)
            if taken is not None:
                history.append(taken)
            if started is None:
                if not history:
                    self._wait(0.1)
                    continue
                started = time.monotonic()
                self._consumed = self._audio[0][1] if self._audio else history[0][1]
            due = math.floor((time.monotonic() - started) / period)
            if due < slot:
                self._wait(started + slot * period - time.monotonic())
                continue
            if due - slot > MAX_LAG_SECONDS * self.fps:  # a slow send: skip the slots that went by
                self.frames_dropped += due - slot
                slot = due
            audio = self._slot_audio(slot) if self.sample_rate is not None else None
            picture = self._slot_picture(history)
            if picture is previous:
                self.frames_repeated += 1
            else:
                scaled = scale_rgb_to_cover(picture, self.width, self.height)
                previous = picture
            self._send(scaled, audio)
            self.frames_sent += 1
            self._last_sent_at = time.monotonic()
            if slot == 0:  # the clock starts when the destination took its first frame (an encoder starting
                started = self.started_at = self._last_sent_at  # up is not a slow network)
            slot += 1
            problem = self._problem()
            if problem is not None:
                raise SoundvjError(problem)
            if self.state == "starting" and self._delivering():
                self._set_state("live")

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._wake.wait(seconds)
        self._wake.clear()

    def _slot_picture(self, history: deque[tuple[np.ndarray, int]]) -> np.ndarray:
        """Pictures only: the newest. With sound: the newest whose sound has gone out (the oldest kept
        if none has yet); older pictures are forgotten."""
        if self.sample_rate is None:
            image = history[-1][0]
            history.clear()
            history.append((image, 0))
            return image
        while len(history) > 1 and history[1][1] <= self._consumed:
            history.popleft()
        return history[0][0]

    def _slot_audio(self, slot: int) -> np.ndarray:
        """The sound for `slot`: exactly its share of samples (round((slot + 1) sr / fps) - round(slot sr / fps))."""
        sr = self.sample_rate
        need = round((slot + 1) * sr / self.fps) - round(slot * sr / self.fps)
        queued = sum(chunk.size for chunk, _ in self._audio)
        per_slot = sr / self.fps
        if queued > MAX_BACKLOG_SLOTS * per_slot:  # after a stall: keep the newest, go on from there
            self.discarded_samples += self._take(queued - int(JITTER_SLOTS * per_slot)).size
            queued = sum(chunk.size for chunk, _ in self._audio)
        if not self._primed:
            if queued < JITTER_SLOTS * per_slot:  # (re)filling the jitter buffer: silence meanwhile
                self.silence_samples += need
                return np.zeros(need, np.float32)
            self._primed = True
        out = self._take(need)
        if out.size < need:  # the sound ran out: fill with silence and let the buffer refill
            self.silence_samples += need - out.size
            self._primed = False
            out = np.concatenate([out, np.zeros(need - out.size, np.float32)])
        return out

    def _take(self, count: int) -> np.ndarray:
        """Up to `count` samples from the front of the sound queue."""
        parts, got = [], 0
        while self._audio and got < count:
            chunk, first = self._audio.popleft()
            keep = count - got
            if chunk.size > keep:
                self._audio.appendleft((chunk[keep:], first + keep))
                chunk = chunk[:keep]
            parts.append(chunk)
            got += chunk.size
            self._consumed = first + chunk.size
        return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)
