"""When the frame pipeline computes the sound embedding, and which embedding each frame uses.

The pretrained embedding costs about 20 ms per window on one core: too much for every frame, and
meaning changes slower than frames. So it runs on a fixed cadence of *key frames*, one every
`period_frames(fps)` frames (`RATE_HZ` a second), and once the stream has played a second each
embedding is used one period later:

    first second       a key frame embeds its window and uses it at once: a fresh stream has
                       little sound in its windows, so every key frame of it counts
    key frame k_j      (after that) embeds its window; until the next key frame, frames use
                       k_(j-1)'s embedding

So after the first second, the embedding of a key window has a whole period to be ready. Live, it
is computed on its own thread (one torch thread) while the render thread synthesises frames; in the
first second the render thread computes it in place, which costs those eight frames about 20 ms
each. Offline (render, replay, evaluation) every embedding is computed in place. Both give every
frame the same embedding, so a set replays as it played. The rule depends only on frame indices,
which `reset` sets back to 0.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable

import torch

# Key frames per second. At 4 the frames of a sound's first second were stale (docs/history.md,
# "Listening through a pretrained embedding"); 8 costs one core about 160 ms a second.
RATE_HZ = 8.0


def period_frames(fps: float) -> int:
    """Frames from one key frame to the next at `fps`: about 1 / RATE_HZ seconds, at least 1."""
    return max(1, round(fps / RATE_HZ))


# Seconds from a stream's start during which key frames use their own embedding at once.
AT_ONCE_SECONDS = 1.0


def at_once_frames(fps: float) -> int:
    """Frames from a stream's start whose key frames answer at once: about `AT_ONCE_SECONDS`."""
    return max(1, round(fps * AT_ONCE_SECONDS))


def embedding_source_frame(frame: int, fps: float) -> int:
    """The key frame whose embedding `frame` uses, for a stream that starts at frame 0 and holds `fps`
    (what `EmbeddingSchedule` does)."""
    period = period_frames(fps)
    key = (frame // period) * period
    return key if key < at_once_frames(fps) else max(0, key - period)


class EmbeddingWorker:
    """One daemon thread computing embeddings of submitted windows with one torch thread."""

    def __init__(self, embed: Callable[[torch.Tensor], torch.Tensor]):
        self._embed = embed
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sound-embedding", daemon=True)
        self._thread.start()

    def submit(self, window: torch.Tensor) -> "queue.Queue[torch.Tensor | BaseException]":
        """Start embedding one window [1, n_mels, W]; the returned queue receives the result."""
        done: queue.Queue = queue.Queue(maxsize=1)
        self._jobs.put((window, done))
        return done

    def close(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        torch.set_num_threads(1)  # per thread: the render thread keeps its own count
        while True:
            job = self._jobs.get()
            if job is None:
                return
            window, done = job
            try:
                with torch.no_grad():
                    done.put(self._embed(window))
            except BaseException as e:  # handed to the frame that needs it, raised there
                done.put(e)


class EmbeddingSchedule:
    """Per-frame sound embeddings following the key-frame rule above."""

    def __init__(self, embed: Callable[[torch.Tensor], torch.Tensor]):
        self._embed = embed
        self._worker: EmbeddingWorker | None = None
        self.reset()

    def reset(self) -> None:
        """Back to frame 0: nothing embedded yet (a pending live job is forgotten)."""
        self._current: torch.Tensor | None = None
        self._pending: torch.Tensor | queue.Queue | None = None
        self._last_key = -1
        self._frame = 0

    def run_in_background(self, enabled: bool) -> None:
        """Live: embed key windows on a worker thread. Offline: embed them in place (the default)."""
        if enabled and self._worker is None:
            self._worker = EmbeddingWorker(self._embed)
        elif not enabled and self._worker is not None:
            self._worker.close()
            self._worker = None

    def close(self) -> None:
        self.run_in_background(False)

    def embeddings(self, windows: torch.Tensor, fps: float) -> torch.Tensor:
        """The embedding each of T consecutive frames uses, [T, D], for their windows [T, n_mels, W];
        advances the frame count by T."""
        period, at_once = period_frames(fps), at_once_frames(fps)
        keys = []  # positions in this batch of the key frames
        for t in range(windows.shape[0]):
            frame = self._frame + t
            if frame == 0 or frame - self._last_key >= period:
                keys.append(t)
                self._last_key = frame
        # Offline, every key window of the batch is embedded in one call.
        batch_embeddings = None
        if self._worker is None and keys:
            batch_embeddings = self._embed(windows[keys])
        out = []
        key_rank = {t: i for i, t in enumerate(keys)}
        for t in range(windows.shape[0]):
            if t in key_rank:
                fresh: torch.Tensor | queue.Queue
                answer_now = self._frame + t < at_once
                if batch_embeddings is not None:
                    fresh = batch_embeddings[key_rank[t] : key_rank[t] + 1]
                elif answer_now:
                    fresh = self._embed(windows[t : t + 1])
                else:
                    fresh = self._worker.submit(windows[t : t + 1].clone())
                self._current = fresh if answer_now else self._resolve(self._pending)
                self._pending = fresh
            out.append(self._current)
        self._frame += windows.shape[0]
        return torch.cat(out)

    @staticmethod
    def _resolve(value: "torch.Tensor | queue.Queue | None") -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            return value
        result = value.get()  # normally ready long before: it had a whole period
        if isinstance(result, BaseException):
            raise result
        return result
