"""Milliseconds per live frame on a CUDA GPU: fp32 eager, then fp16, channels_last, CUDA graph, torch.compile.

Run: .venv/bin/python benchmarks/cuda_live.py [--configs default,T256] [--reps 50] [--compile]

Batch 1 (the live path) through `LiveSynthesis`, each variant timed with CUDA events (median of
`--reps` after warm-up), and each variant's max / mean abs difference from fp32 eager on the same
ws. Without a GPU it says so and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.stylegan3.live_synthesis import LiveSynthesis, LiveSynthesisOptions  # noqa: E402
from benchmarks.generators import build, sample_ws  # noqa: E402

CONFIGS = {"default": None, "T128": (128, 8192, 256), "T256": (256, 32768, 512)}
VARIANTS = {
    "fp32 eager": LiveSynthesisOptions(),
    "fp16": LiveSynthesisOptions(fp16=True),
    "fp16 + channels_last": LiveSynthesisOptions(fp16=True, channels_last=True),
    "fp32 + CUDA graph": LiveSynthesisOptions(cuda_graph=True),
    "fp16 + channels_last + CUDA graph": LiveSynthesisOptions(fp16=True, channels_last=True, cuda_graph=True),
}



def median_ms(live: LiveSynthesis, ws: torch.Tensor, reps: int) -> float:
    for _ in range(5):
        live(ws)
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        live(ws)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="default,T256")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (minutes of compiling)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU on this machine: nothing to measure (skipped)")
        return 0
    variants = dict(VARIANTS)
    if args.compile:
        variants["fp32 + torch.compile"] = LiveSynthesisOptions(compile=True)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    for name in args.configs.split(","):
        G = build(CONFIGS[name]).cuda()
        ws = sample_ws(G, 1, 1, "cuda")
        reference = LiveSynthesis(G)(ws).clone()
        print(f"\n{name}: ms per frame (median of {args.reps}), difference from fp32 eager")
        for label, options in variants.items():
            live = LiveSynthesis(G, options=options)
            ms = median_ms(live, ws, args.reps)
            diff = (live(ws).float() - reference).abs()
            print(f"  {label:<36} {ms:8.2f} ms  {1000 / ms:7.1f} frames/s   max {diff.max():.4f}  mean {diff.mean():.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
