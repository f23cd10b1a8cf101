"""Keeping a set log while playing: the sound the render thread heard and every change it took.

A frame sink beside the recorder. `feed` (render thread) appends the frame's events, its sound and
the show's state to a deque and returns; nothing else happens on the render thread. The logger's own
thread turns the events into timeline lines (`core.set_log.TimelineEncoder`: only what changed, so a
two-hour set's timeline stays in kB) and encodes the sound as it comes (`core.audio_writer`), both to
hidden temp files beside the set log, so memory stays flat however long the set runs. `stop` puts
them together into the set log file, which appears under its name only when complete
(`core.set_log.write_set_file`, atomic). The model file's SHA-256 is computed here too, never on
the render thread.

The first frame fed is where the set starts: its state (the look, a crossfade under way, the
modulations, the beat clock, the model) goes into set.json, and the changes it took are part of
that state. From then on each frame's changes are logged at the audio time of the frame's end: the
samples fed so far / the sample rate.

A write error (a full disk) stops the log with a one-line message and removes its temp files; the
show goes on either way. A set log is whole or absent: there is no partial one.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import Callable, TextIO

import numpy as np

from core.atomic_write import temp_path_beside
from core.audio_writer import AudioWriter, check_codec
from core.errors import SoundvjError, one_line
from core.model import SoundvjModel
from core.set_log import SUFFIX, ModelIdentity, SetMeta, SetStart, TimelineEncoder, write_set_file
from core.show_control import ShowEvent, ShowState
from core.video_writer import check_output_path
from visualizer.file_sink import FileSink
from visualizer.render_worker import PublishedFrame


def check_set_log_path(path: str | os.PathLike) -> Path:
    """Fail fast if `path` cannot become a set log (wrong suffix, no such folder, not writable)."""
    return check_output_path(path, suffixes=(SUFFIX,))


def set_log_path_beside(recording: str | os.PathLike) -> Path:
    """The set log that goes with a recording: the same name with the set log's suffix."""
    return Path(recording).with_suffix(SUFFIX)


class SetLogger(FileSink):
    """Log the frames the render worker feeds to the set log at `path` (see the module docstring).

    States: "logging" -> "finished" (stop() or max_seconds reached) or "failed" (error set).
    `dropped`: reads the render worker's count of skipped deadlines (kept in the set log's meta).
    """

    stop_timeout = 120.0  # putting a long set's sound into the set log file takes a while

    def __init__(
        self,
        path: str | os.PathLike,
        sample_rate: int,
        codec: str = "flac",
        max_seconds: float | None = None,
        on_done: Callable[["SetLogger"], None] | None = None,
        dropped: Callable[[], int] | None = None,
    ) -> None:
        self.path = check_set_log_path(path)
        super().__init__("soundvj-set-log", "logging", on_done)
        self.sample_rate = int(sample_rate)
        self.codec = codec
        self.max_samples = None if max_seconds is None else int(round(max_seconds * sample_rate))
        self.samples_logged = 0
        self.events_logged = 0
        self.frames_seen = 0
        self._dropped = dropped
        self._dropped_at_start = dropped() if dropped else 0
        self._queue: deque[tuple[tuple[ShowEvent, ...], np.ndarray, ShowState | None]] = deque()
        self._start: SetStart | None = None
        self._encoder: TimelineEncoder | None = None
        self._identities: dict[int, ModelIdentity] = {}
        self._timeline: TextIO | None = None
        self._sound: AudioWriter | None = None
        self._temp: list[Path] = []
        check_codec(codec)
        self._timeline_path: Path | None = None
        self._sound_path: Path | None = None
        self._start_thread()

    # -- render thread ----------------------------------------------------------------------------

    def feed(self, frame: PublishedFrame, audio: np.ndarray) -> None:
        """Take a frame's changes, its sound and the show's state; returns at once."""
        if not self._accepting():
            return
        self._queue.append((frame.events, audio, frame.show))
        self._wake.set()

    # -- any thread -------------------------------------------------------------------------------

    @property
    def seconds(self) -> float:
        """Seconds of sound logged so far."""
        return self.samples_logged / self.sample_rate

    # -- logger thread ----------------------------------------------------------------------------

    def _open(self) -> None:
        self._timeline_path = self._temp_file(".timeline.partial")
        self._sound_path = self._temp_file(".sound.partial")
        self._timeline = open(self._timeline_path, "w", encoding="utf-8")
        self._sound = AudioWriter(self._sound_path, self.sample_rate, self.codec)

    def _failure_message(self, error: Exception) -> str:
        detail = str(error) if isinstance(error, SoundvjError) else f"{type(error).__name__}: {one_line(error)}"
        return f"{self.path}: set log stopped: {detail}"

    def _temp_file(self, suffix: str) -> Path:
        path = temp_path_beside(self.path, suffix)
        self._temp.append(path)
        return path

    def _reached_max(self) -> bool:
        return self.max_samples is not None and self.samples_logged >= self.max_samples

    def _drain(self) -> None:
        while self._queue and not self._reached_max():
            events, audio, state = self._queue.popleft()
            if self.max_samples is not None:
                audio = audio[: max(0, self.max_samples - self.samples_logged)]
            if audio.size:
                self._sound.write(audio)
                self.samples_logged += audio.size
            self.frames_seen += 1
            t = self.samples_logged / self.sample_rate  # the end of this frame's sound
            if self._start is None:
                if state is None:  # a worker's frames always carry it; anything else starts nothing
                    continue
                # The set starts here; this frame's changes are part of its state already.
                self._start = SetStart.from_state(state, t, self._identify(state.model))
                self._encoder = TimelineEncoder(self._start.params, self._identify)
                continue
            for event in events:
                line = self._encoder.line(t, event)
                if line is not None:
                    self._timeline.write(line + "\n")
                    self.events_logged += 1
        if self._reached_max():
            self._queue.clear()

    def _identify(self, model: SoundvjModel) -> ModelIdentity:
        key = id(model)
        if key not in self._identities:
            self._identities[key] = ModelIdentity.of(model)
        return self._identities[key]

    def _finish(self) -> None:
        self._sound.close()
        self._timeline.close()
        if self._start is None or self.samples_logged == 0:
            self._fail(f"{self.path}: nothing to keep (no sound was heard while the set log ran)")
            return
        dropped = (self._dropped() - self._dropped_at_start) if self._dropped else 0
        meta = SetMeta(
            sample_rate=self.sample_rate, start=self._start, sound_codec=self.codec,
            sound_samples=self.samples_logged, events=self.events_logged,
            live_frames=self.frames_seen, live_dropped=max(0, dropped),
        )
        write_set_file(self.path, meta, self._timeline_path, self._sound_path)
        self.state = "finished"

    def _close(self) -> None:
        """Close the temp files (already finished ones too: closing twice is harmless) and remove them."""
        if self._timeline is not None and not self._timeline.closed:
            self._timeline.close()
        if self._sound is not None:
            self._sound.abort()
        for temp in self._temp:
            temp.unlink(missing_ok=True)

    def _fail(self, message: str) -> None:
        self.error = message
        self.state = "failed"
        self._queue.clear()
