"""A frame sink that does its work on a thread of its own.

The render worker calls every sink's `feed` after each frame and must never wait: `feed` only stores
what the sink needs and wakes the thread, which does the slow part (a network send, a control action)
in `_drain`. OSC out and the modulator bindings are such sinks.
"""

from __future__ import annotations

import threading
from typing import Any


class SinkThread:
    """Start/stop of the sink's thread; subclasses keep what `feed` gives them and do the work in
    `_drain`, called after each wake-up (at least every `poll_seconds`) until `stop`."""

    def __init__(self, name: str, poll_seconds: float = 0.5) -> None:
        self._name = name
        self._poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread (work still waiting is dropped)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._thread = None

    @property
    def stopping(self) -> bool:
        """True once `stop` was called: `_drain` should return soon."""
        return self._stop.is_set()

    def wake(self) -> None:
        """Wake the thread (from `feed`; returns at once)."""
        self._wake.set()

    def feed(self, frame: Any, audio: Any) -> None:  # pragma: no cover - each sink defines its own
        raise NotImplementedError

    def _drain(self) -> None:  # pragma: no cover - each sink defines its own
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._poll_seconds)
            self._wake.clear()
            if not self._stop.is_set():
                self._drain()
