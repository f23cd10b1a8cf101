"""Real audio in tests: a PulseAudio server with a null sink per test, known signals played into it,
and its monitor opened as a PortAudio input. No mocks: the samples travel through libpulse, the
server, the ALSA pulse plugin and PortAudio exactly as a microphone's would.

Use from a test module with `from tests.pulse_audio import null_sink, pulse_server  # noqa: F401`
(pytest finds fixtures imported into the module), then:

    def test_x(null_sink, monkeypatch):  # PULSE_SOURCE is set to the sink's monitor
        mic = MicInput(ring, "pulse")    # the ALSA "pulse" device (PULSE_DEVICE) records that monitor
        with null_sink.play(tone):       # pacat streams the samples into the sink, in real time
            ...
        with output_to(null_sink, monkeypatch):  # PULSE_SINK: a FilePlayer plays into the sink
            ...
        null_sink.unload(); null_sink.load()     # the device is unplugged / plugged back in
        null_sink.suspend(True)                  # the device hangs (streams stay, data stops)

What the fixture starts (nothing else needs starting): if `pactl info` finds no server,
`pulseaudio -D --exit-idle-time=-1 --system=false` (as root it warns and runs); it is left running,
so a later test run reuses it. Then PortAudio is re-initialised so it lists "pulse". Every sink is
called `soundvj_test_<pid>_<n>`; sinks left by a killed earlier run (their pid is gone) are
unloaded. A "keepalive" pacat streams silence into each sink at 20 ms latency and the sink is
suspended and resumed once: a fresh or idle null sink renders in ~2 s blocks, and a recording of
its monitor would otherwise see its first sample up to 2 s late. `unload()` also kills the streams
that were attached to the sink (PulseAudio would move them to the fallback device, where they may
or may not keep flowing), as when a USB interface is pulled.
Tests skip (with the reason) only when pulseaudio-utils/pulseaudio are not installed.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from visualizer.portaudio import rescan_devices

PULSE_DEVICE = "pulse"  # the ALSA plugin device PortAudio lists while a PulseAudio server runs
SINK_PREFIX = "soundvj_test_"
_counter = itertools.count()
_TOOLS = ("pulseaudio", "pactl", "pacat", "pacmd", "parec")


def _pactl(*args: str, check: bool = True, timeout: float = 10.0) -> str:
    done = subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"pactl {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _server_up() -> bool:
    return subprocess.run(["pactl", "info"], capture_output=True, timeout=10).returncode == 0


def _remove_stale_sinks() -> None:
    """Unload test sinks whose owning process is gone (a killed earlier run)."""
    for line in _pactl("list", "short", "modules").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or f"sink_name={SINK_PREFIX}" not in parts[2]:
            continue
        name = parts[2].split("sink_name=", 1)[1].split()[0]
        pid = name[len(SINK_PREFIX) :].split("_", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _pactl("unload-module", parts[0], check=False)


def start_pulseaudio() -> None:
    """Start the server if none answers; raise with the server's own words if it will not start."""
    if _server_up():
        return
    done = subprocess.run(
        ["pulseaudio", "-D", "--exit-idle-time=-1", "--system=false"], capture_output=True, text=True, timeout=20
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _server_up():
            return
        time.sleep(0.1)
    raise RuntimeError(f"pulseaudio did not start (exit {done.returncode}): {done.stderr.strip()[-300:]}")


@pytest.fixture(scope="session")
def pulse_server() -> None:
    """A running PulseAudio server, and PortAudio re-initialised so it lists the "pulse" device."""
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs PulseAudio ({', '.join(missing)} not installed; Debian: pulseaudio pulseaudio-utils)")
    start_pulseaudio()
    _remove_stale_sinks()
    # PortAudio may have been initialised (at import) before the server ran; then it lacks "pulse".
    rescan_devices()


class Playback:
    """Samples streaming into a sink through pacat, in real time, optionally looped."""

    def __init__(self, sink: str, samples: np.ndarray, sample_rate: int, loop: bool):
        data = np.ascontiguousarray(samples, dtype=np.float32)
        channels = 1 if data.ndim == 1 else data.shape[1]
        self._process = subprocess.Popen(
            [
                "pacat", "--playback", f"--device={sink}", "--format=float32le", f"--rate={sample_rate}",
                f"--channels={channels}", "--latency-msec=20", "--stream-name=soundvj-test-signal",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._bytes = data.tobytes()
        self._stop = threading.Event()
        self._loop = loop
        self._feeder = threading.Thread(target=self._feed, daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        # pacat reads only as fast as the server plays, so these writes pace themselves.
        chunk = 4096 * 4
        try:
            while not self._stop.is_set():
                for at in range(0, len(self._bytes), chunk):
                    if self._stop.is_set():
                        break
                    self._process.stdin.write(self._bytes[at : at + chunk])
                if not self._loop:
                    break
            self._process.stdin.close()
        except (BrokenPipeError, ValueError, OSError):
            pass  # the sink went away (unloaded mid-test) or stop() closed the pipe

    def wait(self, timeout: float = 30.0) -> None:
        """Until every sample has been played (pacat drains before it exits)."""
        self._feeder.join(timeout)
        self._process.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._process.poll() is None:
            self._process.terminate()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)
        self._feeder.join(5)

    def __enter__(self) -> Playback:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class NullSink:
    """A PulseAudio null sink that a test can load, unload and reload; its monitor is the input."""

    def __init__(self, name: str):
        self.name = name
        self.module_id: str | None = None
        self._keepalive: Playback | None = None

    @property
    def monitor(self) -> str:
        return f"{self.name}.monitor"

    @property
    def loaded(self) -> bool:
        return self.module_id is not None

    def load(self) -> None:
        self.module_id = _pactl(
            "load-module", "module-null-sink", f"sink_name={self.name}",
            "rate=44100", "channels=2",
        ).strip()
        silence = np.zeros(4410, dtype=np.float32)
        self._keepalive = Playback(self.name, silence, 44100, loop=True)
        deadline = time.monotonic() + 5
        while not self._has_input() and time.monotonic() < deadline:
            time.sleep(0.02)
        # A new null sink starts with one ~2 s render period (its idle latency); a suspend/resume
        # cycle restarts it at the keepalive's 20 ms, so recordings start at once.
        _pactl("suspend-sink", self.name, "1")
        _pactl("suspend-sink", self.name, "0")

    def _has_input(self) -> bool:
        """True once a stream (the keepalive) plays into this sink."""
        return bool(self._streams("sink-inputs", self._index("sinks", self.name)))

    def unload(self) -> None:
        """The device disappears, as when a USB interface is unplugged: the sink goes, and the
        streams that played into it or recorded its monitor die with it.

        (PulseAudio itself would move those streams to the fallback device, where they may or may
        not keep flowing depending on what else plays there; killing them makes the test
        deterministic and matches a hardware device whose streams fail when it is pulled.)
        """
        if self._keepalive is not None:
            self._keepalive.stop()
            self._keepalive = None
        if self.module_id is None:
            return
        sink_index = self._index("sinks", self.name)
        source_index = self._index("sources", self.monitor)
        inputs = self._streams("sink-inputs", sink_index)
        outputs = self._streams("source-outputs", source_index)
        _pactl("unload-module", self.module_id, check=False)
        self.module_id = None
        for kind, indices in (("kill-sink-input", inputs), ("kill-source-output", outputs)):
            for index in indices:
                subprocess.run(["pacmd", kind, index], capture_output=True, timeout=10)

    @staticmethod
    def _index(listing: str, name: str) -> str | None:
        for line in _pactl("list", "short", listing).splitlines():
            fields = line.split("\t")
            if fields[1:2] == [name]:
                return fields[0]
        return None

    @staticmethod
    def _streams(listing: str, owner: str | None) -> list[str]:
        """Indices of the sink inputs / source outputs attached to sink/source `owner`."""
        if owner is None:
            return []
        return [
            line.split("\t")[0]
            for line in _pactl("list", "short", listing).splitlines()
            if line.split("\t")[1:2] == [owner]
        ]

    def suspend(self, suspended: bool) -> None:
        """Freeze (True) or thaw the sink: its streams stay connected but get no data, as when a
        device or the audio server hangs for a moment."""
        _pactl("suspend-sink", self.name, "1" if suspended else "0")

    def reload(self) -> None:
        self.unload()
        self.load()

    def play(self, samples: np.ndarray, sample_rate: int = 44100, loop: bool = False) -> Playback:
        """Stream float samples ([n] or [n, channels]) into the sink; use as a context manager."""
        return Playback(self.name, samples, sample_rate, loop)

    def record(self, seconds: float, sample_rate: int = 44100) -> np.ndarray:
        """The monitor's mono samples over `seconds`, recorded by parec (independent of PortAudio)."""
        n = int(seconds * sample_rate)
        process = subprocess.Popen(
            ["parec", f"--device={self.monitor}", "--format=float32le", f"--rate={sample_rate}", "--channels=1",
             "--latency-msec=20"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        data = process.stdout.read(n * 4)
        process.terminate()
        process.wait(5)
        return np.frombuffer(data, dtype=np.float32).copy()


@pytest.fixture
def null_sink(pulse_server, monkeypatch) -> Iterator[NullSink]:
    """A fresh null sink; PULSE_SOURCE points at its monitor, so device "pulse" records it."""
    sink = NullSink(f"{SINK_PREFIX}{os.getpid()}_{next(_counter)}")
    sink.load()
    monkeypatch.setenv("PULSE_SOURCE", sink.monitor)
    try:
        yield sink
    finally:
        sink.unload()


@contextmanager
def output_to(sink: NullSink, monkeypatch) -> Iterator[None]:
    """Route PortAudio's "pulse"/"default" output into `sink` (PULSE_SINK) inside the block."""
    with monkeypatch.context() as patch:
        patch.setenv("PULSE_SINK", sink.name)
        yield
