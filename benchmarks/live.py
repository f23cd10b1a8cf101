"""Live path speed: render fps, dropped frames and audio-to-frame latency of the real render worker.

    python benchmarks/live.py                    # embedded default, 20 s, a synthetic callback
    python benchmarks/live.py --seconds 600      # the 10-minute soak: also memory growth and overruns
    python benchmarks/live.py --input pulse      # real PortAudio input (PulseAudio's default source)
    python benchmarks/live.py --stream local --record /tmp/take.mp4   # outputs on against off

With `--stream` and/or `--record` the run has two halves of `--seconds` each: first with the outputs
off, then with them on, and prints the render fps of both. `--stream local` streams (udp, with the
sound) to an ffmpeg receiver this script starts on 127.0.0.1 and ends; `--stream udp://HOST:PORT`
sends to that address (with no listener UDP sends anyway, so the sender's cost is all there).

Audio arrives as a sound card delivers it: blocks of `--block` samples written into the `SampleRing`
at the real rate by a feeder thread, through the same `write` the PortAudio callback calls (or by a
real input stream with `--input`). Latency is measured from the arrival of the newest sample a frame
heard (stamped in `write`) to that frame's publication in the frame slot.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.model import load_model  # noqa: E402
from core.params import Params  # noqa: E402
from core.stylegan3.ops import backend as ops_backend  # noqa: E402
from core.stylegan3.ops import cpp_kernel  # noqa: E402
from visualizer.audio_ring import SampleRing  # noqa: E402
from visualizer.mic_input import MicInput  # noqa: E402
from visualizer.outputs.stream_sender import DEFAULT_SIZE, StreamSender, parse_stream_size  # noqa: E402
from visualizer.recorder import SessionRecorder  # noqa: E402
from visualizer.render_worker import RenderWorker  # noqa: E402


def host_kind() -> str:
    """The CPU's vector extensions and what torch and the C++ kernel use of them (an AVX2-only host can
    be emulated on an AVX-512 one: ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
    MKL_ENABLE_INSTRUCTIONS=AVX2 SOUNDVJ_KERNEL_ISA=avx2)."""
    limit = cpp_kernel.kernel_isa_limit()
    kernel = "without AVX-512 (SOUNDVJ_KERNEL_ISA=avx2)" if limit else "native"
    return (f"{cpp_kernel.vector_extensions()}; torch uses {torch.backends.cpu.get_cpu_capability()}; "
            f"kernel {kernel}; {os.cpu_count()} cores")


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def feeder(ring: SampleRing, block: int, stop: threading.Event) -> None:
    """Blocks of noise bursts at the real sample rate, like a callback thread."""
    rng = np.random.default_rng(0)
    sr = ring.sample_rate
    t0 = time.monotonic()
    written = 0
    while not stop.is_set():
        due = t0 + (written + block) / sr
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        level = 0.5 if (written // sr) % 2 else 0.05  # loud and quiet seconds, so the picture moves
        data = (level * rng.standard_normal((block, 1))).astype(np.float32)
        ring.write(data)
        written += block


def local_receiver() -> tuple[str, subprocess.Popen]:
    """An ffmpeg on 127.0.0.1 that receives a udp stream and decodes it to nothing: (url, process)."""
    if shutil.which("ffmpeg") is None:
        sys.exit("--stream local needs the ffmpeg program")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error",
                                "-i", f"udp://127.0.0.1:{port}?fifo_size=1000000&overrun_nonfatal=1",
                                "-f", "null", "-"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    return f"udp://127.0.0.1:{port}?pkt_size=1316", process


def measure(worker: RenderWorker, seconds: float) -> tuple[float, float, list[float]]:
    """(frames/s, dropped deadlines, per-interval frames/s) of a running worker over `seconds`."""
    frames0, dropped0, t0 = worker.frames_made, worker.deadlines_dropped, time.monotonic()
    samples_fps = []
    last_frames, last_t = frames0, t0
    while time.monotonic() - t0 < seconds:
        time.sleep(min(10.0, seconds / 4))
        now, frames = time.monotonic(), worker.frames_made
        samples_fps.append((frames - last_frames) / (now - last_t))
        last_frames, last_t = frames, now
    elapsed = time.monotonic() - t0
    return (worker.frames_made - frames0) / elapsed, worker.deadlines_dropped - dropped0, samples_fps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--fps", type=float, default=24.0)
    ap.add_argument("--block", type=int, default=512, help="samples per callback (synthetic input)")
    ap.add_argument("--input", default=None, help="a real input device name (PortAudio), e.g. pulse")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stream", default=None, metavar="URL|local",
                    help="second half with a stream: to URL, or to an ffmpeg receiver started here (local)")
    ap.add_argument("--stream-size", default=f"{DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]}", metavar="WxH")
    ap.add_argument("--no-stream-audio", action="store_true", help="stream the picture only")
    ap.add_argument("--record", default=None, metavar="OUT.mp4", help="second half with a recording to this file")
    ap.add_argument("--embed-in-place", action="store_true",
                    help="compute the sound embedding's key frames on the render thread, not on their own thread")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model(args.model, device=None)
    ops_backend.prepare(model.device.type, wait=True)
    ring = SampleRing(int(10 * model.mel_config.sample_rate), model.mel_config.sample_rate)
    worker = RenderWorker(model, ring, Params(fps=args.fps), keep_latencies=10**7)
    if args.embed_in_place:
        worker.show.pipeline.embed_in_background(False)
    for _ in range(5):  # warm-up (first calls allocate)
        worker.tick()
    stop = threading.Event()
    mic = None
    if args.input:
        mic = MicInput(ring, args.input)
        mic.start()
    else:
        threading.Thread(target=feeder, args=(ring, args.block, stop), daemon=True).start()
    time.sleep(0.5)
    ring.read_new()  # start from now
    worker.clear_latencies()
    frames0, dropped0 = worker.frames_made, worker.deadlines_dropped
    rss0 = rss_mb()
    worker.start()
    t0 = time.monotonic()
    with_outputs = args.stream is not None or args.record is not None
    fps_off, dropped_off, samples_fps = measure(worker, args.seconds)
    sender = recorder = receiver = None
    if with_outputs:
        sr = model.mel_config.sample_rate
        if args.stream is not None:
            url = args.stream
            if url == "local":
                url, receiver = local_receiver()
            sender = StreamSender(url, args.fps, parse_stream_size(args.stream_size),
                                  sample_rate=None if args.no_stream_audio else sr, on_message=print).start()
            worker.add_sink(sender)
        if args.record is not None:
            res = model.generator.img_resolution
            recorder = SessionRecorder(args.record, args.fps, res, res, sr)
            worker.add_sink(recorder)
        fps_on, dropped_on, samples_on = measure(worker, args.seconds)
    worker.stop()
    stop.set()
    if mic is not None:
        mic.stop()
    for out in (sender, recorder):
        if out is not None:
            worker.remove_sink(out)
            out.stop()
    if receiver is not None:
        receiver.kill()
        receiver.wait(10)
    elapsed = time.monotonic() - t0
    frames = worker.frames_made - frames0
    dropped = worker.deadlines_dropped - dropped0
    lat = np.array(worker.latencies) * 1000
    times = worker.pipeline.times.as_ms_per_frame()
    print(f"cpu:            {host_kind()}")
    print(f"model:          {model.source}, {model.generator.img_resolution} px, device {model.device}")
    print(f"ops backend:    {ops_backend.describe_backend()}")
    if model.sound.config.uses_sound_embedding:
        where = "on the render thread" if args.embed_in_place else "on its own thread (one torch thread)"
        print(f"sound embedding: key frames {where}")
    print(f"run:            {elapsed:.1f} s at target {args.fps:g} fps, {args.threads} torch threads, "
          f"input {'PortAudio ' + args.input if args.input else f'synthetic callback ({args.block} samples)'}")
    print(f"render fps:     {fps_off:.1f} (per interval: {', '.join(f'{x:.1f}' for x in samples_fps)})"
          + (" with the outputs off" if with_outputs else ""))
    if with_outputs:
        on = " + ".join(name for name, out in (("stream", sender), ("recording", recorder)) if out is not None)
        print(f"render fps:     {fps_on:.1f} (per interval: {', '.join(f'{x:.1f}' for x in samples_on)}) "
              f"with {on} on; dropped deadlines {dropped_off} off, {dropped_on} on")
    if sender is not None:
        print(f"stream:         {sender.width}x{sender.height}, {sender.frames_sent} sent, {sender.frames_repeated} "
              f"repeated, {sender.frames_dropped} dropped; {sender.state}{': ' + sender.error if sender.error else ''}")
    if recorder is not None:
        print(f"recording:      {recorder.frames_written} frames, {recorder.seconds:.1f} s of sound, "
              f"{recorder.state}{': ' + recorder.error if recorder.error else ''}")
    print(f"dropped frames: {dropped} ({100 * dropped / max(1, dropped + frames):.1f} % of deadlines)")
    print(f"latency:        median {np.median(lat):.1f} ms, p95 {np.percentile(lat, 95):.1f} ms, "
          f"max {lat.max():.1f} ms (sample arrival -> frame published)")
    print("stage ms/frame: " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))
    print(f"ring overruns:  {ring.overrun_samples} samples" + (f"; input overflows {mic.overflows}" if mic else ""))
    print(f"memory:         RSS {rss0:.0f} -> {rss_mb():.0f} MB (growth {rss_mb() - rss0:+.1f} MB); "
          f"peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
