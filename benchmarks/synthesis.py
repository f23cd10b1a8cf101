"""Milliseconds per frame of StyleGAN3 synthesis: reference ops vs the fast path, side by side.

Run: .venv/bin/python benchmarks/synthesis.py [--quick] [--threads 2] [--budget 4]

For each config and batch size it times `G.synthesis(ws)` (eval, no_grad, min over repeats) with
SOUNDVJ_OPS=reference, fast-torch (pure PyTorch fast path) and fast (C++ kernel where built), then
the backend the measured choice picks for the config (`backend_choice.measure`, as at model load)
and its speed-up over NVIDIA's reference composition (`chosen x`).
The floor is the modulated convolutions' FLOPs (2 * out * in * k * k * H_out * W_out per sample)
at this machine's measured float32 torch.mm rate; `fast/floor` is how far above it the fast path is.
The per-op breakdown at the end splits the 128 px config's fast path into its parts.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import core.stylegan3.networks as networks  # noqa: E402
from core.stylegan3 import ops  # noqa: E402
from core.stylegan3.ops import backend, backend_choice, cpp_kernel  # noqa: E402
from core.stylegan3.ops.filtered_lrelu import set_backend  # noqa: E402
from benchmarks.generators import build, sample_ws  # noqa: E402
from core.stylegan3.ops.cpp_kernel import vector_extensions  # noqa: E402

# name -> (img_resolution, channel_base, channel_max); StyleGAN3-T, 14 layers.
CONFIGS = {
    "T 64 (fixture)": (64, 4096, 128),
    "T 128 (issue)": (128, 8192, 256),
    "T 256 (paper)": (256, 32768, 512),
    "embedded default": None,
}
BREAKDOWN_CONFIG = "T 128 (issue)"
PATHS = ("reference", "fast-torch", "fast")




def conv_gflop_per_sample(G: networks.Generator) -> float:
    """Modulated-conv FLOPs of one frame (the part no resampling trick can remove)."""
    total = 0
    for layer in G.synthesis.layers():
        k = layer.conv_kernel
        h, w = (int(s) + k - 1 for s in layer.in_size)  # conv output (padding k - 1), before filtered_lrelu
        total += 2 * layer.out_channels * layer.in_channels * k * k * h * w
    return total / 1e9


def best_time(fn: Callable[[], object], budget_s: float, min_reps: int = 2, max_reps: int = 20) -> float:
    """Min wall time of fn over repeats (after one warm-up), within about budget_s."""
    t0 = time.perf_counter()
    fn()
    warm = time.perf_counter() - t0
    reps = max(1 if warm > budget_s else min_reps, min(max_reps, int(budget_s / max(warm, 1e-6))))
    best = warm
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def mm_gflops() -> float:
    """float32 torch.mm rate on a GEMM shaped like a 256->256 3x3 modulated conv at 76x76 (im2col)."""
    a, b = torch.randn(256, 256 * 9), torch.randn(256 * 9, 76 * 76)
    t = best_time(lambda: torch.mm(a, b), 1.0, min_reps=5)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / t / 1e9


def conv_gflops() -> float:
    """Dense 3x3 conv rate (oneDNN, channels_last) on the same problem, for comparison."""
    x = torch.randn(1, 256, 74, 74).contiguous(memory_format=torch.channels_last)
    w = torch.randn(256, 256, 3, 3)
    t = best_time(lambda: F.conv2d(x, w, padding=2), 1.0, min_reps=5)
    return 2 * 256 * 256 * 9 * 76 * 76 / t / 1e9


def breakdown(G: networks.Generator, ws: torch.Tensor, reps: int) -> dict[str, float]:
    """Per-op milliseconds of one frame (min over reps of each op's sum)."""
    times: dict[str, float] = collections.defaultdict(float)

    def timed(name: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            times[name] += time.perf_counter() - t0
            return out
        return wrapper

    saved = networks.modulated_conv2d, ops.filtered_lrelu, G.synthesis.input.forward
    networks.modulated_conv2d = timed("modulated conv", saved[0])
    ops.filtered_lrelu = timed("filtered_lrelu", saved[1])
    G.synthesis.input.forward = timed("input layer", saved[2])
    best: dict[str, float] = {}
    try:
        with torch.no_grad():
            G.synthesis(ws)
            for _ in range(reps):
                times.clear()
                t0 = time.perf_counter()
                G.synthesis(ws)
                total = time.perf_counter() - t0
                parts = dict(times, **{"other (affines, output)": total - sum(times.values()), "total": total})
                for k, v in parts.items():
                    best[k] = min(best.get(k, v), v)
    finally:
        networks.modulated_conv2d, ops.filtered_lrelu = saved[0], saved[1]
        del G.synthesis.input.forward
    return {k: v * 1e3 for k, v in best.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the 256 px reference and batch 4 of it; fewer repeats")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", type=float, default=4.0, help="seconds of repeats per cell (min over them)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    budget = args.budget / (2 if args.quick else 1)

    cpp_kernel.load(wait=True)
    set_backend("fast")
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"load average {os.getloadavg()[0]:.2f} (other work on the machine moves every number)")
    print(backend.describe_backend())
    print(f"CPU vector extensions: {vector_extensions()} (the C++ kernel's channel blocks follow the widest)")
    mm, conv = mm_gflops(), conv_gflops()
    print(f"float32 torch.mm (256x2304 @ 2304x5776): {mm:.0f} GFLOP/s;  oneDNN 3x3 conv, same problem: {conv:.0f} GFLOP/s")
    print()
    head = (f"{'config':<17} {'batch':>5} {'reference':>10} {'fast-torch':>10} {'fast':>8} {'chosen':>10} {'chosen x':>8} "
            f"{'GFLOP':>6} {'GFLOP/s':>8} {'floor':>7} {'fast/floor':>10} {'fast/conv-floor':>15}")
    print("ms per frame; GFLOP = modulated-conv FLOPs per frame; floor = GFLOP at the torch.mm rate;")
    print("conv-floor = GFLOP at the dense oneDNN conv rate (stricter where oneDNN beats torch.mm)")
    print(head)
    print("-" * len(head))
    for name, config in CONFIGS.items():
        G = build(config)
        gflop = conv_gflop_per_sample(G)
        chosen = backend_choice.measure(G, backend_choice.candidates(torch.device("cpu"))).backend
        for batch in (1, 4):
            ws = sample_ws(G, batch, batch)
            ms: dict[str, float | None] = {}
            for path in PATHS:
                if path == "reference" and args.quick and config is not None and config[0] >= 256:
                    ms[path] = None
                    continue
                set_backend(path)
                with torch.no_grad():
                    ms[path] = best_time(lambda: G.synthesis(ws), budget) * 1e3 / batch
            set_backend("auto")
            fast, ref = ms["fast"], ms["reference"]
            floor = gflop / mm * 1e3
            cell = lambda v: f"{v:.1f}" if v is not None else "skipped"  # noqa: E731
            speedup = f"{ref / ms[chosen]:.1f}x" if ref else "-"
            print(f"{name:<17} {batch:>5} {cell(ref):>10} {cell(ms['fast-torch']):>10} {cell(fast):>8} {chosen:>10} {speedup:>8} "
                  f"{gflop:>6.1f} {gflop / fast * 1e3:>8.0f} {floor:>7.1f} {fast / floor:>9.2f}x "
                  f"{fast / (gflop / conv * 1e3):>14.2f}x")
            if config is None and batch == 1:
                print(f"{'':<17} {'':>5} embedded default, {chosen}: {1000 / ms[chosen]:.0f} frames/s of synthesis alone")

    print()
    G = build(CONFIGS[BREAKDOWN_CONFIG])
    ws = sample_ws(G, 1, 1)
    parts = breakdown(G, ws, reps=4 if args.quick else 8)
    print(f"per-op breakdown, {BREAKDOWN_CONFIG}, batch 1, fast path (ms, min over repeats):")
    for k, v in parts.items():
        print(f"  {k:<26} {v:8.1f}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
