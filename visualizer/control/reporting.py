"""Counted, rate-limited problem messages for the control threads (OSC, MIDI, the dispatcher).

Bad input on a control thread must neither raise nor flood the performer's message line: a lighting
desk that sends NaN forty times a second should give one line now and then, with how many there were.
`RateLimitedReporter.report(kind, text)` counts every problem by kind and passes on the first of a
kind at once, then at most one per `interval` seconds with the number left unsaid since; `say(text)`
passes a state change on at once. Messages go to `on_message` (e.g. `LiveSession.message`), whose own
failure is swallowed, so reporting can never end the thread that reports.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

MESSAGE_INTERVAL_S = 5.0


class RateLimitedReporter:
    """Counts problems by kind; passes at most one message per kind per `interval` seconds."""

    def __init__(self, on_message: Callable[[str], Any] | None, interval: float = MESSAGE_INTERVAL_S) -> None:
        self.on_message = on_message
        self.interval = interval
        self.counts: dict[str, int] = {}  # every problem so far, by kind
        self._said_at: dict[str, float] = {}  # kind -> when its last message went out
        self._unsaid: dict[str, int] = {}  # kind -> problems counted since its last message
        self._lock = threading.Lock()  # guards the three dicts; never held while a message is passed on

    def report(self, kind: str, text: str | Callable[[], str]) -> None:
        """Count a problem of `kind`; pass `text` on unless one of that kind went out under `interval` ago.

        `text` may be a function making the text, for messages that cost something to word (a
        suggestion of the closest name): under a flood it runs once per message that goes out."""
        now = time.monotonic()
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            said_at = self._said_at.get(kind)
            if said_at is not None and now - said_at < self.interval:
                self._unsaid[kind] = self._unsaid.get(kind, 0) + 1
                return
            unsaid = self._unsaid.pop(kind, 0)
            self._said_at[kind] = now
        if callable(text):
            text = text()
        self.say(f"{text} (and {unsaid} more like it)" if unsaid else text)

    def total(self) -> int:
        """All problems counted so far."""
        with self._lock:
            return sum(self.counts.values())

    def say(self, text: str) -> None:
        """Pass `text` on now (not counted, not limited)."""
        if self.on_message is None:
            return
        try:
            self.on_message(text)
        except Exception:  # noqa: BLE001 - a broken message sink must not end a control thread
            pass
