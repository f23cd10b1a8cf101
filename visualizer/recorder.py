"""Recording a session: the frames that were shown and the audio that was heard, to H.264 + AAC.

The audio is the clock. Every sample the render thread read (mic input or the file at the playhead) is
recorded, in order, and the video gets exactly one frame per 1/fps of recorded audio: the newest frame
shown by then, repeated when the render fps dipped, skipped when it ran ahead. So the file plays at real
speed and in sync whatever the render rate did.

`feed` (render thread) only appends the audio chunk to a deque and drops the frame into a one-slot
mailbox; encoding runs on the recorder's own thread. A write error (a full disk, a vanished folder)
stops the recording with a one-line message; what was written is finished into a playable file when
the container can still be closed, and removed otherwise. The show goes on either way.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from pathlib import Path
from typing import Callable

import numpy as np

from core.errors import SoundvjError, one_line
from core.video_writer import Mp4Writer, check_output_path
from visualizer.file_sink import FileSink
from visualizer.mailbox import LatestSlot
from visualizer.render_worker import PublishedFrame


class SessionRecorder(FileSink):
    """Record frames + audio fed by the render worker to `path` (see the module docstring).

    States: "recording" -> "finished" (stop() or max_seconds reached) or "failed" (error set).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float,
        width: int,
        height: int,
        sample_rate: int,
        max_seconds: float | None = None,
        on_done: Callable[["SessionRecorder"], None] | None = None,
        crf: int = 20,
    ) -> None:
        self.path = check_output_path(path)
        super().__init__("soundvj-recorder", "recording", on_done)
        self.fps = float(fps)
        self.width, self.height, self.sample_rate = int(width), int(height), int(sample_rate)
        self.max_samples = None if max_seconds is None else int(round(max_seconds * sample_rate))
        self.crf = crf
        self.samples_recorded = 0
        self.frames_written = 0
        self.frames_repeated = 0
        self.frames_skipped = 0
        self._frames_seen = 0
        self._audio: deque[np.ndarray] = deque()
        self._frame: LatestSlot = LatestSlot()
        self._writer: Mp4Writer | None = None
        self._last_image: np.ndarray | None = None
        self._last_seq = 0
        self._start_thread()

    # -- render thread ----------------------------------------------------------------------------

    def feed(self, frame: PublishedFrame, audio: np.ndarray) -> None:
        """Take the newest shown frame and the audio heard since the previous call; returns at once."""
        if not self._accepting():
            return
        if audio.size:
            self._audio.append(audio)  # already a private copy (SampleRing.read_new)
        self._frame.put(frame.image)
        self._wake.set()

    # -- any thread -------------------------------------------------------------------------------

    @property
    def seconds(self) -> float:
        """Seconds of audio recorded so far."""
        return self.samples_recorded / self.sample_rate

    @property
    def bytes_written(self) -> int:
        """Size of the file being written (0 before it exists)."""
        writer = self._writer
        for candidate in ((writer.temp_path,) if writer else ()) + (self.path,):
            try:
                return os.path.getsize(candidate)
            except OSError:
                continue
        return 0

    # -- recorder thread --------------------------------------------------------------------------

    def _open(self) -> None:
        self._writer = Mp4Writer(
            self.path, self.fps, self.width, self.height, sample_rate=self.sample_rate,
            audio_channels=1, crf=self.crf, preset="veryfast",
        )

    def _failure_message(self, error: Exception) -> str:
        if isinstance(error, SoundvjError):
            return str(error)
        if isinstance(error, (OSError, RuntimeError, ValueError)):
            return f"{self.path}: recording stopped: {one_line(error)}"
        return f"{self.path}: recording stopped: {type(error).__name__}: {one_line(error)}"

    def _reached_max(self) -> bool:
        return self.max_samples is not None and self.samples_recorded >= self.max_samples

    def _drain(self) -> None:
        image, self._last_seq = self._frame.take_new(self._last_seq)
        if image is not None:
            self._last_image = image
            self._frames_seen += 1
        if self._last_image is None:
            # Nothing shown yet: audio before the first frame is not part of the session.
            self._audio.clear()
            return
        while self._audio:
            chunk = self._audio.popleft()
            if self.max_samples is not None:
                chunk = chunk[: max(0, self.max_samples - self.samples_recorded)]
            if chunk.size == 0:
                continue
            self.samples_recorded += chunk.size
            due = math.ceil(self.samples_recorded * self.fps / self.sample_rate - 1e-9)
            while self.frames_written < due:
                self._writer.write(self._last_image)
                self.frames_written += 1
            self._writer.write_audio(chunk)
        # Bookkeeping for the note in the status line: how the render rate compared with the file's.
        self.frames_repeated = max(0, self.frames_written - self._frames_seen)
        self.frames_skipped = max(0, self._frames_seen - self.frames_written)

    def _finish(self) -> None:
        writer = self._writer
        if self.frames_written == 0:
            writer.abort()
            self._fail(f"{self.path}: nothing was recorded (no frame was shown)")
            return
        writer.close()
        self.state = "finished"

    def _fail(self, message: str) -> None:
        self.error = message
        self.state = "failed"
        writer = self._writer
        if writer is not None and not writer.closed:
            try:
                writer.close()  # keep what was written as a playable file if the container still closes
            except Exception:  # noqa: BLE001 - then it is removed: no half-written file is left
                writer.abort()
        self._audio.clear()


def default_recording_path(folder: str | os.PathLike | None = None) -> Path:
    """soundvj-YYYYmmdd-HHMMSS.mp4 in `folder` (default: the current folder)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(folder or ".") / f"soundvj-{stamp}.mp4"
