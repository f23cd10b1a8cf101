"""Latest-value mailboxes: the only way threads hand each other frames, parameters and status.

A `LatestSlot` holds one value. `put` overwrites whatever is there (a reader that fell behind never
sees stale work, and nothing queues up); `take` returns the newest value with its sequence number, so a
reader can tell "new since I last looked" without consuming it from other readers. The lock guards two
reference assignments only, never a computation, so no thread ever waits on another's work.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """One-value mailbox: writers overwrite, readers see the newest value and its sequence number."""

    def __init__(self, initial: T | None = None) -> None:
        self._lock = threading.Lock()
        self._value = initial
        self._seq = 0 if initial is None else 1
        self.overwritten = 0  # values replaced before anyone took them (dropped, by design)
        self._taken_seq = 0

    def put(self, value: T) -> int:
        """Store `value` (overwriting the one there); returns its sequence number."""
        with self._lock:
            if self._seq > self._taken_seq and self._value is not None:
                self.overwritten += 1
            self._value = value
            self._seq += 1
            return self._seq

    def peek(self) -> tuple[T | None, int]:
        """(newest value, its sequence number); (None, 0) before the first put."""
        with self._lock:
            return self._value, self._seq

    def take_new(self, last_seq: int) -> tuple[T | None, int]:
        """The newest value if it is newer than `last_seq`, else (None, last_seq)."""
        with self._lock:
            if self._seq <= last_seq:
                return None, last_seq
            self._taken_seq = self._seq
            return self._value, self._seq
