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

from core.control import BeatClock, ClockState, ModulationMatrix, SoundFeatures, SoundFeatureTracker
from core.errors import SoundvjError, one_line
from core.model import SoundvjModel, load_model
from core.param_fade import ParamFade
from core.params import Params
from core.pipeline import FramePipeline
from core.stylegan3.ops import backend as ops_backend
from core.video_writer import to_uint8_rgb
from visualizer.control.link import LinkState
from visualizer.mailbox import LatestSlot

DEFAULT_FADE_SECONDS = 2.0
MAX_WAITING_TAPS = 32  # taps between two frames beyond this are dropped (nobody taps that fast)
STATUS_WINDOW = 48  # frames over which fps and latency are summarised
SOUND_MODEL_THREADS = 1  # CPU threads for E_A, E_I and the stepper on one window (more threads only wait)


class SampleSource(Protocol):
    """What the worker reads audio from: `visualizer.audio_ring.SampleRing`."""

    sample_rate: int

    def read_new(self) -> tuple[np.ndarray, float]: ...


class FrameSink(Protocol):
    """Something that takes every published frame plus the audio heard since the previous one
    (the recorder); it must return at once."""

    def feed(self, frame: "PublishedFrame", audio: np.ndarray) -> None: ...


@dataclass(frozen=True)
class ParamCommand:
    """Go to `params`, crossfading over `fade_seconds` (0: at once). `name` labels the look (status).

    `cut`: parameters that jump to their new value at once whatever the fade (a knob that moved).
    `keep_fade`: leave the running crossfade as it is for every other parameter (a control moving
    one knob during a preset's fade must not cut the fade short, nor start another).
    """

    params: Params
    fade_seconds: float = 0.0
    name: str = ""
    cut: frozenset[str] = frozenset()
    keep_fade: bool = False

    def merged_after(self, earlier: ParamCommand) -> ParamCommand:
        """This command as if `earlier` (posted before it, not yet taken) had been applied first.

        `params` is always a whole snapshot, so the newer one wins; what must not get lost is the
        earlier command's fade when this one only moves some knobs on top of it.
        """
        if not self.keep_fade:
            return self
        cut = earlier.cut | self.cut
        if not earlier.keep_fade:
            return ParamCommand(self.params, earlier.fade_seconds, earlier.name, cut, keep_fade=False)
        return ParamCommand(self.params, self.fade_seconds, self.name or earlier.name, cut, keep_fade=True)


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
    """Steps `FramePipeline` at the target fps on the newest audio; see the module docstring."""

    def __init__(
        self,
        model: SoundvjModel,
        source: SampleSource,
        params: Params | None = None,
        keep_latencies: int = 0,
        on_error: Callable[[str], None] | None = None,
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
        self._synthesis_threads = torch.get_num_threads()  # synthesis uses what the process was given
        self._install_model(model, params)
        self._fade = ParamFade(params, params, time.monotonic(), 0.0)
        self._look = ""
        self._latent_fade: tuple[FramePipeline, float, float] | None = None  # (old pipeline, t0, seconds)
        self._last_frame: PublishedFrame | None = None
        self._level = (0.0, 0.0)
        self.error: str | None = None
        self.clock = BeatClock()  # the render thread's own: taps and tempo changes arrive as events
        self._matrix = ModulationMatrix()
        self._link_seq = 0
        self._control_error: str | None = None

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
        return self._params_now

    @property
    def base_params(self) -> Params:
        """The last frame's parameters before the modulations (what the performer and controls set)."""
        return self._base_now

    @property
    def matrix(self) -> ModulationMatrix:
        """The modulation matrix in use."""
        return self._matrix

    @property
    def model(self) -> SoundvjModel:
        """The model that makes the frames now."""
        return self._model

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
        return self._latent_fade is not None

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        """The frame loop (see the module docstring); errors become one-line messages, never an exit."""
        next_deadline = time.monotonic()
        while not self._stop_event.is_set():
            period = 1.0 / self._params_now.fps
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

    def tick(self, now: float | None = None) -> PublishedFrame:
        """Make and publish one frame from the audio that arrived since the last one (the loop's body;
        tests and benchmarks may call it directly on a worker that was not started)."""
        self._apply_mailboxes()
        now = time.monotonic() if now is None else now
        base = self._advance_base(now)
        samples, arrival = self.source.read_new()
        if samples.size:
            self.windower.push(samples)
            peak = float(np.max(np.abs(samples)))
            self._level = (peak, float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))))
        else:
            self._level = (0.0, 0.0)
        if not math.isfinite(arrival):
            arrival = self._last_frame.audio_arrival if self._last_frame else float("nan")
        mel = self.windower.latest()
        features, clock_state, params = self._control(base, mel, arrival, now)
        self._set_frame_params(params, now)
        if self.frozen.is_set() and self._last_frame is not None:
            image = self._last_frame.image  # the picture holds; the audio (and recording) go on
        else:
            image = self._step(mel, now)
        frame = PublishedFrame(
            image=image, index=self._stats.frames, shown_at=time.monotonic(), audio_arrival=arrival,
            params=self._params_now, mel=mel.numpy(), base_params=base, features=features, clock=clock_state,
        )
        self.frames.put(frame)
        for sink in self.sinks:
            sink.feed(frame, samples)
        self._last_frame = frame
        self._record_stats(frame)
        return frame

    # -- internals --------------------------------------------------------------------------------

    def _install_model(self, model: SoundvjModel, params: Params) -> None:
        ops_backend.prepare(model.device.type, wait=False)  # a first C++ build runs beside, never in the loop
        self._model = model
        self.pipeline = FramePipeline(model, params)
        old = getattr(self, "windower", None)
        if old is not None and old.mel_config == model.mel_config:
            self.windower.set_fps(params.fps)
            self.windower.set_window_seconds(params.window_seconds)
        else:
            self.windower = self.pipeline.make_windower()
            self.feature_tracker = SoundFeatureTracker(model.mel_config)  # reads this windower's columns
        self._params_now = params
        self._base_now = params
        self._latent_fade = None

    def _apply_mailboxes(self) -> None:
        model, self._model_seq = self.models.take_new(getattr(self, "_model_seq", 0))
        if model is not None:
            if model.mel_config.sample_rate != self.source.sample_rate:
                self._report(f"model {model.source}: expects {model.mel_config.sample_rate} Hz audio; "
                             f"the input runs at {self.source.sample_rate} Hz (kept the current model)")
            else:
                self._install_model(model, self._params_now)
        matrix, self._matrix_seq = self.modulations.take_new(getattr(self, "_matrix_seq", 0))
        if matrix is not None:
            self._matrix = matrix
        command = self.commands.take()
        if command is not None:
            now = time.monotonic()
            current = self._fade.at(now)
            cut = {name: getattr(command.params, name) for name in command.cut}
            if command.keep_fade:
                old = self._fade
                self._fade = ParamFade(old.start.replace(**cut), command.params, old.t0, old.seconds)
            else:
                self._fade = ParamFade(current.replace(**cut), command.params, now, max(0.0, command.fade_seconds))
            self._look = command.name or self._look
            if (command.params.seed != self.pipeline.params.seed and command.fade_seconds > 0
                    and not command.keep_fade and "seed" not in command.cut):
                # A seed cannot be halfway: run the new sequence beside the old one and blend the latents.
                old = self.pipeline
                self.pipeline = FramePipeline(self._model, current.replace(seed=command.params.seed))
                self._latent_fade = (old, now, command.fade_seconds)

    def _advance_base(self, now: float) -> Params:
        """The base parameters at `now` (the crossfade's), with the windower following fps and window."""
        params = self._fade.at(now)
        before = self._base_now
        if params.fps != before.fps:
            self.windower.set_fps(params.fps)
        if params.window_seconds != before.window_seconds:
            self.windower.set_window_seconds(params.window_seconds)
        self._base_now = params
        return params

    def _control(self, base: Params, mel: torch.Tensor, arrival: float,
                 now: float) -> tuple[SoundFeatures | None, ClockState | None, Params]:
        """The sound's features on this frame's window, the beat clock (taps first), and the base with
        the modulation matrix applied. The analysis reads the window before `gain_db`, and modulations
        never move audio parameters, so they cannot feed back into what the sound models hear.
        A failure here is reported once and the frame renders the base: control must not stop the show."""
        try:
            sr = self.windower.mel_config.sample_rate
            audio_now = self.windower.samples_seen / sr
            # Wall time -> audio time: the newest sample (audio_now) arrived at `arrival`.
            heard_at = arrival if math.isfinite(arrival) else now
            while self.taps:
                self.clock.tap(audio_now - (heard_at - self.taps.popleft()))
            link, self._link_seq = self.link_states.take_new(self._link_seq)
            if link is not None:  # Ableton Link leads: its beat at `link.at`, in audio time
                self.clock.set_tempo(link.bpm, audio_now - (heard_at - link.at), link.beat)
            features = self.feature_tracker.update(mel, self.windower.samples_seen)
            self.clock.observe(features)
            params = self._matrix.apply(base, features, self.clock, audio_now)
            self._control_error = None
            return features, self.clock.state_at(audio_now), params
        except Exception as e:  # noqa: BLE001 - keep rendering the base; say it once
            message = one_line(f"control: {type(e).__name__}: {e}", first_line_only=True)
            if message != self._control_error:
                self._control_error = message
                self._report(message)
            return None, None, base

    def _set_frame_params(self, params: Params, now: float) -> None:
        self.pipeline.set_params(params)  # a new seed without a fade restarts the sequence here
        if self._latent_fade is not None:
            old, t0, seconds = self._latent_fade
            if now - t0 >= seconds:
                self._latent_fade = None
            else:
                old.set_params(params.replace(seed=old.params.seed))
        self._params_now = params

    def _step(self, mel: torch.Tensor, now: float) -> np.ndarray:
        # On CPU the sound models (small convolutions and a GRU on one window) run fastest on one
        # thread and synthesis on all of them (measured: benchmarks/live.py; docs/performance.md, "The live path").
        on_cpu = self._model.device.type == "cpu"
        if on_cpu:
            torch.set_num_threads(SOUND_MODEL_THREADS)
        try:
            w = self.pipeline.step_latents(mel.unsqueeze(0))
            if self._latent_fade is not None:
                old, t0, seconds = self._latent_fade
                t = min(1.0, max(0.0, (now - t0) / seconds))
                w = torch.lerp(old.step_latents(mel.unsqueeze(0)), w, t)
        finally:
            if on_cpu:
                torch.set_num_threads(self._synthesis_threads)
        frame = self.pipeline.synthesize(w)[0]
        return to_uint8_rgb(frame).cpu().numpy()

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
            model=self._model.source, look=self._look, fading=not self._fade.done(frame.shown_at),
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
