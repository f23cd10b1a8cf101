"""`soundvj replay`: a set log rendered again offline, every frame, at the full frame rate.

A live set on a CPU drops frames and runs small. Its set log (`core.set_log`) keeps the sound the
render thread heard and every change the performer made at its audio time; `replay` plays them back
through the same control code the render thread runs (`core.show_control.ShowControl`: crossfades,
modulations, the beat clock, freeze, model swaps) and renders each frame, at the set's frame rate or
another (`--fps`), at any size (`--size`), with the same model or a bigger one (`--model`).

The sound goes through `core.render`'s machinery: the set's sound member is read in place from the
archive (`reader_audio`), cut into each frame's samples (`streamed_frame_samples`, the frame count
round(duration x fps)), and the frames and the sound are written by `write_video` (H.264 + AAC,
atomically). Each frame's samples are pushed into the show's windower before the frame is made, as
the live worker does, so a change of the window length takes effect on the very frame it did live.

Where the timeline's events land: an event logged at audio time t applies before the first frame
whose audio ends at or after t (at the set's own fps, the very frame that took it live). A crossfade
runs on audio time from t itself, and a tap or a Link reading keeps its own audio time, so at
another fps everything happens at the same moment of the sound.

Models: without `--model` the replay looks for the set's model by its SHA-256: the file it was read
from, then the embedded default; a model built in memory (the random weights) is matched by name.
No match is an error (one line naming the model). `--model M` plays the whole set with M, whatever
the set swapped to; if M is not the set's model it says so on one line (a warning, not an error:
another model is the point of the flag).

Determinism: the same set log, fps, size and model give the same frames, bit for bit (the pipeline's
noise is seeded, the control has no clock of its own, and the sound is read the same way each time).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from core.audio.decode import AudioFileReader
from core.errors import SoundvjError
from core.model import SoundvjModel, load_model
from core.model_file import builtin_model_file, check_not_an_input
from core.params import spec
from core.render import (
    RenderAudio,
    Terminated,
    check_size_fits,
    parse_size,
    reader_audio,
    sigterm_as_exception,
    streamed_frame_samples,
    write_video,
)
from core.set_log import ModelChange, ModelIdentity, SetLog, file_sha256, open_set_log
from core.show_control import (
    CommandTaken,
    FreezeSet,
    LinkTaken,
    MatrixSet,
    ShowControl,
    ShowFrame,
    TapTaken,
)
from core.stylegan3.ops import backend as ops_backend
from core.video_writer import CRF_MAX, CRF_MIN, check_output_path

ModelFor = Callable[[ModelIdentity], SoundvjModel]
FrameObserver = Callable[[float, ShowFrame], None]


class SetReplay:
    """Plays a set log's timeline through one `ShowControl`, frame by frame (see the module docstring).

    `model_for` gives the model for each identity the set names (`choose_models`); `fps` is the
    replay's frame rate; `report` gets the control's one-line messages."""

    def __init__(self, set_log: SetLog, model_for: ModelFor, fps: float,
                 report: Callable[[str], None] | None = None) -> None:
        start = set_log.meta.start
        self.set_log = set_log
        self._model_for = model_for
        model = model_for(start.model)
        self.show = ShowControl(model, start.params, report=report, fixed_fps=fps)
        self.show.resume(start.show_state(model), at=start.at)
        self._events = deque(set_log.events)
        self.events_applied = 0
        self.frames_made = 0

    def frames(self, samples: Iterable[torch.Tensor], observe: FrameObserver | None = None) -> Iterator[torch.Tensor]:
        """The frames [3, H, W] for each frame's new samples (`streamed_frame_samples`); a frozen
        frame repeats the one before. `observe(t, frame)` sees every frame with its audio time."""
        show = self.show
        sr = show.windower.mel_config.sample_rate
        shown: torch.Tensor | None = None
        for chunk in samples:
            t = (show.windower.samples_seen + chunk.shape[0]) / sr  # this frame's audio ends here
            self._apply_until(t)
            show.windower.push(chunk)
            made = show.frame(now=t)
            if made.image is not None:
                shown = made.image
            if observe is not None:
                observe(t, made)
            self.frames_made += 1
            yield shown

    def _apply_until(self, t: float) -> None:
        """Give the show every event logged at or before `t`, in the logged order."""
        show = self.show
        while self._events and self._events[0].t <= t:
            timed = self._events.popleft()
            event, late = timed.event, t - timed.t  # how far after its own moment this frame is
            if isinstance(event, CommandTaken):
                show.command(event.command, at=timed.t)
            elif isinstance(event, MatrixSet):
                show.set_matrix(event.matrix)
            elif isinstance(event, TapTaken):
                show.tap(event.ago + late)
            elif isinstance(event, LinkTaken):
                show.link(event.bpm, event.beat, event.ago + late)
            elif isinstance(event, FreezeSet):
                show.set_frozen(event.frozen)
            elif isinstance(event, ModelChange):
                show.swap_model(self._model_for(event.model))
            self.events_applied += 1


@dataclass(frozen=True)
class ReplayResult:
    path: Path
    frames: int
    fps: float
    seconds: float  # wall time the replay took
    events: int


def set_sound(set_log: SetLog, sample_rate: int) -> RenderAudio:
    """The set's sound as a render stream, read in place from the archive, mono at `sample_rate`."""
    label = set_log.sound_label
    return reader_audio(label, label, lambda: AudioFileReader(label, fileobj=set_log.open_sound()), sample_rate)


def replay(
    set_log: SetLog,
    output: str | Path,
    model_for: ModelFor,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
    crf: int = 18,
    progress: bool = True,
    observe: FrameObserver | None = None,
    report: Callable[[str], None] | None = None,
) -> ReplayResult:
    """Render `set_log` to `output` at `fps` (default: the set's), `size` (default: the model's)."""
    out = check_output_path(output)
    fps = set_log.meta.fps if fps is None else fps
    player = SetReplay(set_log, model_for, fps, report)
    model = player.show.model
    ops_backend.prepare(model.device.type, wait=True)
    audio = set_sound(set_log, model.mel_config.sample_rate)
    res = model.generator.img_resolution
    started = time.perf_counter()
    frames = write_video(audio, out, fps, size or (res, res),
                         lambda mux: player.frames(streamed_frame_samples(audio, fps, mux), observe),
                         crf=crf, progress=progress)
    return ReplayResult(out, frames, fps, time.perf_counter() - started, player.events_applied)


# -- which models --------------------------------------------------------------------------------

def choose_models(set_log: SetLog, model: str | None, device: str | None = None,
                  warn: Callable[[str], None] = lambda _m: None) -> ModelFor:
    """The models to replay `set_log` with, loaded now so that a missing one fails before rendering
    (see the module docstring). `model`: `--model`, or None for the set's own."""
    start = set_log.meta.start.model
    swaps = [e.event.model for e in set_log.events if isinstance(e.event, ModelChange)]
    if model is not None:
        chosen = load_model(model, device=device, warn=warn)
        mine = ModelIdentity.of(chosen)
        if not mine.matches(start):
            warn(f"replaying with {mine.describe()}, not the set's model {start.describe()}: "
                 "the pictures differ from the show's")
        if swaps:
            warn(f"the set swapped models {len(swaps)} time(s); --model {model} plays all of it")
        return lambda _identity: chosen
    loaded: dict[object, SoundvjModel] = {}
    for identity in (start, *swaps):
        key = _key(identity)
        if key not in loaded:
            loaded[key] = _find_model(set_log, identity, device, warn)
    first = loaded[_key(start)]
    for found in loaded.values():
        if found.mel_config != first.mel_config:
            raise SoundvjError(
                f"{set_log.path}: the set swaps to {found.source!r}, which hears other mel settings than "
                f"{first.source!r}; replay needs one sound front end (replay it with --model)"
            )
    return lambda identity: loaded[_key(identity)]


def _key(identity: ModelIdentity) -> object:
    return identity.sha256 or ("in memory", identity.source)


def _find_model(set_log: SetLog, identity: ModelIdentity, device: str | None,
                warn: Callable[[str], None]) -> SoundvjModel:
    if identity.sha256 is None:
        random = load_model("random", device=device, warn=warn)
        if random.source == identity.source:
            return random
        raise SoundvjError(
            f"{set_log.path}: the set was played with {identity.describe()}, which no file holds; "
            "pass --model FILE"
        )
    default = builtin_model_file(None)
    candidates = [(Path(identity.file), identity.file)] if identity.file else []
    if default is not None:
        candidates.append((default, None))  # None: load it by name, as "default"
    looked = []
    for path, name in candidates:
        if path.is_file() and str(path) not in looked:
            looked.append(str(path))
            if file_sha256(path) == identity.sha256:
                return load_model(name, device=device, warn=warn)
    where = f" (looked at {', '.join(looked)})" if looked else ""
    raise SoundvjError(
        f"{set_log.path}: the set was played with {identity.describe()}; no model file here has that "
        f"sha256{where}; pass --model FILE"
    )


# -- the command ---------------------------------------------------------------------------------

def _cmd_replay(args: argparse.Namespace) -> int:
    check_not_an_input(args.output, {"set log": args.set, "model": args.model})
    check_output_path(args.output)
    fps = None if args.fps is None else spec("fps").check(args.fps, "command line", key="--fps")
    if not CRF_MIN <= args.crf <= CRF_MAX:
        raise SoundvjError(f"--crf {args.crf}: expected an integer in [{CRF_MIN}, {CRF_MAX}] (H.264 quality)")
    size = parse_size(args.size) if args.size else None
    note = check_size_fits(size) if size else None
    if note:
        print(f"soundvj: note: {note}", file=sys.stderr)
    set_log = open_set_log(args.set)

    def warn(message: str) -> None:
        print(f"soundvj: warning: {message}", file=sys.stderr)

    model_for = choose_models(set_log, args.model, args.device, warn)
    if ops_backend.kernel_pending(model_for(set_log.meta.start.model).device.type):
        print("soundvj: compiling the fast CPU kernel (first run on this machine only, about 10 s)", file=sys.stderr)
    try:
        with sigterm_as_exception():
            result = replay(set_log, args.output, model_for, fps=fps, size=size, crf=args.crf,
                            progress=not args.quiet, report=warn)
    except Terminated:
        print("soundvj: terminated; no output written", file=sys.stderr)
        return 143
    meta = set_log.meta
    print(
        f"wrote {result.path} ({result.frames} frames, {result.frames / result.fps:.2f} s at {result.fps:g} fps; "
        f"the show made {meta.live_frames} at {meta.fps:g} fps, {meta.live_dropped} dropped) in "
        f"{result.seconds:.1f} s, {result.frames / max(result.seconds, 1e-9):.1f} frames/s; "
        f"{result.events} events replayed"
    )
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    """Add the `replay` subcommand."""
    p = sub.add_parser("replay", help="render a set log (soundvj live --set-log) again offline, every frame")
    p.add_argument("set", metavar="SET", help="the set log (.soundvjset) that `soundvj live --set-log` wrote")
    p.add_argument("-o", "--output", required=True, help="output .mp4 (written atomically)")
    p.add_argument("--fps", type=float, default=None, help="frame rate (default: the set's)")
    p.add_argument("--size", default=None, help="output WIDTHxHEIGHT (default: the generator's resolution)")
    p.add_argument("--model", default=None,
                   help="play the whole set with this model (default: the set's own, found by its sha256)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality, lower is better (default 18)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_replay)
