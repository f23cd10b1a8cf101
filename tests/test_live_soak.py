"""The long soak of the live path, run by hand (ten minutes):

    SOUNDVJ_SOAK_SECONDS=600 ./dev.sh test tests/test_live_soak.py -s
    SOUNDVJ_SOAK_SECONDS=600 SOUNDVJ_SOAK_MODEL=path/to/model.safetensors ./dev.sh test tests/test_live_soak.py -s

Real PortAudio input (a PulseAudio null sink's monitor, fed with loud and quiet seconds of noise), the
render worker at 24 fps, and a recording of the whole set. Checks: memory grows by under 50 MB, the
input never overflows, the ring never overruns, and the fps of every minute stays within 25 % of the
median minute. Prints what it measured (fps per interval, drops, memory, overflows).
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from core.model import load_model
from core.params import Params
from tests.live_helpers import wait_for
from tests.pulse_audio import PULSE_DEVICE, null_sink, pulse_server  # noqa: F401 - fixtures
from visualizer.session import InputChoice, LiveSession

SECONDS = float(os.environ.get("SOUNDVJ_SOAK_SECONDS", "0") or 0)
SR = 44100

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(SECONDS <= 0, reason="the soak runs by hand: SOUNDVJ_SOAK_SECONDS=600 ./dev.sh test "
                       "tests/test_live_soak.py -s"),
]


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def bursts(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    levels = np.where(np.arange(int(seconds)) % 2 == 0, 0.4, 0.03)
    return np.concatenate([(lv * rng.standard_normal(SR)).astype(np.float32) for lv in levels])


def test_soak(null_sink, tmp_path):
    model = load_model(os.environ.get("SOUNDVJ_SOAK_MODEL") or "default")
    session = LiveSession(model, Params(fps=24.0), InputChoice(device=PULSE_DEVICE))
    worker = session.worker
    worker.start()
    session.use_source(session.source_choice)
    per_minute: list[float] = []
    try:
        assert wait_for(lambda: session.input_state()[0] == "running", 10), session.input_state()
        with null_sink.play(bursts(60.0), loop=True):
            time.sleep(5.0)  # warm-up: first calls allocate
            rec = session.start_recording(tmp_path / "soak.mp4")
            rss0, t0, frames0, dropped0 = rss_mb(), time.monotonic(), worker.frames_made, worker.deadlines_dropped
            overflows0 = session.mic.overflows
            last_t, last_frames = t0, frames0
            while time.monotonic() - t0 < SECONDS:
                time.sleep(min(60.0, SECONDS / 5))
                now, frames = time.monotonic(), worker.frames_made
                per_minute.append((frames - last_frames) / (now - last_t))
                last_t, last_frames = now, frames
            elapsed = time.monotonic() - t0
            frames, dropped = worker.frames_made - frames0, worker.deadlines_dropped - dropped0
            growth = rss_mb() - rss0
            overflows = session.mic.overflows - overflows0
            session.stop_recording(wait=True)
    finally:
        session.stop()
    median = float(np.median(per_minute))
    print(f"\nsoak: {elapsed:.0f} s, model {model.source}; {frames} frames, {frames / elapsed:.1f} fps "
          f"(per interval {', '.join(f'{x:.1f}' for x in per_minute)}), dropped {dropped} "
          f"({100 * dropped / max(1, frames + dropped):.1f} % of deadlines); RSS growth {growth:+.1f} MB; "
          f"input overflows {overflows}; ring overruns {session.ring.overrun_samples} samples; "
          f"recording {rec.state}, {rec.path.stat().st_size / 1e6:.1f} MB")
    assert growth < 50, growth
    assert overflows == 0 and session.ring.overrun_samples == 0
    assert all(abs(x - median) <= 0.25 * median for x in per_minute), per_minute
    assert rec.state == "finished", rec.error
