"""Real MIDI in tests: a JACK server with the dummy audio backend, whose MIDI ports carry messages
between processes and clients exactly as a controller's would reach the app.

These machines have no ALSA sequencer (/dev/snd/seq), so rtmidi's ALSA API has nothing to open;
its JACK API on a JACK server gives the same MIDI path without hardware. The dummy backend needs no
sound card and `--no-realtime` needs no privileges.

Use from a test module with `from tests.jack_server import jack_server  # noqa: F401` (pytest finds
fixtures imported into the module), then:

    def test_x(jack_server):           # JACK_DEFAULT_SERVER names this server for the whole run
        port = jack_server.virtual_output("knobs", client_name="ctl")  # the app lists "ctl:knobs"
        ...                                          # the app opens "ctl:knobs"
        jack_server.wait_connected("ctl:knobs")      # the server has applied the connection
        port.send(mido.Message("control_change", control=7, value=100))
        port.close()                                 # the controller is unplugged

    raw = jack_server.raw_output("raw", "broken")    # sends any bytes: a broken controller
    controller = ControllerProcess(server_name, "ctl", "knobs")  # a controller in a process of its
    controller.send_cc(7, 100); controller.stop()               # own (for tests that stop the server)

What the fixture starts: `jackd --no-realtime -n soundvj_test_<pid> -d dummy`, a server of its own
(named after this process, so parallel runs and a JACK server the user runs are left alone), once
per test run, and stops it by its PID at the end. JACK_DEFAULT_SERVER is set to that name, so every
JACK client this process opens (rtmidi's and mido's) talks to it; at the end PortAudio, if a test
initialised it meanwhile, is re-initialised before the server stops (see `release_portaudio`).
Tests skip (with the reason and jackd's own words) when jackd is not installed or the server does
not come up.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from visualizer.portaudio import rescan_devices

SERVER_PREFIX = "soundvj_test_"
START_TIMEOUT_S = 15.0
_client_counter = itertools.count()


def _server_answers(name: str) -> bool:
    """True once a JACK client can connect to server `name` (jack_lsp exits 0 only then)."""
    env = {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_START_SERVER": "1"}
    done = subprocess.run(["jack_lsp"], capture_output=True, env=env, timeout=10)
    return done.returncode == 0


class JackServer:
    """A running jackd (dummy backend) that this test run started; see the module docstring."""

    def __init__(self, name: str, process: subprocess.Popen, log_path: Path) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def connections(self, port: str) -> list[str]:
        """The ports `port` is connected to (`jack_lsp -c` lists each port, then its peers indented)."""
        peers: list[str] = []
        current = None
        for line in self.ports_with_connections():
            if not line.startswith((" ", "\t")):
                current = line.strip()
            elif current == port:
                peers.append(line.strip())
        return peers

    def ports_with_connections(self) -> list[str]:
        env = {**os.environ, "JACK_DEFAULT_SERVER": self.name, "JACK_NO_START_SERVER": "1"}
        done = subprocess.run(["jack_lsp", "-c"], capture_output=True, text=True, env=env, timeout=10)
        return done.stdout.splitlines() if done.returncode == 0 else []

    def wait_connected(self, port: str, timeout: float = 5.0) -> bool:
        """Wait until `port` is connected to something (the app opened it). The server applies a new
        connection at a later process cycle than the call that made it, so a message sent at once
        could miss it; a controller a performer moves never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.connections(port):
                return True
            time.sleep(0.02)
        return False

    def virtual_output(self, port_name: str, client_name: str | None = None):
        """A MIDI output port in this process (a controller as the app sees it), opened through
        mido's rtmidi backend on the JACK API. Its full name is `<client_name>:<port_name>`."""
        import mido  # the live extra; the fixture has already checked it imports

        backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK")
        client = client_name or f"test_controller_{next(_client_counter)}"
        return backend.open_output(port_name, virtual=True, client_name=client)

    def raw_output(self, port_name: str, client_name: str):
        """A MIDI output port that sends any bytes it is given (rtmidi's JACK API, no mido checks):
        a broken or hostile controller. Close it with `.delete()`."""
        import rtmidi

        out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, client_name)
        out.open_virtual_port(port_name)
        return out

    def log_tail(self, chars: int = 400) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server by its PID: SIGTERM (jackd removes its sockets and shared memory), then
        SIGKILL if it has not gone within 10 s."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


CONTROLLER_SCRIPT = """
import sys, mido
port = mido.Backend("mido.backends.rtmidi/UNIX_JACK").open_output(sys.argv[2], virtual=True, client_name=sys.argv[1])
print("ready", flush=True)
for line in sys.stdin:
    control, value = map(int, line.split())
    port.send(mido.Message("control_change", control=control, value=value))
    print("sent", flush=True)
port.close()
"""


class ControllerProcess:
    """A controller in a process of its own: a virtual MIDI output port `<client>:<port>` that sends a
    CC for each `send`. For tests where the JACK server stops under the app: libjack keeps
    per-process state, so a controller in the test's own process would outlive its server badly
    (a crash at exit); a real controller's port lives outside the app too. Stopped by its PID."""

    def __init__(self, server_name: str, client: str, port: str) -> None:
        env = {**os.environ, "JACK_DEFAULT_SERVER": server_name, "JACK_NO_START_SERVER": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", CONTROLLER_SCRIPT, client, port], env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        if self.process.stdout.readline().strip() != "ready":
            self.stop()
            raise RuntimeError(f"the controller process could not open {client}:{port}")

    def send_cc(self, control: int, value: int) -> None:
        """Send one CC and return once the controller process has sent it."""
        self.process.stdin.write(f"{control} {value}\n")
        self.process.stdin.flush()
        self.process.stdout.readline()

    def stop(self) -> None:
        """Close the port (the controller is unplugged) and end the process by its PID."""
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
                self.process.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def start_jack_server(name: str, log_dir: Path) -> JackServer:
    """Start `jackd --no-realtime -n NAME -d dummy` and wait until a client can connect; raise
    RuntimeError with jackd's last words if it exits or does not answer in time."""
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["jackd", "--no-realtime", "-n", name, "-d", "dummy", "-r", "48000", "-p", "256"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
    server = JackServer(name, process, log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jackd exited with code {process.returncode}: {server.log_tail()}")
        if _server_answers(name):
            return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"jackd did not answer within {START_TIMEOUT_S:.0f} s: {server.log_tail()}")


def release_portaudio() -> None:
    """If PortAudio was initialised while JACK_DEFAULT_SERVER named our server, its JACK host API
    holds a client there, and PortAudio aborts the process at exit (an assertion in its JACK
    Terminate) once the server has gone. Re-initialising it now, with the variable restored,
    closes that client while the server still runs."""
    if "sounddevice" in sys.modules:
        rescan_devices()


@pytest.fixture(scope="session")
def jack_server() -> Iterator[JackServer]:
    """A JACK server of this run (dummy backend), named in JACK_DEFAULT_SERVER; stopped at the end."""
    missing = [tool for tool in ("jackd", "jack_lsp") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs a JACK server for real MIDI ports ({', '.join(missing)} not installed; Debian: jackd2)")
    try:
        import mido  # noqa: F401
        import rtmidi
    except ImportError as e:
        pytest.skip(f"needs the live extra's MIDI packages (mido, python-rtmidi): {e}")
    if rtmidi.API_UNIX_JACK not in rtmidi.get_compiled_api():
        pytest.skip("the installed python-rtmidi was built without its JACK API")
    log_dir = Path(tempfile.mkdtemp(prefix="soundvj_jack_"))
    name = f"{SERVER_PREFIX}{os.getpid()}"
    try:
        server = start_jack_server(name, log_dir)
    except RuntimeError as e:
        pytest.skip(f"the JACK server could not start here: {e}")
    previous = os.environ.get("JACK_DEFAULT_SERVER")
    os.environ["JACK_DEFAULT_SERVER"] = name
    try:
        yield server
    finally:
        if previous is None:
            os.environ.pop("JACK_DEFAULT_SERVER", None)
        else:
            os.environ["JACK_DEFAULT_SERVER"] = previous
        release_portaudio()
        server.stop()
        shutil.rmtree(log_dir, ignore_errors=True)
