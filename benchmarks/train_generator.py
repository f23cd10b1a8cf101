"""Seconds per thousand images (s/kimg) of `soundvj train generator` on this machine.

Run: .venv/bin/python benchmarks/train_generator.py [--sizes 2048:64 1024:32] [--resolution 64]
     [--batch 8] [--steps 6] [--threads N] [--w-dim 512]
Each size runs the real stage (`training.stages.generator`) through the training loop on a generated
two-class image folder (solid colours, stripes) for `--steps` steps and prints the median wall and
CPU (process) time of a step as s/kimg, and of the step with the lazy R1 update (step 0; every 16th
step in a real run). Also prints the load average: other processes on the cores slow it down.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.config import load_run_config  # noqa: E402
from training.loop import train  # noqa: E402
from training.stages import generator as stage  # noqa: E402


def write_images(root: Path, resolution: int, per_class: int = 16) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("solid", "stripes"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            a = np.zeros((resolution, resolution, 3), np.uint8)
            if name == "solid":
                a[:] = rng.integers(30, 225, 3)
            else:
                a[:, (np.arange(resolution) // 4) % 2 == 0] = 255
            Image.fromarray(a).save(root / name / f"{i}.png")


def time_steps(data: Path, out: Path, channel_base: int, channel_max: int, args: argparse.Namespace) -> list[tuple]:
    """(step, wall seconds, CPU seconds) of each training step."""
    config = load_run_config("generator", stage.Config, None, [
        f"data.path={data}", f"loop.steps={args.steps}", f"loop.batch_size={args.batch}", "loop.progress=false",
        "loop.checkpoint_every=0", "loop.sample_every=1000000", f"stage.resolution={args.resolution}",
        f"stage.channel_base={channel_base}", f"stage.channel_max={channel_max}", f"stage.threads={args.threads}",
        f"stage.z_dim={args.w_dim}", f"stage.w_dim={args.w_dim}",
    ])
    times: list[tuple] = []

    def build(run, ctx):
        built = stage.build(run, ctx)
        inner = built.train_step

        def timed(batch, sctx):
            wall, cpu = time.perf_counter(), time.process_time()
            result = inner(batch, sctx)
            times.append((sctx.step, time.perf_counter() - wall, time.process_time() - cpu))
            return result

        built.train_step = timed
        built.write_samples = None
        return built

    train(config, build, out)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["2048:64", "1024:32"], help="channel_base:channel_max")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--w-dim", type=int, default=512)
    args = parser.parse_args()
    kimg = args.batch / 1000
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "images"
        write_images(data, args.resolution)
        for size in args.sizes:
            base, cap = (int(v) for v in size.split(":"))
            times = time_steps(data, Path(tmp) / f"run-{base}-{cap}", base, cap, args)
            plain = [t for t in times if t[0] % 16 != 0 and t[0] > 0] or times
            r1 = [t for t in times if t[0] % 16 == 0]
            wall, cpu = statistics.median(t[1] for t in plain), statistics.median(t[2] for t in plain)
            line = (f"{args.resolution} px, cbase {base}, cmax {cap}, batch {args.batch}, w_dim {args.w_dim}, "
                    f"{torch.get_num_threads()} thread(s): {wall / kimg:6.0f} s/kimg wall, {cpu / kimg:6.0f} "
                    f"CPU-s/kimg (median of {len(plain)} steps)")
            if r1:
                line += f"; step 0 (first, with R1) {r1[0][1] / kimg:.0f} s/kimg wall"
            print(line, flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")


if __name__ == "__main__":
    main()
