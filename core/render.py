"""Offline rendering: an audio file (or the built-in demo soundscape) to an H.264/AAC video.

It runs the same `FramePipeline` and `StreamingWindower` as the live app: the file's samples are
pushed through the windower in chunks, as a sound card would deliver them, and the frames go to an
mp4 instead of a screen. The output appears under its name only once it is complete.

Everything streams: the file is decoded, resampled (`StreamingResampler`), windowed and muxed
(`Mp4Writer.write_audio`) half a second at a time, so a two-hour set renders in the memory of a
five-second clip. The frame count, round(duration x fps), is known only once the audio ends, so the
last window or two wait until it is.

`soundvj replay` (`core.replay`) renders a set log with the same pieces: `reader_audio` for the
sound, `streamed_frame_samples` for each frame's share of it, `write_video` for the mp4.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.audio.decode import MAX_SPAN_SECONDS, STDIN, AudioFileReader
from core.audio.demo import demo_soundscape
from core.audio.demo_walk import demo_walk, demo_walk_available
from core.audio.resampling import StreamingResampler, to_mono
from core.audio.windows import StreamingWindower, frame_end_sample, num_video_frames
from core.errors import SoundvjError, short_repr
from core.frame_scaling import scale_to_cover
from core.model import SoundvjModel, load_model
from core.model_file import check_not_an_input
from core.params import Params, add_cli_arguments, params_from_cli
from core.pipeline import FramePipeline
from core.presets import load_preset
from core.stylegan3.ops import backend as ops_backend
from core.video_writer import (
    AAC_SAMPLE_RATES,
    CRF_MAX,
    CRF_MIN,
    FALLBACK_SAMPLE_RATE,
    Mp4Writer,
    check_output_path,
    to_uint8_rgb,
)

DEMO_SECONDS = 24.0
DEMO_MAX_SECONDS = 3600.0  # the demo soundscape's own limit
MAX_BATCH = 64  # frames in flight; more only costs memory
# Memory an output size needs beyond the model, per output pixel: most is held by the encoder
# (libx264's look-ahead and frame threads, preset medium), the rest by scaling and conversion.
BYTES_PER_OUTPUT_PIXEL = 185
SIZE_NOTE_BYTES = 1 << 30  # above this, say up front what the size will need
CHUNK_SECONDS = 0.5  # audio pushed per windower call; any size gives the same windows


AudioPiece = tuple[torch.Tensor, np.ndarray]  # (mono [n] at the model's rate, mux [1 or 2, m] at mux_rate)


@dataclass(frozen=True)
class RenderAudio:
    """The sound to render from, read as a stream; `pieces()` may be called again (each call reads
    from the start). `note` (after the pieces ran out) is a one-line warning, e.g. a cut-off file."""

    label: str
    sample_rate: int  # of the mono pieces: the model's mel rate
    mux_rate: int  # of the mux pieces: one AAC codes natively
    mux_channels: int  # 1 or 2 (5.1 and the like are downmixed)
    expected_seconds: float | None  # for the progress bar; the stream decides
    open_pieces: Callable[[], Iterator[AudioPiece]]
    notes: list[str] = field(default_factory=list, compare=False)

    def pieces(self) -> Iterator[AudioPiece]:
        return self.open_pieces()
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
    """The render's sound from `path` (None: the demo soundscape), mono at `sample_rate` for the model
    plus the track to mux. A file is opened once here, so its problems surface before any rendering."""
    if path is None:
        return _demo_audio(sample_rate, start, seconds)
    label = "standard input" if str(path) == STDIN else str(path)
    return reader_audio(str(path), label, lambda: AudioFileReader(path, start, seconds, CHUNK_SECONDS),
                        sample_rate, start, seconds)


def reader_audio(
    name: str, label: str, open_reader: Callable[[], AudioFileReader], sample_rate: int,
    start: float = 0.0, seconds: float | None = None,
) -> RenderAudio:
    """The sound `open_reader` reads (a new `AudioFileReader` per call, over `start` and `seconds`), as
    the render's stream; `name` names it in errors, `label` in progress output. The first reader
    opened here checks the file before any rendering."""
    probe = open_reader()
    native_rate, channels, declared = probe.sample_rate, probe.channels, probe.declared_seconds
    if not probe.is_stream:
        probe.close()  # each reading opens the file again
    mux_rate = native_rate if native_rate in AAC_SAMPLE_RATES else FALLBACK_SAMPLE_RATE
    expected = None if declared is None else max(0.0, declared - start)
    if seconds is not None:
        expected = seconds if expected is None else min(seconds, expected)
    audio: RenderAudio
    stream_reader = [probe] if probe.is_stream else []  # stdin or a FIFO: the one reading there is

    def open_pieces() -> Iterator[AudioPiece]:
        audio.notes.clear()  # each reading says its own
        if probe.is_stream and not stream_reader:
            raise SoundvjError(f"{name}: a stream (stdin or a FIFO) can be rendered once")
        reader = stream_reader.pop() if stream_reader else open_reader()
        to_model = StreamingResampler(native_rate, sample_rate)
        to_mux = StreamingResampler(native_rate, mux_rate)
        with reader:
            for chunk in reader.chunks():
                samples = torch.from_numpy(chunk)
                yield (to_model.push(to_mono(samples)),
                       to_mux.push(downmix_for_video(samples)).numpy())
            if reader.ended_early:
                audio.notes.append(reader.ended_early)
        yield to_model.flush(), to_mux.flush().numpy()

    audio = RenderAudio(label, sample_rate, mux_rate, 1 if channels == 1 else 2, expected, open_pieces)
    return audio


def _demo_audio(sample_rate: int, start: float, seconds: float | None) -> RenderAudio:
    walk = demo_walk(sample_rate) if demo_walk_available() else None
    total = (DEMO_SECONDS if walk is None else walk.shape[0] / sample_rate) if seconds is None else seconds
    if start + total > DEMO_MAX_SECONDS:
        raise SoundvjError(
            f"start {start:g} s + {total:g} s: the demo soundscape is at most {DEMO_MAX_SECONDS:g} s long"
        )
    first = int(round(start * sample_rate))
    count = int(round(total * sample_rate))
    if walk is not None:  # the recorded six-class walk, looped when more is asked for
        full = walk.repeat(-(-(first + count) // walk.shape[0]))
        label = "demo walk (core/assets/demo_walk.opus: birds, wind, rain, engine, fire, night)"
    else:  # the synthesised soundscape's sections scale with its length; short requests cut a 1 s minimum
        full = demo_soundscape(seconds=max(1.0, start + total), sample_rate=sample_rate)
        label = "demo soundscape"
    clip = full[first : first + count].clone()
    del full
    mux_rate = sample_rate if sample_rate in AAC_SAMPLE_RATES else FALLBACK_SAMPLE_RATE
    step = max(1, int(CHUNK_SECONDS * sample_rate))

    def open_pieces() -> Iterator[AudioPiece]:
        to_mux = StreamingResampler(sample_rate, mux_rate)
        for i in range(0, clip.shape[0], step):
            piece = clip[i : i + step]
            yield piece, to_mux.push(piece[None]).numpy()
        yield clip[:0], to_mux.flush().reshape(1, -1).numpy()

    return RenderAudio(label, sample_rate, mux_rate, 1, clip.shape[0] / sample_rate, open_pieces)


def fit_frames(frames: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Scale square generator frames to cover width x height, then centre-crop (no stretching), with
    the Lanczos-3 resampler of `core.frame_scaling` (smooth on a projector, anti-aliased when smaller)."""
    return scale_to_cover(frames, width, height)


def output_memory_bytes(width: int, height: int) -> int:
    """Rough peak memory (bytes) that scaling to and encoding at width x height add to a render."""
    return width * height * BYTES_PER_OUTPUT_PIXEL


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_size_fits(size: tuple[int, int]) -> str | None:
    """Refuse a size whose scaling and encoding would not fit in the memory available now; for a
    size that needs over a gigabyte, the note to print up front (else None)."""
    width, height = size
    need = output_memory_bytes(width, height)
    available = available_memory_bytes()
    if available is not None and need > available:
        raise SoundvjError(
            f"--size {width}x{height}: needs about {need / 2**30:.1f} GB of memory to scale and encode, "
            f"{available / 2**30:.1f} GB is available; choose a smaller size"
        )
    if need > SIZE_NOTE_BYTES:
        return f"--size {width}x{height} needs about {need / 2**30:.1f} GB of memory to scale and encode"
    return None


def parse_size(text: str) -> tuple[int, int]:
    try:
        w_text, h_text = text.lower().split("x")
        width, height = int(w_text), int(h_text)
    except ValueError:
        raise SoundvjError(f"--size {short_repr(text)}: expected WIDTHxHEIGHT, e.g. 512x512") from None
    if not (2 <= width <= 8192 and 2 <= height <= 8192) or width % 2 or height % 2:
        raise SoundvjError(f"--size {short_repr(text)}: width and height must be even numbers in [2, 8192]")
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
    if audio.sample_rate != pipeline.mel_config.sample_rate:
        raise ValueError(f"render: audio at {audio.sample_rate} Hz, the model hears {pipeline.mel_config.sample_rate} Hz")
    windowing_seconds = [0.0]
    started = time.perf_counter()

    def frames(mux: Callable[[np.ndarray], None]) -> Iterator[torch.Tensor]:
        windows = streamed_frame_windows(audio, windower, mux, windowing_seconds)
        for group in _batches(windows, batch):
            yield from pipeline.step_batch(torch.stack(group))

    produced = write_video(audio, out, params.fps, size or _square(model), frames, crf=crf, progress=progress)
    elapsed = time.perf_counter() - started
    return RenderResult(out, produced, elapsed, pipeline.times.as_ms_per_frame(),
                        1000 * windowing_seconds[0] / max(produced, 1))


def _square(model: SoundvjModel) -> tuple[int, int]:
    res = model.generator.img_resolution
    return res, res


def write_video(
    audio: RenderAudio,
    out: Path,
    fps: float,
    size: tuple[int, int],
    frames: Callable[[Callable[[np.ndarray], None]], Iterator[torch.Tensor]],
    crf: int = 18,
    progress: bool = True,
) -> int:
    """Encode the generator frames [3, r, r] that `frames(mux)` yields to `out` (H.264, scaled and
    cropped to `size`), with `audio`'s mux track, which the frames' source hands to `mux` as it
    reads the sound; a progress bar on standard error when `progress`. Returns the frame count.
    The file appears only when complete (`Mp4Writer`)."""
    width, height = size
    expected = None if audio.expected_seconds is None else max(1, round(audio.expected_seconds * fps))
    bar = _progress_bar(expected, out, progress)
    produced = 0
    try:
        with Mp4Writer(out, fps, width, height, sample_rate=audio.mux_rate,
                       audio_channels=audio.mux_channels, crf=crf) as writer:
            for frame in frames(writer.write_audio):  # scaled one at a time: 8192 px batches would not fit
                writer.write(_scaled_rgb(frame, width, height))
                produced += 1
                bar.update(1)
    finally:
        bar.close()
    return produced


def _scaled_rgb(frame: torch.Tensor, width: int, height: int, rows: int = 256) -> np.ndarray:
    """One generator frame [3, r, r] as uint8 [height, width, 3], scaled and cropped. The uint8
    conversion runs `rows` rows at a time, so its float temporaries stay small at 8192 px."""
    scaled = fit_frames(frame[None], width, height)[0]
    return torch.cat([to_uint8_rgb(scaled[:, i : i + rows]) for i in range(0, height, rows)]).cpu().numpy()


def streamed_frame_samples(
    audio: RenderAudio, fps: float, mux: Callable[[np.ndarray], None]
) -> Iterator[torch.Tensor]:
    """Each frame's new sound, as the stream arrives: for frame k the mono samples from the end of
    frame k - 1 up to its own end (`frame_end_sample`; frame 0 gets none), round(duration x fps)
    frames in all; each piece's mux track goes to `mux` first. A frame is released once the audio so
    far proves it is within the final count; frames that end after the audio hear silence. Pushing
    these into a windower one frame at a time gives each frame's window as `windower.latest()`."""
    sr = audio.sample_rate
    held: deque[torch.Tensor] = deque()  # samples after the last released frame's end
    seen = produced = released_to = 0

    def take(count: int) -> torch.Tensor:
        parts, wanted = [], count
        while wanted and held:
            head = held[0]
            if head.shape[0] <= wanted:
                parts.append(held.popleft())
                wanted -= head.shape[0]
            else:
                parts.append(head[:wanted])
                held[0] = head[wanted:]
                wanted = 0
        if wanted or not parts:  # past the end of the sound (or frame 0, which hears nothing new)
            parts.append(torch.zeros(wanted))
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    for mono, mux_piece in audio.pieces():
        if mux_piece.shape[-1]:
            mux(mux_piece)
        if not mono.numel():
            continue
        held.append(mono)
        seen += mono.shape[0]
        surely = num_video_frames(seen, sr, fps)  # the final count is at least this
        while produced < surely and (end := frame_end_sample(produced, sr, fps)) <= seen:
            yield take(end - released_to)
            released_to, produced = end, produced + 1
    total = num_video_frames(seen, sr, fps)
    if total == 0:
        raise SoundvjError(f"{audio.label}: shorter than one video frame at {fps:g} fps; nothing to render")
    while produced < total:
        end = frame_end_sample(produced, sr, fps)
        yield take(end - released_to)
        released_to, produced = end, produced + 1


def streamed_frame_windows(
    audio: RenderAudio,
    windower: StreamingWindower,
    mux: Callable[[np.ndarray], None],
    seconds: list[float] | None = None,
) -> Iterator[torch.Tensor]:
    """The mel windows of every frame of `audio`, round(duration x fps) of them, as the stream
    arrives (`streamed_frame_samples`, pushed into `windower` about CHUNK_SECONDS at a time: the
    windows do not depend on how the sound is cut). Time spent windowing is added to `seconds[0]`."""
    sr, fps = windower.mel_config.sample_rate, windower.window_config.fps
    group: list[torch.Tensor] = []
    grouped = 0

    def push() -> list[torch.Tensor]:
        nonlocal grouped
        t0 = time.perf_counter()
        windows = [fw.mel for fw in windower.push(torch.cat(group))]
        if seconds is not None:
            seconds[0] += time.perf_counter() - t0
        if len(windows) != len(group):  # one frame's samples end exactly at that frame's end
            raise RuntimeError(f"windower gave {len(windows)} windows for {len(group)} frames")
        group.clear()
        grouped = 0
        return windows

    for samples in streamed_frame_samples(audio, fps, mux):
        group.append(samples)
        grouped += samples.shape[0]
        if grouped >= CHUNK_SECONDS * sr:
            yield from push()
    if group:
        yield from push()


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


def _progress_bar(total: int | None, out: Path, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc=out.name, disable=not enabled, dynamic_ncols=True, file=sys.stderr)


class Terminated(BaseException):
    """SIGTERM turned into an exception, so the writer removes its temp file on the way out."""


def _raise_terminated(signum, frame) -> None:  # noqa: ARG001
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_exception() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` (so an output in progress is removed)."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_span(args: argparse.Namespace) -> None:
    """--start/--seconds as finite numbers in range, named as flags (1e308 overflowed in the decoder)."""
    if not (math.isfinite(args.start) and 0 <= args.start <= MAX_SPAN_SECONDS):
        raise SoundvjError(f"--start {args.start:g}: expected seconds in [0, {MAX_SPAN_SECONDS:g}]")
    if args.seconds is not None and not (math.isfinite(args.seconds) and 0 < args.seconds <= MAX_SPAN_SECONDS):
        raise SoundvjError(f"--seconds {args.seconds:g}: expected a number of seconds in (0, {MAX_SPAN_SECONDS:g}]")
    if args.demo:
        seconds = DEMO_SECONDS if args.seconds is None else args.seconds
        if args.start + seconds > DEMO_MAX_SECONDS:
            raise SoundvjError(
                f"--start {args.start:g} with --seconds {seconds:g}: the demo soundscape is at most "
                f"{DEMO_MAX_SECONDS:g} s long; expected --start + --seconds <= {DEMO_MAX_SECONDS:g}"
            )


def check_render_args(args: argparse.Namespace) -> tuple[tuple[int, int] | None, Params]:
    """Every check of `soundvj render`'s flags that needs no model: (size, params), or one
    `SoundvjError` line naming the flag (or file) at fault."""
    if args.demo == (args.audio is not None):
        raise SoundvjError("render: give either an AUDIO file or --demo (not both)")
    check_not_an_input(args.output, {"audio file": args.audio, "model": args.model, "preset": args.preset})
    check_output_path(args.output)
    if not 1 <= args.batch <= MAX_BATCH:
        raise SoundvjError(f"--batch {short_repr(args.batch)}: expected an integer in [1, {MAX_BATCH}]")
    if not CRF_MIN <= args.crf <= CRF_MAX:
        raise SoundvjError(f"--crf {short_repr(args.crf)}: expected an integer in [{CRF_MIN}, {CRF_MAX}] (H.264 quality)")
    _check_span(args)
    size = parse_size(args.size) if args.size else None
    params = Params()
    if args.preset:
        params = load_preset(args.preset).apply(params)
    return size, params_from_cli(args, params)


def _cmd_render(args: argparse.Namespace) -> int:
    size, params = check_render_args(args)
    note = check_size_fits(size) if size else None
    if note:
        print(f"soundvj: note: {note}", file=sys.stderr)
    model = load_model(args.model, device=args.device)
    audio = load_render_audio(None if args.demo else args.audio, model.mel_config.sample_rate, args.start, args.seconds)
    if ops_backend.kernel_pending(model.device.type):
        print("soundvj: compiling the fast CPU kernel (first run on this machine only, about 10 s)", file=sys.stderr)
    try:
        with sigterm_as_exception():
            result = render(audio, args.output, model, params, size=size, batch=args.batch, crf=args.crf,
                            progress=not args.quiet)
    except Terminated:
        print("soundvj: terminated; no output written", file=sys.stderr)
        return 143
    for note in audio.notes:
        print(f"soundvj: warning: {note}", file=sys.stderr)
    times = ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in result.stage_ms.items())
    print(
        f"wrote {result.path} ({result.frames} frames, {result.frames / params.fps:.2f} s at {params.fps:g} fps) "
        f"in {result.seconds:.1f} s, {result.fps:.1f} frames/s; ms/frame: audio {result.audio_ms:.1f}, {times}"
    )
    if model.sound_is_seeded and args.model in (None, "default", "random"):
        print("note: the embedded default model has random weights: abstract patterns, not semantic pictures; "
              "use --model PATH with a trained StyleGAN3 for real images")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("render", help="render an audio file (or --demo) to an mp4 with the sound muxed in")
    p.add_argument("audio", nargs="?", help="wav, flac, ogg, mp3, m4a, or a video file's audio track; "
                   "'-' reads standard input (a FIFO works too)")
    p.add_argument("-o", "--output", required=True, help="output .mp4 (written atomically)")
    p.add_argument("--demo", action="store_true", help="use the built-in demo sound (no input file): the recorded six-class walk "
                   "(core/assets/demo_walk.opus; looped past its 43 s), or a synthesised soundscape without it")
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
