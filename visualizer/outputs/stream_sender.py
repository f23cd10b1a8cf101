"""The live picture (and optionally its sound) as a network stream: udp://, srt:// or rtmp(s)://.

H.264 with low-latency settings (libx264 ultrafast, zerolatency: no B-frames, no look-ahead; a
keyframe every second so a receiver that joins late shows a picture within a second; a steady
bit rate) in MPEG-TS for udp and srt, FLV for rtmp; the sound as AAC. The frames go out at the set's
frame rate whatever the render rate did (`PacedOutput`).

The encoding and the network run in an ffmpeg child process, fed raw frames on its standard input and
raw sound on a second pipe, rather than in PyAV inside this process:
- Debian's ffmpeg speaks SRT (libsrt) and RTMP(S); the FFmpeg that PyAV's wheels bundle has no SRT.
- A network that stalls blocks the child, not a thread of ours inside a library call: the sender's
  thread waits on a pipe, which ending the child always releases, so *Stop* and *Reconnect* work
  however the connection hangs.
- A crash in a codec or a protocol ends the child, not the show.
Only the scaling runs here (Lanczos-3, on the sender's thread), so the stream looks as smooth as the
output window. ffmpeg missing from the PATH is a one-line error.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections import deque
from dataclasses import dataclass
from typing import IO, Callable
from urllib.parse import urlsplit

import numpy as np

from core.errors import SoundvjError, one_line, short_repr
from visualizer.outputs.paced_output import PacedOutput

DEFAULT_SIZE = (1280, 720)
SIZE_RANGE = (16, 7680)
CONTAINERS = {"udp": "mpegts", "srt": "mpegts", "rtmp": "flv", "rtmps": "flv"}
URL_HINT = "expected udp://HOST:PORT, srt://HOST:PORT or rtmp://HOST[:PORT]/APP/KEY"
BITS_PER_PIXEL = 0.2  # ultrafast needs about this for a clean picture: 4.4 Mbit/s at 1280x720, 24 fps
MIN_BITRATE, MAX_BITRATE = 500_000, 40_000_000
AUDIO_BITRATE = "160k"
AUDIO_RATE = 48000  # what broadcast gear and OBS run at; ffmpeg resamples the set's rate to it
STDERR_LINES = 20  # the tail of ffmpeg's messages kept for the failure line
EXIT_WAIT_SECONDS = 2.0  # a closed ffmpeg gets this long to flush and end before it is killed
FFMPEG_INSTALL_HINT = "apt-get install ffmpeg (Debian), or put an ffmpeg with libx264 on the PATH"


@dataclass(frozen=True)
class StreamTarget:
    """Where a stream goes: the URL as given and the container its protocol carries."""

    url: str
    scheme: str
    container: str

    @property
    def shown(self) -> str:
        """The URL for messages and the window: an rtmp stream key and an SRT passphrase are secrets
        (anyone holding a key can stream to that channel), so they show as ***."""
        parts = urlsplit(self.url)
        path, query = parts.path, parts.query
        if self.scheme.startswith("rtmp") and "/" in path.strip("/"):
            path = path[: path.rstrip("/").rfind("/") + 1] + "***"
        query = re.sub(r"(passphrase|streamid)=[^&]*", r"\1=***", query)
        return parts._replace(path=path, query=query).geturl()


def check_stream_url(url: str) -> StreamTarget:
    """The stream target for `url`, or a one-line SoundvjError naming the flag and what was expected."""
    text = str(url).strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise SoundvjError(f"--stream {short_repr(url)}: not a URL (a port past 65535?); {URL_HINT}") from None
    scheme = parts.scheme.lower()
    if scheme not in CONTAINERS:
        got = f"'{scheme}://' is not a stream protocol" if scheme else "no protocol"
        raise SoundvjError(f"--stream {short_repr(url)}: {got}; {URL_HINT}")
    listener = "mode=listener" in parts.query
    if not parts.hostname and not (scheme == "srt" and listener):
        raise SoundvjError(f"--stream {short_repr(url)}: no host; {URL_HINT}")
    if scheme in ("udp", "srt") and port is None:
        raise SoundvjError(f"--stream {short_repr(url)}: {scheme} needs a port; {URL_HINT}")
    if scheme.startswith("rtmp") and parts.path.strip("/").count("/") < 1:
        raise SoundvjError(f"--stream {short_repr(url)}: rtmp needs an application and a stream key "
                           f"(rtmp://HOST/APP/KEY, e.g. rtmp://127.0.0.1/live/soundvj)")
    return StreamTarget(text, scheme, CONTAINERS[scheme])


def parse_stream_size(text: str, flag: str = "--stream-size") -> tuple[int, int]:
    """'WIDTHxHEIGHT' as two even numbers in SIZE_RANGE (H.264's 4:2:0 needs even sizes)."""
    try:
        w_text, h_text = str(text).lower().split("x")
        width, height = int(w_text), int(h_text)
    except ValueError:
        raise SoundvjError(f"{flag} {short_repr(text)}: expected WIDTHxHEIGHT, e.g. 1280x720") from None
    low, high = SIZE_RANGE
    if not (low <= width <= high and low <= height <= high) or width % 2 or height % 2:
        raise SoundvjError(f"{flag} {short_repr(text)}: width and height must be even numbers in [{low}, {high}]")
    return width, height


def find_ffmpeg() -> str:
    """The ffmpeg program on the PATH, or a one-line SoundvjError saying how to get one."""
    path = shutil.which("ffmpeg")
    if path is None:
        raise SoundvjError(f"--stream needs the ffmpeg program, which is not on the PATH; {FFMPEG_INSTALL_HINT}")
    return path


def stream_bitrate(width: int, height: int, fps: float) -> int:
    """Video bits per second for a size and rate (BITS_PER_PIXEL, within MIN/MAX_BITRATE)."""
    return int(min(MAX_BITRATE, max(MIN_BITRATE, BITS_PER_PIXEL * width * height * fps)))


def ffmpeg_command(ffmpeg: str, target: StreamTarget, width: int, height: int, fps: float,
                   sample_rate: int | None, audio_fd: int | None) -> list[str]:
    """The ffmpeg command line: rgb24 frames on stdin (and f32le mono sound on `audio_fd`) in,
    H.264 (+ AAC) out to the target; progress (frame=N) on stdout."""
    rate = f"{fps:.6g}"
    gop = str(max(1, round(fps)))
    bitrate = stream_bitrate(width, height, fps)
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-nostats",
           "-progress", "pipe:1", "-stats_period", "0.25",
           # Raw inputs need no probing; probing would wait for seconds of sound that only come with
           # the frames it holds up.
           "-probesize", "32", "-analyzeduration", "0",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", rate,
           "-thread_queue_size", "4", "-i", "pipe:0"]
    if sample_rate is not None:
        cmd += ["-probesize", "32", "-analyzeduration", "0", "-f", "f32le", "-ar", str(sample_rate), "-ac", "1", "-thread_queue_size", "16",
                "-i", f"pipe:{audio_fd}"]
    cmd += ["-map", "0:v"] + (["-map", "1:a"] if sample_rate is not None else [])
    # RGB -> BT.709 limited-range 4:2:0, tagged as such, so receivers show the colours that were sent.
    cmd += ["-vf", "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p",
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-bf", "0",
            "-g", gop, "-keyint_min", gop, "-sc_threshold", "0",
            "-b:v", str(bitrate), "-maxrate", str(bitrate), "-bufsize", str(bitrate // 2),
            "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]
    if sample_rate is not None:
        cmd += ["-c:a", "aac", "-b:a", AUDIO_BITRATE, "-ar", str(AUDIO_RATE)]
    cmd += ["-flush_packets", "1", "-f", target.container]
    if target.container == "mpegts":
        cmd += ["-muxdelay", "0", "-muxpreload", "0"]
    return cmd + [target.url]


_FFMPEG_PREFIX = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\]\s*")


class StreamSender(PacedOutput):
    """A stream to `url` at `fps`, scaled to `size`, with the sound when `sample_rate` is given.
    A frame sink of the render worker (`feed` returns at once); `start()` starts it."""

    kind = "stream"

    def __init__(self, url: str, fps: float, size: tuple[int, int] = DEFAULT_SIZE, sample_rate: int | None = None,
                 on_message: Callable[[str], None] | None = None) -> None:
        self.target = check_stream_url(url)
        width, height = parse_stream_size(f"{size[0]}x{size[1]}")
        super().__init__(f"stream {self.target.shown}", fps, width, height, sample_rate, on_message)
        self._ffmpeg = find_ffmpeg()
        self._process: subprocess.Popen | None = None
        self._audio_pipe: IO[bytes] | None = None
        self._stderr: deque[str] = deque(maxlen=STDERR_LINES)
        self._encoded = 0  # frames ffmpeg reports as encoded (its progress), this connection
        self._readers: list[threading.Thread] = []
        self._process_lock = threading.Lock()  # the UI's reconnect / stop and this thread both end the child

    @property
    def frames_encoded(self) -> int:
        """Frames the ffmpeg child reported encoded and sent, since the last (re)connection."""
        return self._encoded

    @property
    def pid(self) -> int | None:
        """The ffmpeg child's process id while it runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def _connect(self) -> None:
        audio_read = audio_write = None
        if self.sample_rate is not None:
            audio_read, audio_write = os.pipe()
        cmd = ffmpeg_command(self._ffmpeg, self.target, self.width, self.height, self.fps,
                             self.sample_rate, audio_read)
        self._stderr.clear()
        self._encoded = 0
        try:
            process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       pass_fds=() if audio_read is None else (audio_read,), bufsize=0)
        except OSError as e:
            for fd in (audio_read, audio_write):
                if fd is not None:
                    os.close(fd)
            raise SoundvjError(f"{self.label}: cannot start ffmpeg ({one_line(e)})") from None
        if audio_read is not None:
            os.close(audio_read)  # the child holds its end
            self._audio_pipe = os.fdopen(audio_write, "wb", buffering=0)
        with self._process_lock:
            self._process = process
        self._readers = [
            threading.Thread(target=self._read_progress, args=(process.stdout,), name="soundvj-stream-progress",
                             daemon=True),
            threading.Thread(target=self._read_messages, args=(process.stderr,), name="soundvj-stream-messages",
                             daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _send(self, image: np.ndarray, audio: np.ndarray | None) -> None:
        process = self._process
        if audio is not None and self._audio_pipe is not None:
            _write_all(self._audio_pipe, audio.astype("<f4", copy=False).data)  # before its picture: never starved
        _write_all(process.stdin, np.ascontiguousarray(image).data)

    def _delivering(self) -> bool:
        return self._encoded > 0

    def _problem(self) -> str | None:
        process = self._process
        if process is None:
            return None
        code = process.poll()
        if code is None:
            return None
        for reader in self._readers:  # the messages that explain the exit are still being read
            reader.join(1.0)
        said = next((line for line in reversed(self._stderr) if line), "")
        why = said or f"ffmpeg ended with exit code {code}"
        return f"{self.label}: {why}"

    def _explain_failure(self) -> str | None:
        # A broken pipe comes as ffmpeg closes its input on the way out: its exit code and last
        # message (connection refused, no route, ...) follow within moments.
        process = self._process
        if process is not None:
            try:
                process.wait(EXIT_WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        return self._problem()

    def _disconnect(self) -> None:
        process = self._process
        for pipe in (self._audio_pipe, process.stdin if process is not None else None):
            if pipe is not None:
                try:
                    pipe.close()  # end of input: ffmpeg flushes the encoder and closes the stream
                except OSError:
                    pass
        self._audio_pipe = None
        if process is None:
            return
        try:
            process.wait(EXIT_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self._end_process()
            process.wait(EXIT_WAIT_SECONDS)
        for reader in self._readers:
            reader.join(1.0)
        with self._process_lock:
            self._process = None

    def _interrupt(self) -> None:
        self._end_process()

    def _end_process(self) -> None:
        with self._process_lock:
            process = self._process
            if process is not None and process.poll() is None:
                try:
                    process.kill()  # releases a write blocked on its full pipe
                except OSError:
                    pass

    def _read_progress(self, pipe: IO[bytes]) -> None:
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", "replace").strip()
            if line.startswith("frame="):
                try:
                    self._encoded = int(line[6:])
                except ValueError:
                    pass
        pipe.close()

    def _read_messages(self, pipe: IO[bytes]) -> None:
        url, shown = self.target.url, self.target.shown
        for raw in iter(pipe.readline, b""):
            line = _FFMPEG_PREFIX.sub("", raw.decode("utf-8", "replace")).strip()
            line = line.removeprefix(f"{url}: ").replace(url, shown)  # the label names the URL already
            if line:
                self._stderr.append(one_line(line))
        pipe.close()


def _write_all(pipe: IO[bytes], data: memoryview) -> None:
    """Write all of `data` to an unbuffered pipe (a raw write may take only part when a signal comes)."""
    view = memoryview(data).cast("B")
    while view:
        view = view[pipe.write(view):]
