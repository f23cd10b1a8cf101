"""The network stream (`visualizer.outputs.stream_sender.StreamSender`) against a real ffmpeg receiver
on 127.0.0.1: frames at the set's rate, the right size and colours, sound beside its picture, a
refused destination as a message, a stuck encoder that never holds up the render thread, and the
live session streaming its render worker's frames.

The receivers are real ffmpeg processes listening on UDP (copying the MPEG-TS they get to a file,
decoded afterwards with PyAV); each is ended by its PID in the fixture's finalizer.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from core.errors import SoundvjError
from core.params import Params
from tests.live_helpers import wait_for
from tests.pipeline_helpers import tiny_model
from visualizer.outputs.config import OutputConfig
from visualizer.outputs.stream_sender import (
    StreamSender,
    check_stream_url,
    find_ffmpeg,
    parse_stream_size,
)
from visualizer.render_worker import PublishedFrame
from visualizer.session import LiveSession

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg program (Debian: ffmpeg)")

FPS = 24.0
SR = 44100
SIZE = (320, 180)
MIN_SHARE_RECEIVED = 0.95
COLOUR_TOLERANCE = 6  # 8-bit levels: RGB -> BT.709 4:2:0 -> RGB rounds a little


def free_port(kind: int) -> int:
    """A port nobody listens on now (the OS's pick)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def end_process(process: subprocess.Popen) -> None:
    """End `process` by its PID (continue it first, in case a test stopped it) and reap it."""
    if process.poll() is None:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(process.pid, sig)
            except ProcessLookupError:
                break
    process.wait(10)


class UdpReceiver:
    """`ffmpeg -i udp://127.0.0.1:PORT -c copy out.ts`: what a receiver on the LAN gets, kept as sent.
    `finish` ends it as Ctrl-C does (the file is completed); it would end by itself after
    `idle_seconds` without data."""

    def __init__(self, folder: Path, idle_seconds: float = 30.0) -> None:
        self.port = free_port(socket.SOCK_DGRAM)
        self.path = folder / "received.ts"
        self.url = f"udp://127.0.0.1:{self.port}?pkt_size=1316"
        listen = f"udp://127.0.0.1:{self.port}?timeout={int(idle_seconds * 1e6)}&fifo_size=1000000&overrun_nonfatal=1"
        self.process = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
             "-analyzeduration", "1000000", "-i", listen, "-c", "copy",
             "-flush_packets", "1", "-f", "mpegts", str(self.path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        time.sleep(0.3)  # listening before anything is sent

    def wait_receiving(self, timeout: float = 10.0) -> bool:
        """True once the receiver recognised the stream and writes it (its file is not empty)."""
        return wait_for(lambda: self.path.exists() and self.path.stat().st_size > 0, timeout)

    def finish(self, timeout: float = 15.0) -> None:
        """Let the last packets arrive, then end the receiver with Ctrl-C, twice: ffmpeg looks at a
        first signal only between packets, and none comes any more; the second cuts the wait short.
        Every packet is in the file already (-flush_packets 1)."""
        time.sleep(0.5)
        for _ in range(2):
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)
                time.sleep(0.2)
        self.process.wait(timeout)

    def video(self) -> list[tuple[float, np.ndarray]]:
        """(time, uint8 RGB frame) of every decoded frame."""
        with av.open(str(self.path)) as container:
            return [(frame.time, frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]

    def audio(self) -> tuple[float, int, np.ndarray]:
        """(time of the first sample, sample rate, mono samples) of the decoded sound."""
        with av.open(str(self.path)) as container:
            frames = list(container.decode(audio=0))
        samples = np.concatenate([f.to_ndarray().reshape(len(f.layout.channels), -1).mean(axis=0) for f in frames])
        return frames[0].time, frames[0].sample_rate, samples


@pytest.fixture
def receiver(tmp_path):
    rx = UdpReceiver(tmp_path)
    try:
        yield rx
    finally:
        end_process(rx.process)


@pytest.fixture
def senders():
    """Senders a test starts; each is stopped (its ffmpeg ended) at the end whatever happened."""
    made: list[StreamSender] = []
    try:
        yield made
    finally:
        for sender in made:
            pid = sender.pid
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            sender.stop()


def published(image: np.ndarray, index: int) -> PublishedFrame:
    now = time.monotonic()
    return PublishedFrame(image=image, index=index, shown_at=now, audio_arrival=now, params=Params(),
                          mel=np.zeros((1, 1), np.float32))


def solid(rgb: tuple[int, int, int], size: int = 64) -> np.ndarray:
    image = np.empty((size, size, 3), np.uint8)
    image[...] = rgb
    return image


def feed_for(sender, seconds: float, picture, sound=None, fps: float = FPS) -> list[float]:
    """Feed `sender` as the render thread does for `seconds`: every 1/fps a new picture and the sound
    that came in since the last frame. `picture(t)` gives the picture at t s; `sound(t, first, count)`
    the samples first .. first + count - 1 (at SR), heard up to t. Returns each feed's duration (s)."""
    durations = []
    start = time.monotonic()
    fed = 0
    index = 0
    while (now := time.monotonic() - start) < seconds:
        audio = np.zeros(0, np.float32)
        if sound is not None:
            due = int(now * SR)
            audio, fed = sound(now, fed, due - fed), due
        image = picture(now)
        t0 = time.perf_counter()
        sender.feed(published(image, index), audio)
        durations.append(time.perf_counter() - t0)
        index += 1
        time.sleep(max(0.0, start + index / fps - time.monotonic()))
    return durations


def test_a_receiver_gets_the_frames_at_the_stream_size_and_colours(receiver, senders):
    """Four seconds of solid colours (one, then another) at 24 fps: the receiver decodes at least 95 %
    of the frames sent, at 320x180, each the colour that was fed (red, green and blue in place)."""
    first, second = (200, 40, 90), (30, 180, 220)
    sender = StreamSender(receiver.url, FPS, SIZE)
    senders.append(sender.start())
    # How long the encoder takes to start is not measured here (seconds on a busy machine): the rate is
    # counted from its first frame, so the feeding starts once it has taken one.
    sender.feed(published(solid(first), 0), np.zeros(0, np.float32))
    assert wait_for(lambda: not math.isnan(sender.started_at), 30.0), "the encoder never took a first frame"
    feed_for(sender, 4.0, lambda t: solid(first if t < 2.0 else second))
    sending = time.monotonic() - sender.started_at
    assert receiver.wait_receiving()
    sender.stop()
    receiver.finish()
    counts = (sender.frames_sent, sender.frames_repeated, sender.frames_dropped)
    assert sender.state == "stopped" and sender.error is None
    assert sending > 3.0 and abs(sender.frames_sent - sending * FPS) <= 2, (sending, counts)  # at the set's rate
    frames = receiver.video()
    assert len(frames) >= MIN_SHARE_RECEIVED * sender.frames_sent, (len(frames), sender.frames_sent)
    assert all(image.shape == (SIZE[1], SIZE[0], 3) for _, image in frames)
    means = np.array([image.reshape(-1, 3).mean(axis=0) for _, image in frames])
    is_first = np.abs(means - first).max(axis=1) <= COLOUR_TOLERANCE
    is_second = np.abs(means - second).max(axis=1) <= COLOUR_TOLERANCE
    assert (is_first | is_second).all(), means[~(is_first | is_second)][:3]
    switch = int(np.argmax(is_second))
    assert is_first[:switch].all() and is_second[switch:].all()  # in the order fed
    assert abs(switch - (2.0 - (4.0 - sending)) * FPS) <= 4


def test_the_sound_goes_out_with_the_picture_it_belongs_to(receiver, senders):
    """With sound: black and silent for 2 s, then white with a 1 kHz tone, switched in the same feed
    (as a frame and the sound it answers). In the received stream (H.264 + AAC at 48 kHz) the tone
    starts before the white picture by at most the sound fed with it (the picture answers the sound it
    heard, as in the room) and never after it, and the sound lasts as long as the picture."""
    sender = StreamSender(receiver.url, FPS, SIZE, sample_rate=SR)
    senders.append(sender.start())

    heard_with_switch = []  # seconds of sound fed with the first white picture

    def sound(t: float, first: int, count: int) -> np.ndarray:  # the tone from the first feed at t >= 2 s
        if t >= 2.0 and not heard_with_switch:
            heard_with_switch.append(count / SR)
        k = np.arange(first, first + count)
        return (0.5 * np.sin(2 * np.pi * 1000 * k / SR) * (t >= 2.0)).astype(np.float32)

    feed_for(sender, 4.0, lambda t: solid((255, 255, 255) if t >= 2.0 else (0, 0, 0)), sound)
    assert receiver.wait_receiving()
    sender.stop()
    receiver.finish()
    frames = receiver.video()
    white = next(t for t, image in frames if image.mean() > 128)
    start, rate, samples = receiver.audio()
    assert rate == 48000
    onset = start + int(np.argmax(np.abs(samples) > 0.1)) / rate
    # The white picture answers the sound fed with it (a frame's worth, more when the feeder ran
    # late), so it shows once that sound has gone out: after the onset by at most its length, never before.
    assert -0.005 <= white - onset <= heard_with_switch[0] + 0.5 / FPS, (onset, white, heard_with_switch)
    video_seconds = frames[-1][0] - frames[0][0] + 1 / FPS
    assert abs(samples.size / rate - video_seconds) <= 0.25  # the ends: the jitter buffer, AAC framing


def test_a_refused_destination_is_a_message_and_reconnect_tries_again(senders):
    """rtmp to a port where nothing listens: the stream fails with one line saying the connection was
    refused (the stream key not in it), feeding goes on without an exception and without piling up
    sound, and Reconnect tries again (and says so again)."""
    messages: list[str] = []
    url = f"rtmp://127.0.0.1:{free_port(socket.SOCK_STREAM)}/live/secret-key"
    sender = StreamSender(url, FPS, SIZE, sample_rate=SR, on_message=messages.append)
    senders.append(sender.start())

    def sound(t: float, first: int, count: int) -> np.ndarray:
        return np.zeros(count, np.float32)

    durations = feed_for(sender, 3.0, lambda t: solid((10, 20, 30)), sound)
    assert wait_for(lambda: sender.state == "failed", 10.0), sender.status_text()
    assert len(messages) == 1 and "\n" not in messages[0]
    assert "refused" in messages[0].lower() and "secret-key" not in messages[0], messages
    assert sender.error == messages[0] and sender.status_text() == "stream failed"
    assert sender.queued_sound_seconds <= 2.1  # while failed the sound fed is dropped, not hoarded
    sender.reconnect()
    durations += feed_for(sender, 1.0, lambda t: solid((10, 20, 30)), sound)
    assert wait_for(lambda: sender.connects == 2 and sender.state == "failed", 10.0), sender.status_text()
    assert len(messages) == 2 and "refused" in messages[1].lower()
    assert max(durations) < 0.005


def test_feed_returns_at_once_while_the_encoder_is_stuck(senders):
    """The encoder process stopped (SIGSTOP) for 1.5 s, as a congested network or a starved encoder
    would: each feed still returns within 5 ms, the status says the stream is stuck; once it runs
    again the slots that went by are counted as dropped (not sent late) and sending goes on."""
    sender = StreamSender(f"udp://127.0.0.1:{free_port(socket.SOCK_DGRAM)}", FPS, SIZE, sample_rate=SR)
    senders.append(sender.start())
    noise = np.random.default_rng(0)

    def picture(t: float) -> np.ndarray:
        return noise.integers(0, 256, (64, 64, 3), dtype=np.uint8)

    def sound(t: float, first: int, count: int) -> np.ndarray:
        return np.zeros(count, np.float32)

    feed_for(sender, 1.0, picture, sound)
    assert wait_for(lambda: sender.state == "live", 5.0), sender.status_text()
    pid = sender.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        stuck = feed_for(sender, 1.5, picture, sound)
        assert sender.stalled_seconds > 0 and "stuck" in sender.status_text()
    finally:
        os.kill(pid, signal.SIGCONT)
    sent_before = sender.frames_sent
    feed_for(sender, 1.0, picture, sound)
    assert max(stuck) < 0.005, max(stuck)
    assert sender.frames_dropped >= FPS, sender.status_text()  # the stopped second and more were skipped
    assert sender.frames_sent >= sent_before + 0.7 * FPS, sender.status_text()
    assert sender.discarded_samples > 0  # their sound went with them
    assert sender.state == "live"


def test_stop_ends_a_stream_whose_encoder_is_stuck(senders):
    """Stopping while the encoder hangs (SIGSTOP) does not hang: the encoder is ended within seconds."""
    sender = StreamSender(f"udp://127.0.0.1:{free_port(socket.SOCK_DGRAM)}", FPS, SIZE)
    senders.append(sender.start())
    feed_for(sender, 0.5, lambda t: solid((1, 2, 3)))
    assert wait_for(lambda: sender.state == "live", 5.0)
    pid = sender.pid
    os.kill(pid, signal.SIGSTOP)
    feed_for(sender, 0.5, lambda t: solid((4, 5, 6)))
    t0 = time.monotonic()
    sender.stop()
    assert time.monotonic() - t0 < 8.0
    assert sender.state == "stopped" and sender.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_live_session_streams_its_render_workers_frames(receiver):
    """The real render worker (tiny model) with `--stream` and `--stream-audio` as the app starts them:
    the receiver gets at least 95 % of the frames sent, at the stream size, with the sound, and the
    pictures change with the sound (the model's frames, not a placeholder)."""
    messages: list[str] = []
    session = LiveSession(tiny_model(), Params(fps=FPS), on_message=messages.append,
                          outputs=OutputConfig(stream=receiver.url, size=(160, 96), sound=True))
    stop = threading.Event()

    def sound_card() -> None:  # noise bursts at the real rate, as the audio callback writes them
        rng = np.random.default_rng(1)
        written, t0 = 0, time.monotonic()
        while not stop.is_set():
            level = 0.5 if (written // (SR // 2)) % 2 else 0.02
            session.ring.write((level * rng.standard_normal(512)).astype(np.float32))
            written += 512
            time.sleep(max(0.0, t0 + written / SR - time.monotonic()))

    feeder = threading.Thread(target=sound_card, daemon=True)
    try:
        feeder.start()
        session.worker.start()
        session.start_outputs()
        sender = session.stream
        assert sender is not None and sender.wait_live(10.0), (sender.status_text(), messages)
        time.sleep(3.0)
        assert receiver.wait_receiving()
    finally:
        stop.set()
        session.stop()
        feeder.join(5)
    receiver.finish()
    assert session.stream is None and sender.state == "stopped"
    assert any("live (160x96, 24 fps, with sound)" in m for m in messages), messages
    frames = receiver.video()
    assert len(frames) >= MIN_SHARE_RECEIVED * sender.frames_sent, (len(frames), sender.status_text())
    assert all(image.shape == (96, 160, 3) for _, image in frames)
    assert np.std([image.mean() for _, image in frames]) > 0.5  # the picture moved
    _, rate, samples = receiver.audio()
    assert rate == 48000 and np.abs(samples).max() > 0.05  # the noise bursts went out


def test_bad_urls_and_sizes_are_one_line_naming_the_flag():
    """A URL of another protocol, without a port or without a stream key, and sizes H.264 cannot
    take, each give one line that names the flag and what was expected."""
    for url in ("http://example.org/x", "udp://127.0.0.1", "srt://host", "rtmp://host/live", "", "udp://h:99999"):
        with pytest.raises(SoundvjError) as e:
            check_stream_url(url)
        assert str(e.value).startswith("--stream ") and "\n" not in str(e.value)
    assert check_stream_url("srt://:9000?mode=listener").container == "mpegts"
    assert check_stream_url("rtmp://a/live/key").container == "flv"
    assert check_stream_url("rtmp://a/live/key").shown == "rtmp://a/live/***"
    for size in ("1281x720", "1280", "axb", "8x8", "100000x720"):
        with pytest.raises(SoundvjError) as e:
            parse_stream_size(size)
        assert str(e.value).startswith("--stream-size ") and "\n" not in str(e.value)
    assert parse_stream_size("1920X1080") == (1920, 1080)


def test_without_ffmpeg_the_stream_flag_says_how_to_get_it(tmp_path, monkeypatch):
    """No ffmpeg on the PATH: `find_ffmpeg` and `soundvj live --stream` say so in one line (exit 2)."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SoundvjError) as e:
        find_ffmpeg()
    assert "ffmpeg" in str(e.value) and "apt-get install ffmpeg" in str(e.value)
    done = subprocess.run([sys.executable, "-m", "core.cli", "live", "--stream", "udp://127.0.0.1:5000"],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "ffmpeg" in done.stderr and "Traceback" not in done.stderr
