"""A live session without any Qt: the audio ring, the input (microphone or file player), the render
worker, presets, the recorder and the control layer (dispatcher, OSC in and out), wired together. The
window drives one; `soundvj live` scripted runs, the benchmark and the tests drive it directly.

It is the control layer's `ControlSurface`: every method the dispatcher calls returns at once (a
parameter snapshot, a modulation matrix or a tap posted into the render worker's mailboxes), and
the read-modify-write of the target parameters is one short lock, so a knob on the MIDI thread and
an OSC fader on the OSC thread never undo each other.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, TypeVar

from core.control import Modulation, ModulationMatrix
from core.errors import SoundvjError
from core.model import SoundvjModel
from core.params import Params, Value
from core.presets import Preset, load_preset, preset_dirs, preset_files
from visualizer.audio_ring import SampleRing
from visualizer.control.config import ControlConfig
from visualizer.control.dispatcher import ControlDispatcher, ModulatorFeed
from visualizer.control.link import LinkSync
from visualizer.control.midi import MidiInput, MidiSettings
from visualizer.control.osc import OscInput, OscOutput
from visualizer.file_player import FilePlayer
from visualizer.mic_input import MicInput
from visualizer.outputs.config import OutputConfig
from visualizer.outputs.ndi_sender import NdiSender
from visualizer.outputs.paced_output import PacedOutput
from visualizer.outputs.stream_sender import StreamSender
from visualizer.recorder import SessionRecorder, default_recording_path
from visualizer.render_worker import DEFAULT_FADE_SECONDS, RenderWorker, load_model_async
from visualizer.set_logger import SetLogger, set_log_path_beside

_Output = TypeVar("_Output", bound=PacedOutput)

RING_SECONDS = 10.0  # audio kept for the render thread; a frame longer than this late loses the oldest


@dataclass(frozen=True)
class InputChoice:
    """Where the sound comes from: a device (None = system default) or a file."""

    device: str | None = None
    file: str | None = None
    loop: bool = False


class LiveSession:
    """Everything that plays, minus the widgets. All methods return at once (no model work on the
    caller's thread); results and problems arrive as `messages` (one line each) and status slots."""

    def __init__(
        self,
        model: SoundvjModel,
        params: Params | None = None,
        source: InputChoice = InputChoice(),
        output_device: str | None = None,
        on_message: Callable[[str], None] | None = None,
        keep_latencies: int = 0,
        control: ControlConfig = ControlConfig(),
        record_folder: str | None = None,
        outputs: OutputConfig = OutputConfig(),
    ) -> None:
        self.model = model
        self.target = params or Params()
        self.source_choice = source
        self.output_device = output_device
        self.on_message = on_message
        self.messages: list[str] = []
        self.sample_rate = model.mel_config.sample_rate
        self.ring = SampleRing(int(RING_SECONDS * self.sample_rate), self.sample_rate)
        self.worker = RenderWorker(model, self.ring, self.target, keep_latencies=keep_latencies,
                                   on_error=self.message)
        self.mic: MicInput | None = None
        self.player: FilePlayer | None = None
        self.recorder: SessionRecorder | None = None
        self.set_logger: SetLogger | None = None
        self.keep_set_logs = False  # a recording also keeps a set log beside it (NAME.soundvjset)
        self._set_log_of_recording = False  # the running set log ends with the recording
        self.presets: list[Preset] = []
        self.look = ""
        self.fade_seconds = DEFAULT_FADE_SECONDS  # crossfade time when a control picks a preset
        self.modulations = ModulationMatrix()  # the matrix the worker was last given
        self.record_folder = record_folder
        self.control_config = control
        self._lock = threading.Lock()
        self._input_lock = threading.Lock()
        self._params_lock = threading.Lock()  # the target's read-modify-write; never held across I/O
        self.control = ControlDispatcher(self, control.mapping_path)
        self.osc_in: OscInput | None = None
        self.osc_out: OscOutput | None = None
        self.midi_in: MidiInput | None = None
        self.link: LinkSync | None = None
        self.modulator_feed: ModulatorFeed | None = None  # modulator bindings (onset, beat, bands)
        self.output_config = outputs  # the stream's and NDI's size and sound, also for the Output menu
        self.stream: StreamSender | None = None
        self.ndi: NdiSender | None = None
        self.reload_presets()
        self.control.load_mapping()

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, record: str | os.PathLike | None = None, record_seconds: float | None = None) -> None:
        """Start rendering, then (if asked) recording, then the input, so a recording of a file
        begins with the file's first sample."""
        self.start_control()
        self.worker.start()
        if record is not None:
            self.start_recording(record, max_seconds=record_seconds)
        self.use_source(self.source_choice)

    def start_control(self) -> None:
        """Open OSC in and out, the MIDI input and Ableton Link as configured (an OSC port in use or
        an unknown host: one-line `SoundvjError`, with nothing left open; MIDI and Link problems are
        messages)."""
        config = self.control_config
        if self.modulator_feed is None:
            feed = ModulatorFeed(self.control)
            feed.start()
            self.modulator_feed = feed
            self.worker.add_sink(feed)
        if config.link and self.link is None:
            self.link = LinkSync(post=self.worker.set_link_state, reporter=self.control.reporter)
            self.link.join(self.worker.clock.bpm)
        if config.midi is not None and self.midi_in is None:
            self.midi_in = MidiInput(self.control.midi, config.midi, reporter=self.control.reporter)
            self.midi_in.start()
        if config.osc_out is not None and self.osc_out is None:
            out = OscOutput(*config.osc_out, reporter=self.control.reporter)
            out.start()
            self.osc_out = out
            self.worker.add_sink(out)
        if config.osc_port and self.osc_in is None:
            osc_in = OscInput(self.control, config.osc_host, config.osc_port)
            try:
                osc_in.start()
            except SoundvjError:
                self.stop_control()
                raise
            self.osc_in = osc_in

    def stop_control(self) -> None:
        """Close OSC in and out, the MIDI input, Link and the modulator bindings' thread."""
        if self.modulator_feed is not None:
            self.worker.remove_sink(self.modulator_feed)
            self.modulator_feed.stop()
            self.modulator_feed = None
        if self.link is not None:
            self.link.leave()
            self.link = None
        if self.midi_in is not None:
            self.midi_in.stop()
            self.midi_in = None
        if self.osc_in is not None:
            self.osc_in.stop()
            self.osc_in = None
        if self.osc_out is not None:
            self.worker.remove_sink(self.osc_out)
            self.osc_out.stop()
            self.osc_out = None

    def stop(self) -> None:
        """Close the control inputs and network outputs, finish any recording, close the input, stop
        the render thread."""
        self.stop_control()
        self.stop_stream()
        self.stop_ndi()
        self.stop_recording(wait=True)
        self.stop_set_log(wait=True)
        self._close_input()
        self.worker.stop()

    def message(self, text: str) -> None:
        """Keep `text` (the last 50 messages) and pass it to `on_message`."""
        with self._lock:
            self.messages.append(text)
            del self.messages[:-50]
        if self.on_message:
            self.on_message(text)

    # -- input ------------------------------------------------------------------------------------

    def use_source(self, choice: InputChoice, background: bool = False) -> None:
        """Switch input. A microphone switch opens the new stream before closing the old one; a
        problem leaves the picture running on silence with a message. `background`: do it on a
        helper thread (decoding a long file takes a while; the UI must not wait for it)."""
        if background:
            threading.Thread(target=self.use_source, args=(choice,), name="soundvj-input-switch", daemon=True).start()
            return
        with self._input_lock:  # one switch at a time; the render thread never takes this lock
            self._use_source_now(choice)

    def _use_source_now(self, choice: InputChoice) -> None:
        self.source_choice = choice
        try:
            if choice.file is not None:
                player = FilePlayer(choice.file, self.ring, output_device=self.output_device, loop=choice.loop)
                self._close_input()
                self.player = player
                player.play()
                if player.error:
                    self.message(player.error)
            else:
                if self.mic is not None:
                    self.mic.switch(choice.device)
                else:
                    self._close_input()
                    self.mic = MicInput(self.ring, choice.device)
                    self.mic.start()
                if self.mic.error:
                    self.message(self.mic.error)
        except SoundvjError as e:
            self.message(str(e))

    def _close_input(self) -> None:
        for thing, close in ((self.player, "close"), (self.mic, "stop")):
            if thing is not None:
                try:
                    getattr(thing, close)()
                except Exception as e:  # noqa: BLE001 - a dying device must not stop the show
                    self.message(f"input: {e}")
        self.player = self.mic = None

    def input_state(self) -> tuple[str, str | None]:
        """(state, error) of the current input."""
        thing = self.player or self.mic
        if thing is None:
            return "stopped", None
        return thing.state, thing.error

    # -- parameters and presets -------------------------------------------------------------------

    def set_params(self, params: Params, fade_seconds: float = 0.0, name: str = "") -> None:
        """Make `params` the target, crossfading over `fade_seconds`; `name` labels the look."""
        with self._params_lock:
            self.target = params
            self.worker.set_params(params, fade_seconds, name)

    def set_param(self, name: str, value: object) -> Params:
        """Change one parameter at once (no fade); returns the new target."""
        return self.change_params({name: value})

    def change_params(self, changes: Mapping[str, Value]) -> Params:
        """Set the parameters in `changes` at once on top of the current target (validated by the
        registry); a running preset crossfade goes on for the others. Returns the new target."""
        with self._params_lock:
            params = self.target.replace(**changes)
            self.target = params
            self.worker.set_params(params, only=changes.keys())
        return params

    def edit_modulations(self, change: Callable[[ModulationMatrix], ModulationMatrix]) -> ModulationMatrix:
        """Replace the matrix by `change(current matrix)` under the session's lock, so edits from the
        window, OSC and MIDI never lose one another. `change` may raise (a refused value): then
        nothing changes. Returns the new matrix."""
        with self._params_lock:
            matrix = change(self.modulations)
            self.set_modulations(matrix)
        return matrix

    def set_modulation_depth(self, target: str, source: str, depth: float) -> ModulationMatrix:
        """Set the depth of `target` modulated by `source` in the current matrix: the first such
        modulation changes, a new one is added, depth 0 removes it. Returns the new matrix."""

        def change(matrix: ModulationMatrix) -> ModulationMatrix:
            index = next((i for i, m in enumerate(matrix) if m.target == target and m.source == source), None)
            if index is None:
                return matrix.added(Modulation(target, source, depth)) if depth != 0 else matrix
            if depth == 0:
                return matrix.removed(index)
            return matrix.replaced(index, depth=depth)

        return self.edit_modulations(change)

    def midi_input(self) -> MidiInput:
        """The session's MIDI input, created on first use with no port open, so the window's port
        picker works whether or not `--midi-port` was given. Without a MIDI system it is there in
        state "unavailable" and says why; it never raises."""
        with self._input_lock:
            if self.midi_in is None:
                settings = self.control_config.midi or MidiSettings()
                self.midi_in = MidiInput(self.control.midi, settings, reporter=self.control.reporter)
                self.midi_in.start()
            return self.midi_in

    def open_midi(self, port: str) -> bool:
        """Listen to MIDI input port `port` (see `midi_input`); True if it is open now."""
        return self.midi_input().open(port)

    def set_modulations(self, matrix: ModulationMatrix) -> None:
        """Use `matrix` from the next frame on."""
        self.modulations = matrix
        self.worker.set_modulations(matrix)

    def tap(self, at: float | None = None) -> None:
        """A tempo tap (time.monotonic(); default now) for the render thread's beat clock; while in an
        Ableton Link session the tap leads the session, and its tempo comes back with Link's next reading."""
        link = self.link
        if link is not None and link.joined:
            link.tap(at)
        else:
            self.worker.tap(at)

    def toggle_freeze(self) -> bool:
        """Freeze or unfreeze the picture (sound and recording go on); returns True if frozen now."""
        frozen = self.worker.frozen
        if frozen.is_set():
            frozen.clear()
            return False
        frozen.set()
        return True

    def toggle_recording(self) -> SessionRecorder | None:
        """Stop the running recording, or start one to a new timestamped file in `record_folder`."""
        rec = self.recorder
        if rec is not None and rec.active:
            self.stop_recording(wait=False)
            return rec
        return self.start_recording(default_recording_path(self.record_folder))

    def reload_presets(self) -> list[str]:
        """Re-read the preset folders. Returns the problems (a broken file is skipped, not fatal)."""
        found, problems, seen = [], [], set()
        for folder in preset_dirs():
            for path in preset_files(folder):
                if path.stem in seen:
                    continue
                seen.add(path.stem)
                try:
                    found.append(load_preset(path))
                except SoundvjError as e:
                    problems.append(str(e))
        self.presets = sorted(found, key=lambda p: p.name.lower())
        for p in problems:
            self.message(p)
        return problems

    def apply_preset(self, preset: Preset | str, fade_seconds: float | None = None) -> Params | None:
        """Crossfade to a preset (an object, a name or a path) over `fade_seconds` (default: the
        session's `fade_seconds`). The preset sets its own keys on top of the current target, so what
        controls set elsewhere stays; its modulations (if it has any) replace the matrix. A broken
        file gives a message and the current look stays."""
        if fade_seconds is None:
            fade_seconds = self.fade_seconds
        try:
            if not isinstance(preset, Preset):
                preset = load_preset(preset)
            with self._params_lock:
                params = preset.apply(self.target)
                self.look = preset.name
                self.target = params
                self.worker.set_params(params, fade_seconds, preset.name)
                if preset.modulations is not None:
                    self.set_modulations(ModulationMatrix(preset.modulations))
        except SoundvjError as e:
            self.message(str(e))
            return None
        return params

    def preset_by_number(self, number: int) -> Preset | None:
        """Presets in list order, numbered from 1 (keys 1-9)."""
        return self.presets[number - 1] if 1 <= number <= len(self.presets) else None

    # -- models -----------------------------------------------------------------------------------

    def load_model(self, path: str | None, device: str | None = None,
                   done: Callable[[bool], None] | None = None) -> None:
        """Load another model off the render thread; the current one plays until it is ready."""
        def finished(model: SoundvjModel | None, error: str | None) -> None:
            if model is None:
                self.message(error or f"{path}: could not load")
            else:
                self.model = model
                self.worker.swap_model(model)
                self.message(f"model: {model.source}")
            if done:
                done(model is not None)

        load_model_async(path, device or str(self.model.device), finished)

    # -- recording --------------------------------------------------------------------------------

    def start_recording(self, path: str | os.PathLike, max_seconds: float | None = None,
                        on_done: Callable[[SessionRecorder], None] | None = None,
                        crf: int = 20) -> SessionRecorder | None:
        """Record what is shown and heard to `path` (returns at once); the running recorder if one runs,
        None with a message if the path is unusable."""
        if self.recorder is not None and self.recorder.active:
            return self.recorder
        res = self.model.generator.img_resolution
        def finished(rec: SessionRecorder) -> None:
            self.worker.remove_sink(rec)
            if rec.error:
                self.message(rec.error)
            else:
                self.message(f"recorded {rec.path} ({rec.seconds:.1f} s)")
            if on_done:
                on_done(rec)

        try:
            recorder = SessionRecorder(path, self.target.fps, res, res, self.sample_rate,
                                       max_seconds=max_seconds, on_done=finished, crf=crf)
        except SoundvjError as e:
            self.message(str(e))
            return None
        self.recorder = recorder
        if self.keep_set_logs and not (self.set_logger is not None and self.set_logger.active):
            # Added before the recorder: the set log starts no later than the recording.
            self._set_log_of_recording = self.start_set_log(set_log_path_beside(recorder.path),
                                                            max_seconds=max_seconds) is not None
        self.worker.add_sink(recorder)
        return recorder

    def stop_recording(self, wait: bool = False) -> None:
        """Finish the recording; `wait` until the file is closed."""
        rec = self.recorder
        if rec is not None:
            rec.stop(wait=wait)
        if self._set_log_of_recording:
            self._set_log_of_recording = False
            self.stop_set_log(wait=wait)

    # -- network outputs --------------------------------------------------------------------------

    def start_outputs(self) -> None:
        """Start the stream and NDI that `output_config` asks for (each returns at once)."""
        config = self.output_config
        if config.stream is not None:
            self.start_stream(config.stream)
        if config.ndi is not None:
            self.start_ndi(config.ndi)

    def start_stream(self, url: str) -> StreamSender | None:
        """Stream to `url` at the set's frame rate, with `output_config`'s size and sound, replacing a
        running stream (returns at once; connecting runs on the stream's thread). A bad URL or no
        ffmpeg: a message and None. A failure later: a message, and `reconnect_stream` tries again."""
        self.stop_stream()
        self.stream = self._add_output(lambda fps, size, sound: StreamSender(
            url, fps, size, sample_rate=sound, on_message=self.message))
        return self.stream.start() if self.stream is not None else None

    def stop_stream(self, wait: bool = True) -> None:
        """End the stream (its ffmpeg flushes and closes the connection); `wait=False` returns at once."""
        sender, self.stream = self.stream, None
        self._remove_output(sender, wait)

    def reconnect_stream(self) -> None:
        """Close the stream's connection and open it again, on the stream's thread (returns at once)."""
        if self.stream is not None:
            self.stream.reconnect()

    def start_ndi(self, name: str) -> NdiSender | None:
        """Send as the NDI source `name`, with `output_config`'s size and sound, replacing a running one
        (returns at once). Without cyndilib: a message saying how to install it, and None."""
        self.stop_ndi(wait=False)
        self.ndi = self._add_output(lambda fps, size, sound: NdiSender(
            name, fps, size, sample_rate=sound, on_message=self.message))
        return self.ndi.start() if self.ndi is not None else None

    def stop_ndi(self, wait: bool = True) -> None:
        """Stop sending as an NDI source; `wait=False` returns at once."""
        sender, self.ndi = self.ndi, None
        self._remove_output(sender, wait)

    def _add_output(self, make: Callable[[float, tuple[int, int], int | None], _Output]) -> _Output | None:
        """A paced output made by `make(fps, size, sample rate or None)` from `output_config`, fed by the
        render worker; a refusal (bad URL, no ffmpeg, no cyndilib) is a message and None."""
        config = self.output_config
        try:
            sender = make(self.target.fps, config.size, self.sample_rate if config.sound else None)
        except SoundvjError as e:
            self.message(str(e))
            return None
        self.worker.add_sink(sender)
        return sender

    def _remove_output(self, sender: PacedOutput | None, wait: bool) -> None:
        if sender is not None:
            self.worker.remove_sink(sender)
            sender.stop(wait=wait)

    # -- set log ----------------------------------------------------------------------------------

    def start_set_log(self, path: str | os.PathLike, codec: str = "flac", max_seconds: float | None = None,
                      on_done: Callable[[SetLogger], None] | None = None) -> SetLogger | None:
        """Keep a set log at `path` from the next frame on: the sound heard and every change, for
        `soundvj replay` (returns at once). The running logger if one runs; None with a message if
        the path is unusable."""
        if self.set_logger is not None and self.set_logger.active:
            return self.set_logger

        def finished(log: SetLogger) -> None:
            self.worker.remove_sink(log)
            if log.error:
                self.message(log.error)
            else:
                self.message(f"set log {log.path} ({log.seconds:.1f} s, {log.events_logged} changes)")
            if on_done:
                on_done(log)

        try:
            logger = SetLogger(path, self.sample_rate, codec, max_seconds=max_seconds, on_done=finished,
                               dropped=lambda: self.worker.deadlines_dropped)
        except SoundvjError as e:
            self.message(str(e))
            return None
        self.set_logger = logger
        self.worker.add_sink(logger)
        return logger

    def stop_set_log(self, wait: bool = False) -> None:
        """Finish the set log; `wait` until the file is written."""
        log = self.set_logger
        if log is not None:
            log.stop(wait=wait)
