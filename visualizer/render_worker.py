"""The render thread: owns the pipeline and the windower, answers the sound of *now* at each frame deadline.

At every deadline of the target frame rate it takes everything the audio callback wrote since the last
frame, pushes it into the windower, reads the newest parameter snapshot, steps the pipeline once on the
newest window and publishes the frame into latest-value slots (view, output screen, recorder). Deadlines
are absolute (t0 + k / fps); when a frame comes out late, the deadlines it missed are skipped and counted
as dropped, so the next frame answers the sound at that moment rather than working off a backlog.

Nothing here waits on the UI or on a control thread: commands arrive through mailboxes (`LatestSlot`s,
the merging `ParamCommandBox`, a bounded queue of taps) that are read between frames, and
no lock is held across a model call. It is a plain thread (no Qt), so the same worker runs in tests,
benchmarks and the app.

What each frame is made with (crossfades, modulations, the beat clock, model swaps) is decided by
`core.show_control.ShowControl`, the same code that replays a set log offline; this thread hands it
the mailboxes' contents and the sound, and publishes what it makes together with the changes it took
(`PublishedFrame.events`, which a set log writes down).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import torch

from core.audio.windows import StreamingWindower
from core.control import BeatClock, ClockState, ModulationMatrix, SoundFeatures, SoundFeatureTracker
from core.errors import SoundvjError, one_line
from core.model import SoundvjModel, load_model
from core.params import Params
from core.pipeline import FramePipeline
from core.show_control import ParamCommand, ShowControl, ShowEvent, ShowState
from core.video_writer import to_uint8_rgb
from visualizer.control.link import LinkState
from visualizer.mailbox import LatestSlot

DEFAULT_FADE_SECONDS = 2.0
MAX_WAITING_TAPS = 32  # taps between two frames beyond this are dropped (nobody taps that fast)
STATUS_WINDOW = 48  # frames over which fps and latency are summarised


class SampleSource(Protocol):
    """What the worker reads audio from: `visualizer.audio_ring.SampleRing`."""

    sample_rate: int

    def read_new(self) -> tuple[np.ndarray, float]: ...


class FrameSink(Protocol):
    """Something that takes every published frame plus the audio heard since the previous one
    (the recorder); it must return at once."""

    def feed(self, frame: "PublishedFrame", audio: np.ndarray) -> None: ...


class ParamCommandBox:
    """The render worker's parameter mailbox: one waiting command, which a newer one is merged into
    (`ParamCommand.merged_after`) rather than overwriting it, so a preset's fade posted just before a
    knob move in the same frame is not lost. The lock guards one reference swap, never a computation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: ParamCommand | None = None
        self.merged = 0  # commands folded into a newer one before the render thread took them

    def put(self, command: ParamCommand) -> None:
        """Post `command` (returns at once)."""
        with self._lock:
            if self._waiting is not None:
                command = command.merged_after(self._waiting)
                self.merged += 1
            self._waiting = command

    def take(self) -> ParamCommand | None:
        """The waiting command (None if there is none), emptying the box."""
        with self._lock:
            command, self._waiting = self._waiting, None
            return command


@dataclass(frozen=True)
class PublishedFrame:
    """One shown frame. `image` is uint8 RGB [H, W, 3]; times are time.monotonic()."""

    image: np.ndarray
    index: int
    shown_at: float
    audio_arrival: float  # when the newest sample this frame heard arrived in the callback (nan: none yet)
    params: Params  # what the frame was made with: the base below with the modulations applied
    mel: np.ndarray  # the window the model saw, [n_mels, W] in [0, 1]
    base_params: Params | None = None  # what the performer and the controls set (mid-fade: between looks)
    features: SoundFeatures | None = None  # the sound's analysis at this frame (level, bands, onsets)
    clock: ClockState | None = None  # tempo and beat phase at this frame
    events: tuple[ShowEvent, ...] = ()  # the changes this frame took (what a set log keeps)
    show: ShowState | None = None  # the show's state after this frame (where a set log starts)

    @property
    def latency(self) -> float:
        """Seconds from the newest sample's arrival to this frame's publication."""
        return self.shown_at - self.audio_arrival


@dataclass(frozen=True)
class RenderStatus:
    """What the status bar shows, published after every frame: frame and drop counts, fps and latency
    over the last STATUS_WINDOW frames, the input level, and what plays."""
    frames: int
    dropped: int
    fps: float
    latency_ms_median: float
    latency_ms_p95: float
    level_peak: float
    level_rms: float
    clipped: bool
    frozen: bool
    model: str
    look: str
    fading: bool
    error: str | None = None
    bpm: float = math.nan
    beat_phase: float = math.nan
    tempo_source: str = ""


@dataclass
class _Stats:
    shown: deque = field(default_factory=lambda: deque(maxlen=STATUS_WINDOW))
    latency: deque = field(default_factory=lambda: deque(maxlen=STATUS_WINDOW))
    all_latency: list = field(default_factory=list)  # for benchmarks; bounded by `keep_latencies`
    frames: int = 0
    dropped: int = 0


class RenderWorker(threading.Thread):
    """Steps `FramePipeline` at the target fps on the newest audio; see the module docstring. The
    control logic (fades, modulations, beat clock, model swaps) is `core.show_control.ShowControl`,
    the same code a replay of a set log runs; this thread feeds it the mailboxes and the sound.

    `clock`: the fade clock, `time.monotonic` live (a test may pass the audio's own clock)."""

    def __init__(
        self,
        model: SoundvjModel,
        source: SampleSource,
        params: Params | None = None,
        keep_latencies: int = 0,
        on_error: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name="soundvj-render", daemon=True)
        params = params or Params()
        if source.sample_rate != model.mel_config.sample_rate:
            raise SoundvjError(
                f"audio source at {source.sample_rate} Hz, but the model expects {model.mel_config.sample_rate} Hz"
            )
        self.source = source
        # Mailboxes in (read between frames) ...
        self.commands = ParamCommandBox()
        self.taps: deque[float] = deque(maxlen=MAX_WAITING_TAPS)  # time.monotonic() of each tap
        self.models: LatestSlot[SoundvjModel] = LatestSlot()
        self.modulations: LatestSlot[ModulationMatrix] = LatestSlot()
        self.link_states: LatestSlot[LinkState] = LatestSlot()  # the newest Ableton Link reading
        # ... and out (overwritten each frame, read whenever a reader likes).
        self.frames: LatestSlot[PublishedFrame] = LatestSlot()
        self.status: LatestSlot[RenderStatus] = LatestSlot()
        self.sinks: list[FrameSink] = []  # e.g. the recorder; each `feed` returns at once
        self._sinks_lock = threading.Lock()
        self.frozen = threading.Event()
        self._stop_event = threading.Event()
        self._on_error = on_error
        self._keep_latencies = keep_latencies
        self._stats = _Stats()
        self._clock = clock
        self.show = ShowControl(model, params, report=self._report, background_embedding=True)
        self._model_seq = self._matrix_seq = self._link_seq = 0
        self._last_frame: PublishedFrame | None = None
        self._level = (0.0, 0.0)
        self.error: str | None = None

    # -- control (any thread) ---------------------------------------------------------------------

    def set_params(self, params: Params, fade_seconds: float = 0.0, name: str = "",
                   only: Iterable[str] | None = None) -> None:
        """Go to `params`, crossfading over `fade_seconds`, from the next frame on (returns at once).

        `only`: just these parameters changed (a control moved them); they jump at once and a running
        crossfade goes on for the others."""
        if only is None:
            self.commands.put(ParamCommand(params, fade_seconds, name))
        else:
            self.commands.put(ParamCommand(params, 0.0, name, cut=frozenset(only), keep_fade=True))

    def set_modulations(self, matrix: ModulationMatrix) -> None:
        """Apply `matrix` to the base parameters from the next frame on (returns at once)."""
        self.modulations.put(matrix)

    def tap(self, at: float | None = None) -> None:
        """A tempo tap at monotonic time `at` (default: now), for the beat clock from the next frame on."""
        self.taps.append(time.monotonic() if at is None else at)

    def set_link_state(self, state: LinkState) -> None:
        """The Link session's tempo and beat at a monotonic time, for the beat clock from the next frame on."""
        self.link_states.put(state)

    def swap_model(self, model: SoundvjModel) -> None:
        """Play `model` from the next frame on (load it off this thread first; see `load_model_async`)."""
        self.models.put(model)

    def add_sink(self, sink: FrameSink) -> None:
        """Feed every frame from now on to `sink` too (e.g. a recorder)."""
        with self._sinks_lock:
            self.sinks = [*self.sinks, sink]

    def remove_sink(self, sink: FrameSink) -> None:
        """Stop feeding `sink`."""
        with self._sinks_lock:
            self.sinks = [s for s in self.sinks if s is not sink]

    def stop(self, timeout: float = 5.0) -> None:
        """End the loop after the current frame and wait up to `timeout` seconds for the thread."""
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    @property
    def params(self) -> Params:
        """The snapshot the last frame was made with (mid-fade: the intermediate values), modulated."""
        return self.show.params

    @property
    def base_params(self) -> Params:
        """The last frame's parameters before the modulations (what the performer and controls set)."""
        return self.show.base_params

    @property
    def matrix(self) -> ModulationMatrix:
        """The modulation matrix in use."""
        return self.show.matrix

    @property
    def model(self) -> SoundvjModel:
        """The model that makes the frames now."""
        return self.show.model

    @property
    def pipeline(self) -> FramePipeline:
        """The frame pipeline in use (a new one after a model swap or a seed change)."""
        return self.show.pipeline

    @property
    def windower(self) -> StreamingWindower:
        """The windower the input's samples go into."""
        return self.show.windower

    @property
    def clock(self) -> BeatClock:
        """The render thread's beat clock: taps and tempo changes reach it as events between frames."""
        return self.show.clock

    @property
    def feature_tracker(self) -> SoundFeatureTracker:
        """The sound analysis on the windower's columns."""
        return self.show.feature_tracker

    @property
    def latencies(self) -> list[float]:
        """Audio-to-frame latencies (seconds) of the frames so far, at most `keep_latencies` of them."""
        return list(self._stats.all_latency)

    def clear_latencies(self) -> None:
        """Forget the latencies kept so far (a benchmark measures from after its warm-up)."""
        self._stats.all_latency.clear()

    @property
    def frames_made(self) -> int:
        """Frames made and published since the worker was created."""
        return self._stats.frames

    @property
    def deadlines_dropped(self) -> int:
        """Frame deadlines skipped because a frame came out late (never made up for later)."""
        return self._stats.dropped

    @property
    def crossfading_seeds(self) -> bool:
        """True while a seed change crossfades: the old and the new latent sequence run side by side."""
        return self.show.crossfading_seeds

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        """The frame loop (see the module docstring); errors become one-line messages, never an exit."""
        next_deadline = time.monotonic()
        while not self._stop_event.is_set():
            period = 1.0 / self.show.params.fps
            wait = next_deadline - time.monotonic()
            if wait > 0 and self._stop_event.wait(wait):
                break
            now = time.monotonic()
            missed = math.floor((now - next_deadline) / period)
            if missed > 0:  # late: skip the deadlines already past, never catch up on stale work
                self._stats.dropped += missed
                next_deadline += missed * period
            next_deadline += period
            try:
                self.tick()
            except Exception as e:  # keep the show going; tell the UI once per distinct error
                message = one_line(f"render: {type(e).__name__}: {e}", first_line_only=True)
                if message != self.error:
                    self.error = message
                    if self._on_error:
                        self._on_error(message)
                self._stop_event.wait(0.2)
        self.show.close()

    def tick(self, now: float | None = None) -> PublishedFrame:
        """Make and publish one frame from the audio that arrived since the last one (the loop's body;
        tests and benchmarks may call it directly on a worker that was not started). `now`: the fade
        clock's reading for this frame (default: the worker's clock)."""
        show = self.show
        samples, arrival = self.source.read_new()
        if not math.isfinite(arrival):
            arrival = self._last_frame.audio_arrival if self._last_frame else float("nan")
        now = self._clock() if now is None else now
        # Wall time -> audio time for taps and Link: the newest sample arrived at `arrival`.
        self._apply_mailboxes(heard_at=arrival if math.isfinite(arrival) else now)
        if samples.size:
            show.windower.push(samples)
            peak = float(np.max(np.abs(samples)))
            self._level = (peak, float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))))
        else:
            self._level = (0.0, 0.0)
        made = show.frame(now)
        if made.image is not None or self._last_frame is None:
            image = to_uint8_rgb(made.image).cpu().numpy()
        else:
            image = self._last_frame.image  # the picture holds; the audio (and recording) go on
        frame = PublishedFrame(
            image=image, index=self._stats.frames, shown_at=time.monotonic(), audio_arrival=arrival,
            params=made.params, mel=made.mel.numpy(), base_params=made.base, features=made.features,
            clock=made.clock, events=made.events, show=made.state,
        )
        self.frames.put(frame)
        for sink in self.sinks:
            sink.feed(frame, samples)
        self._last_frame = frame
        self._record_stats(frame)
        return frame

    # -- internals --------------------------------------------------------------------------------

    def _apply_mailboxes(self, heard_at: float) -> None:
        """Hand what the mailboxes hold to the show control, in a fixed order: model, matrix,
        parameters, taps, Link, freeze. Taps and Link readings go as seconds before the newest
        sample (it arrived at `heard_at`), the audio-time form a replay can use as well."""
        show = self.show
        model, self._model_seq = self.models.take_new(self._model_seq)
        if model is not None:
            show.swap_model(model)
        matrix, self._matrix_seq = self.modulations.take_new(self._matrix_seq)
        if matrix is not None:
            show.set_matrix(matrix)
        command = self.commands.take()
        if command is not None:
            show.command(command, at=self._clock())
        while self.taps:
            show.tap(heard_at - self.taps.popleft())
        link, self._link_seq = self.link_states.take_new(self._link_seq)
        if link is not None:
            show.link(link.bpm, link.beat, heard_at - link.at)
        show.set_frozen(self.frozen.is_set())

    def _record_stats(self, frame: PublishedFrame) -> None:
        s = self._stats
        s.frames += 1
        s.shown.append(frame.shown_at)
        if math.isfinite(frame.audio_arrival):
            s.latency.append(frame.latency)
            if len(s.all_latency) < self._keep_latencies:
                s.all_latency.append(frame.latency)
        fps = (len(s.shown) - 1) / (s.shown[-1] - s.shown[0]) if len(s.shown) > 1 and s.shown[-1] > s.shown[0] else 0.0
        lat = np.array(s.latency) * 1000 if s.latency else np.array([math.nan])
        peak, rms = self._level
        self.status.put(RenderStatus(
            frames=s.frames, dropped=s.dropped, fps=fps,
            latency_ms_median=float(np.median(lat)), latency_ms_p95=float(np.percentile(lat, 95)),
            level_peak=peak, level_rms=rms, clipped=peak >= 0.999, frozen=self.frozen.is_set(),
            model=self.show.model.source, look=self.show.look, fading=self.show.fading(frame.shown_at),
            error=self.error,
            bpm=frame.clock.bpm if frame.clock else math.nan,
            beat_phase=frame.clock.phase if frame.clock else math.nan,
            tempo_source=frame.clock.source if frame.clock else "",
        ))

    def _report(self, message: str) -> None:
        self.error = message
        if self._on_error:
            self._on_error(message)


def load_model_async(
    path: str | None, device: str | None, done: Callable[[SoundvjModel | None, str | None], None]
) -> threading.Thread:
    """Load a model on its own thread and call `done(model, None)` or `done(None, one-line error)`;
    the render thread keeps playing the old model meanwhile."""

    def work() -> None:
        try:
            model = load_model(path, device=device, warn=lambda _msg: None)
            FramePipeline(model)  # first mapping call (and any lazy init) happens here, not in the loop
        except SoundvjError as e:
            done(None, str(e))
        except Exception as e:  # noqa: BLE001 - reported to the performer, the show goes on
            done(None, one_line(f"{path}: {type(e).__name__}: {e}", first_line_only=True))
        else:
            done(model, None)

    thread = threading.Thread(target=work, name="soundvj-model-loader", daemon=True)
    thread.start()
    return thread
