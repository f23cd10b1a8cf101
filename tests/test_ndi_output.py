"""NDI output (`visualizer.outputs.ndi_sender.NdiSender`, the optional `soundvj[ndi]` extra) to a real
NDI receiver in another process (`tests/ndi_receiver.py`, plain cyndilib).

NDI multicasts on every network interface, so the sender and the receiver run only inside a
loopback-only network namespace (`tests/loopback_namespace.py`, the pattern of the Link tests).
Containers have no mDNS, so the receiver finds the source through NDI's extra IPs (127.0.0.1), set
in an NDI config file. Without cyndilib the namespace test skips and says so; the checks that need
no NDI session (the name, the one-line install hint) run directly.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from argparse import ArgumentParser

import numpy as np
import pytest

from core.errors import SoundvjError
from core.params import Params
from tests.loopback_namespace import ROOT, inner_only, namespace_problem, only_loopback, run_inner_tests
from visualizer.outputs.config import add_output_arguments
from visualizer.outputs.ndi_sender import NdiSender, check_ndi_available, check_ndi_name
from visualizer.render_worker import PublishedFrame

INSIDE = "SOUNDVJ_TEST_NDI_NAMESPACE"
inner = inner_only(INSIDE, "test_an_ndi_receiver_gets_the_source")
FPS = 24.0
SR = 44100
COLOUR = (200, 40, 90)
COLOUR_TOLERANCE = 8  # NDI compresses (SpeedHQ, 4:2:2): a few levels off


def test_without_cyndilib_ndi_says_how_to_install_it(monkeypatch):
    """No cyndilib: `--ndi` is one line with `pip install 'soundvj[ndi]'` and exit 2, before any window."""
    monkeypatch.setitem(sys.modules, "cyndilib", None)  # import cyndilib raises ImportError
    with pytest.raises(SoundvjError) as e:
        check_ndi_available()
    assert "pip install 'soundvj[ndi]'" in str(e.value) and "\n" not in str(e.value)
    done = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['cyndilib'] = None; from core.cli import main; "
         "sys.exit(main(['live', '--ndi', 'stage left']))"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "pip install 'soundvj[ndi]'" in done.stderr


def test_ndi_names_are_checked_and_default_to_soundvj():
    """`--ndi` alone names the source soundvj; a name is 1-63 printable characters without brackets
    (NDI shows it as "HOST (NAME)")."""
    parser = ArgumentParser()
    add_output_arguments(parser)
    assert parser.parse_args(["--ndi"]).ndi == "soundvj"
    assert parser.parse_args(["--ndi", "stage left"]).ndi == "stage left"
    assert parser.parse_args([]).ndi is None
    assert check_ndi_name(" stage left ") == "stage left"
    for bad in ("", "a" * 64, "x(y)", "tab\there"):
        with pytest.raises(SoundvjError) as e:
            check_ndi_name(bad)
        assert str(e.value).startswith("--ndi ")


def test_an_ndi_receiver_gets_the_source(tmp_path):
    """Re-runs the `inner` tests in a new network namespace with only `lo` up, so NDI's multicast never
    leaves this process tree: a receiver in another process finds the source and gets its frames."""
    problem = namespace_problem("cyndilib", "pip install 'soundvj[ndi]'")
    if problem:
        pytest.skip(f"needs NDI in a loopback-only network namespace: {problem}")
    config = tmp_path / "ndi-config.v1.json"
    config.write_text(json.dumps({"ndi": {"networks": {"ips": "127.0.0.1", "discovery": ""}}}))
    run_inner_tests("tests/test_ndi_output.py", INSIDE, env={"NDI_CONFIG_DIR": str(tmp_path)})


@inner
def test_inner_a_receiver_gets_the_frames_size_colour_and_sound():
    """An NdiSender named soundvj-test at 24 fps, 320x180, with sound, fed solid frames as the render
    thread does: a receiver process finds "HOST (soundvj-test)", gets frames at 320x180 in the colour
    fed, at least 90 % of the rate while connected, and the sound at the set's sample rate; the
    sender counts the receiver."""
    assert only_loopback(), "NDI must only run inside a loopback-only network namespace"
    messages: list[str] = []
    sender = NdiSender("soundvj-test", FPS, (320, 180), sample_rate=SR, on_message=messages.append).start()
    stop = threading.Event()
    receivers_seen = []

    def render_thread() -> None:
        start, fed, index = time.monotonic(), 0, 0
        while not stop.is_set():
            due = int((time.monotonic() - start) * SR)
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(fed, due) / SR)).astype(np.float32)
            fed = due
            image = np.empty((64, 64, 3), np.uint8)
            image[...] = COLOUR
            now = time.monotonic()
            sender.feed(PublishedFrame(image=image, index=index, shown_at=now, audio_arrival=now, params=Params(),
                                       mel=np.zeros((1, 1), np.float32)), tone)
            receivers_seen.append(sender.receivers)
            index += 1
            time.sleep(max(0.0, start + index / FPS - time.monotonic()))

    feeder = threading.Thread(target=render_thread, daemon=True)
    feeder.start()
    try:
        assert sender.wait_live(10.0), (sender.status_text(), messages)
        seconds = 3.0
        done = subprocess.run([sys.executable, str(ROOT / "tests" / "ndi_receiver.py"), "soundvj-test", str(seconds)],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
    finally:
        stop.set()
        feeder.join(5)
        sender.stop()
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["source"].endswith("(soundvj-test)")
    assert got["resolutions"] == [[320, 180]]
    assert got["seconds"] > 1.0 and got["frames"] >= 0.9 * FPS * got["seconds"], (got["frames"], got["seconds"])
    # NDI's send may block for a few frames while a receiver connects; the output skips those ticks.
    assert got["dropped"] == 0 and sender.frames_dropped <= FPS / 2
    assert len(got["means"]) >= 10
    means = np.array(got["means"])
    assert (np.abs(means - COLOUR).max(axis=1) <= COLOUR_TOLERANCE).all(), means[:3]
    assert got["sample_rate"] == SR and got["audio_frames"] >= 0.9 * got["frames"]  # one per picture
    assert abs(got["audio_peak"] - 0.3) < 0.05  # the tone fed
    assert max(receivers_seen) == 1
    assert sender.state == "stopped" and messages[0] == "NDI soundvj-test: live (320x180, 24 fps, with sound)"
