"""Control path speed: what playing with the rig costs the render thread, section by section.

    python benchmarks/control.py                        # every section
    python benchmarks/control.py --section modulators   # one section (repeat the flag for more)
    python benchmarks/control.py --list                 # the sections and what each measures

Each section is a function registered with `@section("name", "what it measures")` that takes the
parsed arguments and prints its own lines; add one by writing such a function (the argument parser
is shared, so a section may add its flags in `add_arguments`).

modulators: the per-frame cost, on one thread, of the control work the render thread adds to a
frame: the sound analysis on the windower's newest window (`SoundFeatureTracker.update`), the beat
clock (`BeatClock.observe`) and a realistic modulation matrix (8 modulations, every kind of source)
applied to the frame's parameter snapshot (`ModulationMatrix.apply`). The audio is a 120 BPM kick
and hat pattern over a noise floor, fed to a real `StreamingWindower` a video frame at a time; the
windower's own mel work is the sound models' and is not counted.

midi: the time from a MIDI CC, sent on a real JACK port (a JACK server with the dummy backend is
started for it and stopped by its PID), to the first frame the live session renders with its value.

osc: the time from an OSC message (UDP on 127.0.0.1) to the first frame the live session renders
with its value, through the real path (the OSC thread, the dispatcher, the registry, the mailbox).

flood: the render rate without and with a flood of 10,000 OSC messages a second (from another
process, to one address), and the process's memory before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.audio.mel import MelConfig  # noqa: E402
from core.audio.windows import StreamingWindower, WindowConfig  # noqa: E402
from core.control import BeatClock, Modulation, ModulationMatrix, SoundFeatureTracker  # noqa: E402
from core.params import Params  # noqa: E402

Section = Callable[[argparse.Namespace], None]
SECTIONS: dict[str, tuple[Section, str]] = {}


def section(name: str, what: str) -> Callable[[Section], Section]:
    """Register a benchmark section under `name` (run in registration order)."""

    def register(run: Section) -> Section:
        SECTIONS[name] = (run, what)
        return run

    return register


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=60.0, help="audio seconds per measurement (default 60)")
    parser.add_argument("--fps", type=float, default=24.0, help="video frame rate (default 24)")
    parser.add_argument("--model", default=None, help="midi: the model to render with (default: the shipped one)")
    parser.add_argument("--midi-events", type=int, default=100, help="midi: CCs to time (default 100)")
    parser.add_argument("--osc-events", type=int, default=100, help="osc: messages to time (default 100)")
    parser.add_argument("--flood-seconds", type=float, default=30.0,
                        help="flood: seconds of each measurement, without and with the flood (default 30)")


def percentiles_us(seconds: list[float]) -> str:
    us = np.array(seconds) * 1e6
    return (f"median {np.median(us):7.1f} us   p95 {np.percentile(us, 95):7.1f} us   "
            f"max {us.max():8.1f} us   ({us.size} frames)")


# --- modulators ----------------------------------------------------------------------------------

REALISTIC_MATRIX = ModulationMatrix((
    Modulation("noise", "onset", 0.8, decay=0.15),  # a noise burst on each kick
    Modulation("psi", "low", 0.4),  # psi breathing with the bass
    Modulation("rotate_deg", "saw", 180.0, beats=4),  # one turn a bar
    Modulation("alpha_fine", "onset_strength", 0.3),
    Modulation("alpha", "envelope", 0.2),
    Modulation("pan_x", "sine", 0.1, beats=8),
    Modulation("pan_y", "sample_hold", 0.05, beats=1),
    Modulation("alpha_coarse", "square", 0.05, beats=16),
))


def kick_and_hat_pattern(seconds: float, sample_rate: int, bpm: float = 120.0) -> np.ndarray:
    """Kicks on the beat, hats on the off-beat, over a -40 dBFS noise floor."""
    rng = np.random.default_rng(0)
    n = int(seconds * sample_rate)
    out = 0.01 * rng.standard_normal(n)
    t = np.arange(int(0.25 * sample_rate)) / sample_rate
    kick = 0.6 * np.sin(2 * np.pi * np.cumsum(50 + 100 * np.exp(-t / 0.03)) / sample_rate) * np.exp(-t / 0.08)
    hat = 0.2 * rng.standard_normal(int(0.03 * sample_rate)) * np.exp(-np.arange(int(0.03 * sample_rate)) / 200)
    beat = 60.0 / bpm
    for start in np.arange(0.0, seconds - 0.3, beat):
        i, j = int(start * sample_rate), int((start + beat / 2) * sample_rate)
        out[i : i + kick.size] += kick
        out[j : j + hat.size] += hat
    return out.astype(np.float32)


@section("modulators", "sound analysis + beat clock + an 8-modulation matrix, per frame, one thread")
def bench_modulators(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    mel = MelConfig()
    audio = kick_and_hat_pattern(args.seconds, mel.sample_rate)
    windower = StreamingWindower(mel, WindowConfig(fps=args.fps, window_seconds=1.0))
    tracker, clock, base = SoundFeatureTracker(mel), BeatClock(), Params()
    analysis, following, matrix, total = [], [], [], []
    per_frame = mel.sample_rate / args.fps
    for k in range(int(args.seconds * args.fps)):
        windower.push(audio[round(k * per_frame) : round((k + 1) * per_frame)])
        window, end = windower.latest(), windower.samples_seen
        audio_now = end / mel.sample_rate
        t0 = time.perf_counter()
        features = tracker.update(window, end)
        t1 = time.perf_counter()
        clock.observe(features)
        t2 = time.perf_counter()
        REALISTIC_MATRIX.apply(base, features, clock, audio_now)
        t3 = time.perf_counter()
        analysis.append(t1 - t0)
        following.append(t2 - t1)
        matrix.append(t3 - t2)
        total.append(t3 - t0)
    warm = int(2 * args.fps)  # the first seconds fill the clock's history; measure the steady state
    print(f"modulators: {args.seconds:g} s of a 120 BPM kick/hat pattern at {args.fps:g} fps, one thread, "
          f"{len(REALISTIC_MATRIX)} modulations")
    print(f"  sound analysis      {percentiles_us(analysis[warm:])}")
    print(f"  beat clock          {percentiles_us(following[warm:])}")
    print(f"  modulation matrix   {percentiles_us(matrix[warm:])}")
    print(f"  total per frame     {percentiles_us(total[warm:])}   budget 1000 us")
    print(f"  clock: {clock.bpm:.2f} BPM ({clock.tempo_source}); mean total "
          f"{statistics.fmean(total[warm:]) * 1e6:.1f} us")


# --- midi ----------------------------------------------------------------------------------------

class FrameLog:
    """A frame sink that notes when each frame was published and the psi it was made with (the
    render thread calls `feed`; an append returns at once)."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, float]] = []

    def feed(self, frame, audio) -> None:  # noqa: ANN001 - visualizer.render_worker.FrameSink
        self.frames.append((frame.shown_at, frame.params.psi))


@section("midi", "a MIDI CC on a real JACK port -> the first frame made with its value (median, p95)")
def bench_midi(args: argparse.Namespace) -> None:
    """A virtual controller port sends CC 1 (bound to psi) at random moments over a JACK server with
    the dummy backend; the live session's real path carries it (rtmidi callback, the MIDI thread,
    the dispatcher, the registry, the render worker's mailbox) to a frame. Times are from just
    before the send to the publication of the first frame whose parameters hold the new value;
    the screen's paint comes after and is not counted."""
    # Only this section needs the live extra and a JACK server, so they are imported here.
    import tempfile

    import mido

    from core.model import load_model
    from core.stylegan3.ops import backend as ops_backend
    from tests.jack_server import start_jack_server
    from visualizer.control.bindings import Binding, ControlSource, ControlTarget
    from visualizer.control.midi import MidiInput, MidiSettings
    from visualizer.session import LiveSession

    try:
        server = start_jack_server(f"soundvj_bench_{os.getpid()}", Path(tempfile.mkdtemp(prefix="soundvj_jack_")))
    except (OSError, RuntimeError) as e:
        print(f"midi: skipped, no JACK server here ({e})")
        return
    os.environ["JACK_DEFAULT_SERVER"] = server.name
    try:
        model = load_model(args.model, device=None)
        ops_backend.prepare(model.device.type, wait=True)
        session = LiveSession(model, Params(fps=args.fps))
        session.control.set_bindings([Binding(ControlSource("cc", number=1, channel=1),
                                              ControlTarget("param", param="psi"))])
        log = FrameLog()
        session.worker.add_sink(log)
        arrivals: list[tuple[int, float]] = []  # (CC value, when the MIDI thread took it from rtmidi)

        def on_event(event) -> None:  # noqa: ANN001 - a visualizer.control.midi.MidiEvent
            arrivals.append((event.value, event.received_at))
            session.control.midi(event)

        port = mido.Backend("mido.backends.rtmidi/UNIX_JACK").open_output(
            "knobs", virtual=True, client_name="bench_controller")
        midi = MidiInput(on_event, MidiSettings(port="bench_controller:knobs", api="jack", rescan_seconds=0),
                         reporter=session.control.reporter)
        midi.start()
        session.worker.start()
        time.sleep(2.0)  # warm-up: first frames allocate
        rng = np.random.default_rng(0)
        sends: list[tuple[int, float]] = []
        for i in range(args.midi_events):
            value = 1 + (i * 37) % 126  # 1..126, never the previous value
            sent = time.monotonic()
            port.send(mido.Message("control_change", control=1, value=value))
            sends.append((value, sent))
            time.sleep(rng.uniform(2.0, 4.0) / args.fps)  # lands anywhere between two frame deadlines
        time.sleep(0.5)
        session.worker.stop()
        midi.stop()
        port.close()
        xruns = sum("XRun" in line for line in server.log_path.read_text(errors="replace").splitlines())
    finally:
        os.environ.pop("JACK_DEFAULT_SERVER", None)
        server.stop()
    to_thread, to_frame, missing = [], [], 0
    frames = log.frames
    for value, sent in sends:
        psi = value / 127.0 * 1.5
        # Values repeat every 126 sends: only what comes within a few seconds belongs to this send.
        shown = next((t for t, p in frames if sent <= t < sent + 3.0 and abs(p - psi) < 1e-6), None)
        arrived = next((t for v, t in arrivals if sent <= t < sent + 3.0 and v == value), None)
        if shown is None or arrived is None:
            missing += 1
            continue
        to_thread.append(arrived - sent)
        to_frame.append(shown - sent)

    def ms(xs: list[float]) -> str:
        return f"median {np.median(xs) * 1e3:6.1f} ms   p95 {np.percentile(xs, 95) * 1e3:6.1f} ms   " \
               f"max {np.max(xs) * 1e3:6.1f} ms"

    fps = len(frames) / (frames[-1][0] - frames[0][0]) if len(frames) > 1 else float("nan")
    print(f"midi: {len(sends)} CCs over JACK (dummy backend), {model.source}, "
          f"{model.generator.img_resolution} px, target {args.fps:g} fps (rendered {fps:.1f})")
    print(f"  send -> MIDI thread          {ms(to_thread)}")
    print(f"  send -> first frame with it  {ms(to_frame)}   (frame period {1e3 / args.fps:.1f} ms)")
    stages = session.worker.pipeline.times.as_ms_per_frame()
    print(f"  a frame's own work: {sum(stages.values()):.1f} ms ("
          + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()) + "); a value read at a frame's start "
          "shows when that frame is published")
    print(f"  JACK xruns during the run: {xruns} (a cycle the server could not finish in time; a "
          "loaded machine makes them, and the MIDI of such a cycle can be lost)")
    if missing:
        print(f"  {missing} CCs never showed in a frame (superseded by the next one before a frame, or lost)")


# --- osc -----------------------------------------------------------------------------------------

def osc_session(args: argparse.Namespace):  # noqa: ANN201 - (LiveSession, OscInput), imported lazily
    """A live session on silence with OSC in on a free port of 127.0.0.1, started and warmed up."""
    from core.model import load_model
    from core.stylegan3.ops import backend as ops_backend
    from visualizer.control.osc import OscInput
    from visualizer.session import LiveSession

    model = load_model(args.model, device=None)
    ops_backend.prepare(model.device.type, wait=True)
    session = LiveSession(model, Params(fps=args.fps))
    osc = OscInput(session.control, "127.0.0.1", 0)
    osc.start()
    session.worker.start()
    time.sleep(2.0)  # warm-up: first frames allocate
    return session, osc


@section("osc", "an OSC message over UDP -> the first frame made with its value (median, p95)")
def bench_osc(args: argparse.Namespace) -> None:
    """Sends /soundvj/param/psi with a new value at random moments between frame deadlines; times
    from just before the send to the publication of the first frame whose parameters hold it."""
    from pythonosc.udp_client import SimpleUDPClient

    session, osc = osc_session(args)
    log = FrameLog()
    session.worker.add_sink(log)
    client = SimpleUDPClient("127.0.0.1", osc.bound_port)
    rng = np.random.default_rng(0)
    sends: list[tuple[float, float]] = []
    try:
        for i in range(args.osc_events):
            psi = 0.1 + 0.01 * (i % 100)  # never the previous value
            sent = time.monotonic()
            client.send_message("/soundvj/param/psi", psi)
            sends.append((float(np.float32(psi)), sent))
            time.sleep(rng.uniform(2.0, 4.0) / args.fps)
        time.sleep(0.5)
    finally:
        osc.stop()
        session.stop()
    frames = log.frames
    delays, missing = [], 0
    for psi, sent in sends:
        shown = next((t for t, p in frames if t >= sent and abs(p - psi) < 1e-6), None)
        if shown is None:
            missing += 1
        else:
            delays.append(shown - sent)
    fps = len(frames) / (frames[-1][0] - frames[0][0]) if len(frames) > 1 else float("nan")
    print(f"osc: {len(sends)} messages over UDP on 127.0.0.1, {session.model.source}, "
          f"{session.model.generator.img_resolution} px, target {args.fps:g} fps (rendered {fps:.1f})")
    print(f"  send -> first frame with it  median {np.median(delays) * 1e3:6.1f} ms   "
          f"p95 {np.percentile(delays, 95) * 1e3:6.1f} ms   max {np.max(delays) * 1e3:6.1f} ms   "
          f"(frame period {1e3 / args.fps:.1f} ms)")
    if missing:
        print(f"  {missing} messages never showed in a frame")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@section("flood", "render fps without and with 10,000 OSC messages a second; memory")
def bench_flood(args: argparse.Namespace) -> None:
    import subprocess

    from tests.test_osc import FLOOD_SENDER

    session, osc = osc_session(args)
    worker = session.worker

    def fps_over(seconds: float) -> float:
        frames, start = worker.frames_made, time.monotonic()
        time.sleep(seconds)
        return (worker.frames_made - frames) / (time.monotonic() - start)

    seconds = args.flood_seconds
    try:
        before, rss_before = fps_over(seconds), rss_mb()
        sender = subprocess.Popen([sys.executable, "-c", FLOOD_SENDER, str(osc.bound_port), "10000", str(seconds + 1)],
                                  stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        during, rss_during = fps_over(seconds), rss_mb()
        sent = int(sender.communicate(timeout=seconds + 60)[0])
        after = fps_over(seconds)
    finally:
        osc.stop()
        session.stop()
    print(f"flood: 10,000 OSC messages/s to one address for {seconds + 1:g} s ({sent} sent, {osc.datagrams} read, "
          f"{osc.messages - osc.coalesced} applied), {session.model.source}, target {args.fps:g} fps")
    print(f"  fps without {before:5.1f}   with {during:5.1f} ({during / before * 100:5.1f} %)   after {after:5.1f}")
    print(f"  memory {rss_before:7.1f} MB before, {rss_during:7.1f} MB during the flood")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", action="append", choices=list(SECTIONS), help="run only these sections")
    parser.add_argument("--list", action="store_true", help="list the sections and exit")
    add_arguments(parser)
    args = parser.parse_args()
    if args.list:
        for name, (_run, what) in SECTIONS.items():
            print(f"{name:12s} {what}")
        return
    for name in args.section or list(SECTIONS):
        SECTIONS[name][0](args)


if __name__ == "__main__":
    main()
