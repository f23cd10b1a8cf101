"""A frame sink that writes one file on a thread of its own: what the recorder and the set logger share.

The render thread's `feed` only queues and wakes (`_accepting` says whether to take anything); the
sink's thread wakes at least every 0.1 s, drains what was queued, and ends when `stop` is called or
the sink has taken all it may (`_reached_max`). Then it finishes the file, or on any error says one
line (`_failure_message`) and leaves no half-written file. `on_done` is called on the sink's thread
either way, so the show goes on whatever the disk does.
"""

from __future__ import annotations

import threading
from typing import Any, Callable


class FileSink:
    """Start, stop and the loop of a file-writing frame sink. Subclasses open the file (`_open`), write
    what `feed` queued (`_drain`), finish it (`_finish`), fail (`_fail`) and clean up (`_close`).

    States: `running_state` (e.g. "recording") -> "finished" or "failed" (with `error` set)."""

    stop_timeout = 30.0  # seconds `stop(wait=True)` waits for the file to be finished

    def __init__(self, thread_name: str, running_state: str,
                 on_done: Callable[[Any], None] | None = None) -> None:
        self.on_done = on_done
        self.state = running_state
        self.error: str | None = None
        self._running_state = running_state
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def _start_thread(self) -> None:
        """Start the sink's thread (the subclass calls it at the end of its set-up)."""
        self._thread.start()

    # -- render thread ----------------------------------------------------------------------------

    def _accepting(self) -> bool:
        """True while `feed` should queue what it gets."""
        return self.state == self._running_state and not self._stopping.is_set()

    # -- any thread -------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """True while the sink takes frames."""
        return self.state == self._running_state

    def stop(self, wait: bool = True, timeout: float | None = None) -> None:
        """Finish: write what was fed, then close the file (atomically renamed into place); `wait` up
        to `timeout` seconds (default `stop_timeout`) for it."""
        self._stopping.set()
        self._wake.set()
        if wait and threading.current_thread() is not self._thread:
            self._thread.join(self.stop_timeout if timeout is None else timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the sink's thread to end; True if it did within `timeout`."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the sink's thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._open()
            while True:
                self._wake.wait(0.1)
                self._wake.clear()
                stopping = self._stopping.is_set()
                self._drain()
                if stopping or self._reached_max():
                    break
            self._finish()
        except Exception as e:  # noqa: BLE001 - the show goes on; the performer reads the message
            self._fail(self._failure_message(e))
        finally:
            self._close()
        if self.on_done:
            self.on_done(self)

    def _open(self) -> None:
        raise NotImplementedError

    def _drain(self) -> None:
        raise NotImplementedError

    def _reached_max(self) -> bool:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def _failure_message(self, error: Exception) -> str:
        raise NotImplementedError

    def _fail(self, message: str) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        """Release what is still open after finishing or failing (nothing, unless a subclass has some)."""
