"""Frames per second of `soundvj render` with the embedded default model, and where the time goes.

Runs the real render path (windower, pipeline, mp4 writer) on the demo soundscape and prints the
split between audio (windowing), sound models (E_A + E_I), the latent stepper, synthesis and the rest
(resize, colour conversion, H.264 + AAC encoding).

    .venv/bin/python benchmarks/render.py [--seconds 10] [--batch 4] [--device cpu] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from core.model import load_model  # noqa: E402
from core.params import Params  # noqa: E402
from core.render import load_render_audio, render  # noqa: E402
from core.stylegan3.ops.backend import describe_backend  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model(args.model, device=args.device)
    G = model.generator
    print(f"model: {model.source}; {G.img_resolution} px, num_ws {G.num_ws}, w_dim {G.w_dim}; device {model.device}; "
          f"{torch.get_num_threads()} threads; {describe_backend()}")
    audio = load_render_audio(None, model.mel_config.sample_rate, seconds=args.seconds)
    print(f"{'batch':>5} {'frames':>6} {'frames/s':>9} {'audio':>7} {'sound':>7} {'stepper':>8} {'synth':>7} {'other':>7}  (ms/frame)")
    with tempfile.TemporaryDirectory() as tmp:
        for batch in args.batch:
            # warm-up: first calls allocate and pick convolution algorithms
            render(load_render_audio(None, model.mel_config.sample_rate, seconds=0.5), Path(tmp) / "warm.mp4",
                   model, Params(), batch=batch, progress=False)
            r = render(audio, Path(tmp) / "bench.mp4", model, Params(), batch=batch, progress=False)
            total_ms = 1000 * r.seconds / r.frames
            s = r.stage_ms
            other = total_ms - r.audio_ms - s["sound_models"] - s["stepper"] - s["synthesis"]
            print(f"{batch:>5} {r.frames:>6} {r.fps:>9.1f} {r.audio_ms:>7.1f} {s['sound_models']:>7.1f} "
                  f"{s['stepper']:>8.1f} {s['synthesis']:>7.1f} {other:>7.1f}")


if __name__ == "__main__":
    main()
