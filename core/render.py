"""Offline rendering: an audio file (or the built-in demo soundscape) to an H.264/AAC video.

It runs the same `FramePipeline` and `StreamingWindower` as the live app: the file's samples are
pushed through the windower in chunks, as a sound card would deliver them, and the frames go to an
mp4 instead of a screen. The output appears under its name only once it is complete.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from core.audio.decode import decode_audio, resample, to_mono
from core.audio.demo import demo_soundscape
from core.audio.windows import StreamingWindower, num_video_frames
from core.errors import SoundvjError
from core.model import SoundvjModel, load_model
from core.params import Params, add_cli_arguments, params_from_cli
from core.pipeline import FramePipeline
from core.stylegan3.ops import backend as ops_backend
from core.video_writer import Mp4Writer, check_output_path, to_uint8_rgb

DEMO_SECONDS = 24.0
CHUNK_SECONDS = 0.5  # audio pushed per windower call; any size gives the same windows


@dataclass(frozen=True)
class RenderAudio:
    """The audio to render from: `mono` for the sound models, `mux` (mono or stereo) for the file."""

    mono: torch.Tensor  # [n] at the model's mel sample rate
    mux: torch.Tensor  # [1 or 2, m] at `mux_rate`
    mux_rate: int
    duration: float
    label: str


@dataclass(frozen=True)
class RenderResult:
    path: Path
    frames: int
    seconds: float
    stage_ms: dict[str, float]
    audio_ms: float

    @property
    def fps(self) -> float:
        return self.frames / max(self.seconds, 1e-9)


def downmix_for_video(samples: torch.Tensor) -> torch.Tensor:
    """[channels, n] -> mono or stereo for AAC. 5.1 (FFmpeg order FL FR FC LFE BL BR) uses the ITU
    downmix; other layouts above stereo average into both channels."""
    ch = samples.shape[0]
    if ch <= 2:
        return samples
    if ch == 6:
        fl, fr, fc, _lfe, bl, br = samples
        k = 1 / math.sqrt(2)
        stereo = torch.stack([fl + k * fc + k * bl, fr + k * fc + k * br])
        return stereo / (1 + 2 * k)  # keep full-scale inputs from clipping
    mono = samples.mean(dim=0)
    return torch.stack([mono, mono])


def load_render_audio(
    path: str | Path | None, sample_rate: int, start: float = 0.0, seconds: float | None = None
) -> RenderAudio:
    """Decode `path` (None: the demo soundscape) into model-rate mono plus the track to mux."""
    if path is None:
        total = DEMO_SECONDS if seconds is None else seconds
        # The soundscape's sections scale with its length; short requests cut a 1 s minimum.
        full = demo_soundscape(seconds=max(1.0, start + total), sample_rate=sample_rate)
        first = int(round(start * sample_rate))
        clip = full[first : first + int(round(total * sample_rate))]
        return RenderAudio(clip, clip[None], sample_rate, clip.shape[0] / sample_rate, "demo soundscape")
    decoded = decode_audio(path, start=start, seconds=seconds)
    mono = to_mono(decoded.samples)
    if decoded.sample_rate != sample_rate:
        mono = resample(mono, decoded.sample_rate, sample_rate)
    return RenderAudio(mono, downmix_for_video(decoded.samples), decoded.sample_rate, decoded.duration, str(path))


def fit_frames(frames: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Scale square generator frames to cover width x height, then centre-crop (no stretching)."""
    _, _, h, w = frames.shape
    if (w, h) == (width, height):
        return frames
    scale = max(width / w, height / h)
    new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    frames = F.interpolate(frames, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=scale < 1)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return frames[:, :, top : top + height, left : left + width]


def parse_size(text: str) -> tuple[int, int]:
    try:
        w_text, h_text = text.lower().split("x")
        width, height = int(w_text), int(h_text)
    except ValueError:
        raise SoundvjError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 512x512") from None
    if not (2 <= width <= 8192 and 2 <= height <= 8192) or width % 2 or height % 2:
        raise SoundvjError(f"--size {text!r}: width and height must be even numbers in [2, 8192]")
    return width, height


def render(
    audio: RenderAudio,
    output: str | Path,
    model: SoundvjModel,
    params: Params,
    size: tuple[int, int] | None = None,
    batch: int = 4,
    crf: int = 18,
    progress: bool = True,
) -> RenderResult:
    """Render `audio` to `output`: frame count round(duration x fps), the audio muxed as AAC."""
    out = check_output_path(output)
    ops_backend.prepare(model.device.type, wait=True)
    pipeline = FramePipeline(model, params)
    windower = pipeline.make_windower()
    total = num_video_frames(audio.mono.shape[0], pipeline.mel_config.sample_rate, params.fps)
    if total == 0:
        raise SoundvjError(f"{audio.label}: shorter than one video frame at {params.fps:g} fps; nothing to render")
    res = model.generator.img_resolution
    width, height = size or (res, res)
    chunk = max(1, int(CHUNK_SECONDS * pipeline.mel_config.sample_rate))
    windowing_seconds = [0.0]
    started = time.perf_counter()
    bar = _progress_bar(total, out, progress)
    try:
        with Mp4Writer(out, params.fps, width, height, audio=audio.mux, sample_rate=audio.mux_rate, crf=crf) as writer:
            for windows in _batches(frame_windows(audio.mono, windower, total, chunk, windowing_seconds), batch):
                frames = fit_frames(pipeline.step_batch(torch.stack(windows)), width, height)
                for frame in frames:
                    writer.write(to_uint8_rgb(frame).cpu().numpy())
                bar.update(len(windows))
    finally:
        bar.close()
    elapsed = time.perf_counter() - started
    return RenderResult(out, total, elapsed, pipeline.times.as_ms_per_frame(), 1000 * windowing_seconds[0] / total)


def frame_windows(
    mono: torch.Tensor, windower: StreamingWindower, total: int, chunk: int, seconds: list[float] | None = None
) -> Iterator[torch.Tensor]:
    """The mel windows of frames 0..total-1, pushing `mono` through `windower` in `chunk`-sample
    pieces as a sound card would; frames that end after the audio hear silence. Time spent
    windowing is added to `seconds[0]`."""
    produced, pos = 0, 0
    while produced < total:
        t0 = time.perf_counter()
        piece = mono[pos : pos + chunk]
        pos += chunk
        ready = windower.push(piece if piece.numel() else torch.zeros(chunk))
        if seconds is not None:
            seconds[0] += time.perf_counter() - t0
        for fw in ready[: total - produced]:
            yield fw.mel
        produced += min(len(ready), total - produced)


def _batches(items: Iterable[torch.Tensor], size: int) -> Iterator[list[torch.Tensor]]:
    batch: list[torch.Tensor] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _progress_bar(total: int, out: Path, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc=out.name, disable=not enabled, dynamic_ncols=True, file=sys.stderr)


class Terminated(BaseException):
    """SIGTERM turned into an exception, so the writer removes its temp file on the way out."""


def _raise_terminated(signum, frame) -> None:  # noqa: ARG001
    raise Terminated()


def _cmd_render(args: argparse.Namespace) -> int:
    if args.demo == (args.audio is not None):
        raise SoundvjError("render: give either an AUDIO file or --demo (not both)")
    check_output_path(args.output)
    if args.batch < 1:
        raise SoundvjError(f"--batch {args.batch}: expected a positive integer")
    size = parse_size(args.size) if args.size else None
    params = Params()
    if args.preset:
        from core.presets import load_preset

        params = load_preset(args.preset).apply(params)
    params = params_from_cli(args, params)
    if args.start < 0 or not math.isfinite(args.start):
        raise SoundvjError(f"--start {args.start}: expected seconds >= 0")
    if args.seconds is not None and not (args.seconds > 0 and math.isfinite(args.seconds)):
        raise SoundvjError(f"--seconds {args.seconds}: expected a positive number of seconds")
    model = load_model(args.model, device=args.device)
    audio = load_render_audio(None if args.demo else args.audio, model.mel_config.sample_rate, args.start, args.seconds)
    if ops_backend.kernel_pending(model.device.type):
        print("soundvj: compiling the fast CPU kernel (first run on this machine only, about 10 s)", file=sys.stderr)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        result = render(audio, args.output, model, params, size=size, batch=args.batch, crf=args.crf,
                        progress=not args.quiet)
    except Terminated:
        print("soundvj: terminated; no output written", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)
    times = ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in result.stage_ms.items())
    print(
        f"wrote {result.path} ({result.frames} frames, {result.frames / params.fps:.2f} s at {params.fps:g} fps) "
        f"in {result.seconds:.1f} s, {result.fps:.1f} frames/s; ms/frame: audio {result.audio_ms:.1f}, {times}"
    )
    if model.sound_is_seeded and args.model in (None, "default"):
        print("note: the embedded default model has random weights: abstract patterns, not semantic pictures; "
              "use --model PATH with a trained StyleGAN3 for real images")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("render", help="render an audio file (or --demo) to an mp4 with the sound muxed in")
    p.add_argument("audio", nargs="?", help="wav, flac, ogg, mp3, m4a, or a video file's audio track")
    p.add_argument("-o", "--output", required=True, help="output .mp4 (written atomically)")
    p.add_argument("--demo", action="store_true", help="use the built-in synthesised soundscape (no input file)")
    p.add_argument("--model", default=None, help="NVIDIA .pkl or soundvj .safetensors (default: embedded model)")
    p.add_argument("--preset", default=None, help="preset name (calm, flowing, storm, pulse) or YAML path")
    p.add_argument("--size", default=None, help="output WIDTHxHEIGHT (default: the generator's resolution)")
    p.add_argument("--start", type=float, default=0.0, help="start offset into the audio, seconds")
    p.add_argument("--seconds", type=float, default=None, help="duration to render, seconds (default: all)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--batch", type=int, default=4, help="frames synthesised together (default 4)")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality, lower is better (default 18)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_cli_arguments(p)
    p.set_defaults(func=_cmd_render)
