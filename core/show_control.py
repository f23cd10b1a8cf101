"""The show's control logic: what each frame is made with, given what the performer did and the sound.

From the performer's parameter commands (preset switches with their fades, knob moves), the
modulation matrix, tempo taps, Ableton Link readings, freeze and model swaps, and the sound's newest
mel window, `ShowControl` works out every frame's parameters and steps the frame pipeline. It is THE
one copy of that logic: the live render thread (`visualizer.render_worker`) drives it at wall-clock
deadlines, and an offline replay of a set log (`core.replay`) drives it frame by frame on the set's
sound, so a replay makes the same decisions at the same audio times as the show did.

No threads, no Qt, no I/O. The owner passes the clock in:
- `now` is the fade clock: `time.monotonic()` live, the frame's audio time in a replay. Crossfades
  (of parameters and of the seed's latent) run on it.
- The sound analysis, the beat clock and the modulations run on *audio time*, the windower's
  samples_seen / sample rate. A tap or a Link reading arrives in wall time; the owner hands it over as
  `ago`, the seconds before the frame's newest sample it happened, which is what a replay needs too.

Each change a frame takes is also returned as an event (`ShowFrame.events`): a set log writes them
down, and a replay feeds them back through the same methods.

Order per frame, the same for every owner: the changes (`swap_model`, `set_matrix`, `command`, `tap`,
`link`, `set_frozen`), then the new samples into `windower`, then `frame(now)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from core.audio.windows import StreamingWindower
from core.control import BeatClock, ClockState, ModulationMatrix, SoundFeatures, SoundFeatureTracker
from core.errors import one_line
from core.model import SoundvjModel
from core.param_fade import ParamFade
from core.params import Params
from core.pipeline import FramePipeline
from core.stylegan3.ops import backend as ops_backend

SOUND_MODEL_THREADS = 1  # CPU threads for E_A, E_I and the stepper on one window (more threads only wait)


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


# -- what a frame took: the events a set log keeps and a replay plays back --------------------------

@dataclass(frozen=True)
class CommandTaken:
    """A parameter command (preset switch, knob move) taken before this frame."""

    command: ParamCommand


@dataclass(frozen=True)
class MatrixSet:
    """A new modulation matrix, in use from this frame."""

    matrix: ModulationMatrix


@dataclass(frozen=True)
class TapTaken:
    """A tempo tap, `ago` seconds before the frame's newest sample."""

    ago: float


@dataclass(frozen=True)
class LinkTaken:
    """An Ableton Link reading: tempo `bpm`, beat position `beat` at `ago` seconds before the frame's
    newest sample."""

    bpm: float
    beat: float
    ago: float


@dataclass(frozen=True)
class FreezeSet:
    """The picture froze (True) or moves again (False) from this frame."""

    frozen: bool


@dataclass(frozen=True)
class ModelSwapped:
    """Another model makes the frames from this one on."""

    model: SoundvjModel


ShowEvent = CommandTaken | MatrixSet | TapTaken | LinkTaken | FreezeSet | ModelSwapped


@dataclass(frozen=True)
class ShowState:
    """Where the show stands after a frame: enough for a replay to continue from there (a set log
    started mid-show). `now` is the frame's fade clock, so `now - fade.t0` is how far the fade got."""

    fade: ParamFade
    now: float
    look: str
    matrix: ModulationMatrix
    frozen: bool
    clock: ClockState | None
    model: SoundvjModel


@dataclass(frozen=True)
class ShowFrame:
    """One frame's outcome. `image` is the generator's float frame [3, H, W] in about [-1, 1], or None
    when the picture is frozen (show the previous one again)."""

    image: torch.Tensor | None
    params: Params  # the base with the modulations applied: what the frame was made with
    base: Params  # what the performer and the controls set (mid-fade: between looks)
    features: SoundFeatures | None
    clock: ClockState | None
    mel: torch.Tensor  # the window the model saw, [n_mels, W]
    events: tuple[ShowEvent, ...] = field(default=())
    state: ShowState | None = None


class ShowControl:
    """Parameters, modulations, beat clock, crossfades and the pipeline of one show; see the module
    docstring. `report` gets one-line messages (a refused model, a failing modulation): a problem in
    control never stops the show. `fixed_fps`: every frame's fps is this whatever the looks say (a
    replay renders at its own rate). `background_embedding`: live, the pipelines compute the pretrained
    sound embedding on their own thread (`FramePipeline.embed_in_background`); frames are the same."""

    def __init__(self, model: SoundvjModel, params: Params | None = None,
                 report: Callable[[str], None] | None = None, fixed_fps: float | None = None,
                 background_embedding: bool = False) -> None:
        params = params or Params()
        self._background_embedding = background_embedding
        self._fixed_fps = fixed_fps
        if fixed_fps is not None and params.fps != fixed_fps:
            params = params.replace(fps=fixed_fps)
        self._report = report
        self._synthesis_threads = torch.get_num_threads()  # synthesis uses what the process was given
        self.clock = BeatClock()  # taps and tempo changes arrive as events
        self._matrix = ModulationMatrix()
        self._look = ""
        self._frozen = False
        self._stepped = False  # a frame was synthesised: freezing has a picture to hold
        self._control_error: str | None = None
        self._taps: list[float] = []
        self._link: LinkTaken | None = None
        self._events: list[ShowEvent] = []
        self.windower: StreamingWindower | None = None  # the owner pushes the sound into it
        self._latent_fade: tuple[FramePipeline, float, float] | None = None  # (old pipeline, t0, seconds)
        self._install_model(model, params)
        self._fade = ParamFade(params, params, 0.0, 0.0)

    # -- reading ----------------------------------------------------------------------------------

    @property
    def model(self) -> SoundvjModel:
        """The model that makes the frames now."""
        return self._model

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
    def look(self) -> str:
        """The name of the look last picked (a preset's), or ""."""
        return self._look

    @property
    def frozen(self) -> bool:
        """True while the picture holds (the sound analysis and the beat clock go on)."""
        return self._frozen

    @property
    def crossfading_seeds(self) -> bool:
        """True while a seed change crossfades: the old and the new latent sequence run side by side."""
        return self._latent_fade is not None

    def fading(self, now: float) -> bool:
        """True while a parameter crossfade runs at fade-clock time `now`."""
        return not self._fade.done(now)

    # -- changes, taken between frames ------------------------------------------------------------

    def swap_model(self, model: SoundvjModel) -> bool:
        """Make frames with `model` from the next frame on; False (with a message) if it hears another
        sample rate than the sound coming in."""
        rate = self.windower.mel_config.sample_rate
        if model.mel_config.sample_rate != rate:
            self._say(f"model {model.source}: expects {model.mel_config.sample_rate} Hz audio; "
                      f"the input runs at {rate} Hz (kept the current model)")
            return False
        self._install_model(model, self._params_now)
        self._events.append(ModelSwapped(model))
        return True

    def set_matrix(self, matrix: ModulationMatrix) -> None:
        """Apply `matrix` to the base parameters from the next frame on."""
        self._matrix = matrix
        self._events.append(MatrixSet(matrix))

    def command(self, command: ParamCommand, at: float) -> None:
        """Take a parameter command at fade-clock time `at` (its crossfade starts there)."""
        current = self._fade.at(at)
        cut = {name: getattr(command.params, name) for name in command.cut}
        if command.keep_fade:
            old = self._fade
            self._fade = ParamFade(old.start.replace(**cut), command.params, old.t0, old.seconds)
        else:
            self._fade = ParamFade(current.replace(**cut), command.params, at, max(0.0, command.fade_seconds))
        self._look = command.name or self._look
        if (command.params.seed != self.pipeline.params.seed and command.fade_seconds > 0
                and not command.keep_fade and "seed" not in command.cut):
            # A seed cannot be halfway: run the new sequence beside the old one and blend the latents.
            old_pipeline = self.pipeline
            self.pipeline = self._new_pipeline(self._model, self._fixed(current.replace(seed=command.params.seed)))
            self._end_latent_fade()
            self._latent_fade = (old_pipeline, at, command.fade_seconds)
        self._events.append(CommandTaken(command))

    def tap(self, ago: float) -> None:
        """A tempo tap `ago` seconds before the next frame's newest sample."""
        self._taps.append(ago)
        self._events.append(TapTaken(ago))

    def link(self, bpm: float, beat: float, ago: float) -> None:
        """An Ableton Link reading: at `ago` seconds before the next frame's newest sample the tempo
        is `bpm` and the beat position `beat`."""
        self._link = LinkTaken(bpm, beat, ago)
        self._events.append(self._link)

    def set_frozen(self, frozen: bool) -> None:
        """Hold the picture (the sound analysis and the clock go on) or let it move again."""
        if frozen != self._frozen:
            self._frozen = frozen
            self._events.append(FreezeSet(frozen))

    def resume(self, state: ShowState, at: float) -> None:
        """Continue from `state` (read from another show at its fade-clock time `state.now`) at
        fade-clock and audio time `at`: the crossfade as far along, the look, matrix, freeze and the
        beat clock's tempo and beat. Only the latent sequence starts afresh (it is the model's state,
        not the show's)."""
        fade = state.fade
        self._fade = ParamFade(fade.start, fade.target, at - (state.now - fade.t0), fade.seconds)
        self._look, self._matrix, self._frozen = state.look, state.matrix, state.frozen
        if state.clock is not None:
            self.clock.resume(state.clock, at)
        base = self._fixed(self._fade.at(at))
        self.pipeline.set_params(base)
        self.windower.set_fps(base.fps)
        self.windower.set_window_seconds(base.window_seconds)
        self._params_now = self._base_now = base

    # -- the frame --------------------------------------------------------------------------------

    def frame(self, now: float) -> ShowFrame:
        """Make one frame on the windower's newest window at fade-clock time `now`: the base at `now`,
        the sound's features, the beat clock (taps and Link first), the modulations, then the pipeline
        (unless frozen). Returns the frame, the events taken since the previous one and the state after it."""
        base = self._advance_base(now)
        mel = self.windower.latest()
        features, clock_state, params = self._control(base, mel)
        self._set_frame_params(params, now)
        image = None
        if not (self._frozen and self._stepped):
            image = self._step(mel, now)
            self._stepped = True
        events, self._events = tuple(self._events), []
        state = ShowState(self._fade, now, self._look, self._matrix, self._frozen, clock_state, self._model)
        return ShowFrame(image, params, base, features, clock_state, mel, events, state)

    # -- internals --------------------------------------------------------------------------------

    def _fixed(self, params: Params) -> Params:
        if self._fixed_fps is None or params.fps == self._fixed_fps:
            return params
        return params.replace(fps=self._fixed_fps)

    def _say(self, message: str) -> None:
        if self._report:
            self._report(message)

    def _new_pipeline(self, model: SoundvjModel, params: Params) -> FramePipeline:
        pipeline = FramePipeline(model, params)
        pipeline.embed_in_background(self._background_embedding)
        return pipeline

    def _end_latent_fade(self) -> None:
        if self._latent_fade is not None:
            self._latent_fade[0].close()
            self._latent_fade = None

    def close(self) -> None:
        """Stop the pipelines' background threads (live); the show cannot step afterwards."""
        self._end_latent_fade()
        self.pipeline.close()

    def _install_model(self, model: SoundvjModel, params: Params) -> None:
        ops_backend.prepare(model.device.type, wait=False)  # a first C++ build runs beside, never in the loop
        self._model = model
        old_pipeline = getattr(self, "pipeline", None)
        if old_pipeline is not None:
            old_pipeline.close()
        self.pipeline = self._new_pipeline(model, params)
        old = self.windower
        if old is not None and old.mel_config == model.mel_config:
            old.set_fps(params.fps)
            old.set_window_seconds(params.window_seconds)
        else:
            self.windower = self.pipeline.make_windower()
            self.feature_tracker = SoundFeatureTracker(model.mel_config)  # reads this windower's columns
        self._params_now = params
        self._base_now = params
        self._end_latent_fade()

    def _advance_base(self, now: float) -> Params:
        """The base parameters at `now` (the crossfade's), with the windower following fps and window."""
        params = self._fixed(self._fade.at(now))
        before = self._base_now
        if params.fps != before.fps:
            self.windower.set_fps(params.fps)
        if params.window_seconds != before.window_seconds:
            self.windower.set_window_seconds(params.window_seconds)
        self._base_now = params
        return params

    def _control(self, base: Params, mel: torch.Tensor) -> tuple[SoundFeatures | None, ClockState | None, Params]:
        """The sound's features on this frame's window, the beat clock (taps first), and the base with
        the modulation matrix applied. The analysis reads the window before `gain_db`, and modulations
        never move audio parameters, so they cannot feed back into what the sound models hear.
        A failure here is reported once and the frame renders the base: control must not stop the show."""
        taps, self._taps = self._taps, []
        link, self._link = self._link, None
        try:
            sr = self.windower.mel_config.sample_rate
            audio_now = self.windower.samples_seen / sr
            for ago in taps:
                self.clock.tap(audio_now - ago)
            if link is not None:  # Ableton Link leads: its beat at `ago` before now, in audio time
                self.clock.set_tempo(link.bpm, audio_now - link.ago, link.beat)
            features = self.feature_tracker.update(mel, self.windower.samples_seen)
            self.clock.observe(features)
            params = self._matrix.apply(base, features, self.clock, audio_now)
            self._control_error = None
            return features, self.clock.state_at(audio_now), params
        except Exception as e:  # noqa: BLE001 - keep rendering the base; say it once
            message = one_line(f"control: {type(e).__name__}: {e}", first_line_only=True)
            if message != self._control_error:
                self._control_error = message
                self._say(message)
            return None, None, base

    def _set_frame_params(self, params: Params, now: float) -> None:
        self.pipeline.set_params(params)  # a new seed without a fade restarts the sequence here
        if self._latent_fade is not None:
            old, t0, seconds = self._latent_fade
            if now - t0 >= seconds:
                self._end_latent_fade()
            else:
                old.set_params(params.replace(seed=old.params.seed))
        self._params_now = params

    def _step(self, mel: torch.Tensor, now: float) -> torch.Tensor:
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
        return self.pipeline.synthesize(w)[0]

