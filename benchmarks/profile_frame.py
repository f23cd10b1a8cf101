"""Where a live frame's time goes: a per-op profile (torch.profiler) of the sound models and of synthesis.

    python benchmarks/profile_frame.py                  # embedded default, 200 frames, top 15 ops each
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 SOUNDVJ_KERNEL_ISA=avx2 \\
        python benchmarks/profile_frame.py             # the same, as an AVX2-only host runs it

Each stage runs as the render thread runs it: the sound models (E_A, E_I and the stepper) on one
thread on one window at a time, synthesis on `--threads` threads, one frame at a time. The table lists
each stage's ops by self CPU time (ms per frame and share of the stage), so the per-op overhead of the
small networks shows beside their arithmetic.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.audio.demo import demo_soundscape  # noqa: E402
from core.model import load_model  # noqa: E402
from core.params import Params  # noqa: E402
from core.pipeline import FramePipeline  # noqa: E402
from core.stylegan3.ops import backend as ops_backend  # noqa: E402
from core.stylegan3.ops import cpp_kernel  # noqa: E402


def top_ops(prof: profile, frames: int, count: int) -> list[str]:
    """The `count` ops with the most self CPU time, as lines: ms per frame, share, calls per frame."""
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    lines = []
    for e in events[:count]:
        lines.append(f"  {e.key[:48]:<48} {e.self_cpu_time_total / 1000 / frames:7.3f} ms "
                     f"{100 * e.self_cpu_time_total / total:5.1f} %  {e.count / frames:6.1f} calls")
    lines.append(f"  {'(all ops)':<48} {total / 1000 / frames:7.3f} ms")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2, help="synthesis threads (the sound models use 1)")
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()

    model = load_model(args.model, device="cpu")
    ops_backend.prepare("cpu", wait=True)
    pipeline = FramePipeline(model, Params())
    windower = pipeline.make_windower()
    sr = model.mel_config.sample_rate
    sound_clip = demo_soundscape(seconds=args.frames / pipeline.params.fps + 2, sample_rate=sr)
    windows = torch.stack([fw.mel for fw in windower.push(sound_clip.numpy())][: args.frames])

    def sound(i: int) -> torch.Tensor:
        return pipeline.step_latents(windows[i : i + 1])

    warm = min(20, args.frames)
    torch.set_num_threads(1)
    ws = [sound(i) for i in range(warm)]
    with profile(activities=[ProfilerActivity.CPU]) as sound_prof:
        t0 = time.perf_counter()
        ws = [sound(i) for i in range(args.frames)]
        sound_ms = 1000 * (time.perf_counter() - t0) / args.frames
    torch.set_num_threads(args.threads)
    for w in ws[:warm]:
        pipeline.synthesize(w)
    with profile(activities=[ProfilerActivity.CPU]) as synth_prof:
        t0 = time.perf_counter()
        for w in ws:
            pipeline.synthesize(w)
        synth_ms = 1000 * (time.perf_counter() - t0) / args.frames

    print(f"cpu: {cpp_kernel.vector_extensions()}; torch uses {torch.backends.cpu.get_cpu_capability()}; "
          f"kernel {'without AVX-512' if cpp_kernel.kernel_isa_limit() else 'native'}")
    print(f"model: {model.source}, {model.generator.img_resolution} px; {args.frames} frames")
    print(f"ops backend: {ops_backend.describe_backend()}")
    print(f"sound models (E_A, E_I, stepper), 1 thread: {sound_ms:.2f} ms/frame under the profiler")
    print("\n".join(top_ops(sound_prof, args.frames, args.top)))
    print(f"synthesis, {args.threads} threads: {synth_ms:.2f} ms/frame under the profiler")
    print("\n".join(top_ops(synth_prof, args.frames, args.top)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
