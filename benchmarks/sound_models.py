"""Per-frame CPU time of the live sound path: E_A + E_I on the next mel window, then one stepper step.

Run: .venv/bin/python benchmarks/sound_models.py [--widths 64 16] [--frames 20] [--threads N]
Batch 1, eval mode, no_grad, random weights (timing does not depend on training).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.sound import SoundModels, SoundModelsConfig  # noqa: E402


def time_per_frame(
    width: int, num_ws: int = 16, w_dim: int = 512, window: int = 87, frames: int = 20, warmup: int = 3
) -> dict[str, float]:
    """Median milliseconds per frame for E_A, E_I, the stepper step and their sum."""
    torch.manual_seed(0)
    models = SoundModels(SoundModelsConfig.for_generator(num_ws, w_dim, width=width)).eval()
    mel = torch.rand(1, 128, window)
    w = torch.zeros(1, num_ws, w_dim)
    hidden = None
    gen = torch.Generator().manual_seed(0)
    parts: dict[str, list[float]] = {"audio_encoder": [], "inversion_encoder": [], "stepper_step": [], "total": []}
    with torch.no_grad():
        for i in range(warmup + frames):
            t0 = time.perf_counter()
            embed = models.audio_encoder(mel)
            t1 = time.perf_counter()
            w_hat = models.inversion_encoder(mel)
            t2 = time.perf_counter()
            w, hidden = models.latent_stepper.step(w, w_hat, embed, hidden, (0.3, 0.5, 0.8), 0.5, gen)
            t3 = time.perf_counter()
            if i >= warmup:
                for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                    parts[key].append(dt * 1000)
    return {key: statistics.median(values) for key, values in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 16])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, batch 1, W=87, num_ws=16, w_dim=512")
    for width in args.widths:
        ms = time_per_frame(width, frames=args.frames)
        print(
            f"width {width:3d}: E_A {ms['audio_encoder']:7.1f} ms  E_I {ms['inversion_encoder']:7.1f} ms  "
            f"step {ms['stepper_step']:6.2f} ms  total {ms['total']:7.1f} ms/frame"
        )


if __name__ == "__main__":
    main()
