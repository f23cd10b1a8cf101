"""The control window: picture, scopes, parameter / preset / input / record / modulation panels, status
bar, keys, and the rig: MIDI learn from the parameter panel, the MIDI port picker.

The UI thread only draws and edits. A timer polls the render worker's latest-value slots (frame, status)
and the session's input, recorder, modulation and MIDI learn states; nothing here calls a model or
waits on another thread.

The side panels sit in one scroll area and the window opens no larger than the screen, so on a
1280x800 projector or laptop the status bar (fps, latency, dropped, tempo) stays in view.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from PyQt6 import QtCore, QtGui, QtWidgets

from core.errors import SoundvjError
from core.params import Params, spec
from core.presets import load_preset, preset_dirs, save_preset
from visualizer.control.bindings import Binding, ControlTarget
from visualizer.frame_view import DEFAULT_VIEW_FILTER, FrameView
from visualizer.midi_menu import MidiPortMenu, midi_status
from visualizer.modulation_panel import ModulationPanel
from visualizer.output_menu import OutputActions
from visualizer.output_window import OutputWindow
from visualizer.param_panel import ParamPanel
from visualizer.portaudio import AudioDevice, list_input_devices, rescan_devices
from visualizer.recorder import default_recording_path
from visualizer.render_worker import DEFAULT_FADE_SECONDS
from visualizer.scopes import LevelMeter, MelScope
from visualizer.session import InputChoice, LiveSession

POLL_MS = 15
PREFERRED_SIZE = (1180, 760)  # opened at this size, or the screen's free area if that is smaller
WINDOW_FRAME_PX = (16, 40)  # what a window manager's border and title bar take, roughly
SIDE_PANEL_MIN_WIDTH = 400
ALPHA_STEP = 0.05
NOISE_STEP = 0.1

KEYS_HELP = """1-9      crossfade to preset 1-9 (in the preset list's order)
Space    freeze / unfreeze the picture (sound and recording go on)
R        start / stop recording
T        tap tempo (each press is a beat)
F        output window fullscreen on the chosen screen / back
Esc      cancel MIDI learn, else leave fullscreen
Right-click a parameter: Learn MIDI / OSC (the next control that moves binds), Forget binding
Up/Down  alpha +/- 0.05
Right/Left  noise +/- 0.1
?        this list"""


class MainWindow(QtWidgets.QMainWindow):
    """The control window of a `LiveSession`: the picture, scopes and panels, the keys, and the output window it
    opens; `closeEvent` stops the session (see `delete_window_now` for destroying it)."""
    message = QtCore.pyqtSignal(str)  # from any thread; shown in the status bar and the message line
    learned = QtCore.pyqtSignal(object)  # a Binding MIDI learn made, from the control thread that made it

    def __init__(self, session: LiveSession, use_gl: bool = True, record_folder: str | None = None,
                 view_filter: str = DEFAULT_VIEW_FILTER) -> None:
        super().__init__()
        self.session = session
        self.use_gl = use_gl
        self.view_filter = view_filter
        self.record_folder = record_folder
        self.setWindowTitle("soundvj live")
        self.resize(*self._opening_size())
        self._frame_seq = 0
        self._frames_drawn = 0
        self._last_status = None
        self._output: OutputWindow | None = None
        self._output_screen = 0
        self._watched: set[str] = set()
        self.message.connect(self._show_message, QtCore.Qt.ConnectionType.QueuedConnection)
        self.learned.connect(self._learned, QtCore.Qt.ConnectionType.QueuedConnection)
        self._on_learned = self.learned.emit  # called on the MIDI / OSC thread: only a queued signal
        session.control.on_learned = self._on_learned

        central = QtWidgets.QWidget()
        self.setCentralWidget(central)
        main = QtWidgets.QHBoxLayout(central)
        left = QtWidgets.QVBoxLayout()
        main.addLayout(left, 3)
        self.view = FrameView(central, use_gl=use_gl, view_filter=view_filter)
        left.addWidget(self.view, 1)
        scopes = QtWidgets.QHBoxLayout()
        self.mel_scope = MelScope()
        self.level_meter = LevelMeter()
        scopes.addWidget(self.mel_scope, 1)
        scopes.addWidget(self.level_meter)
        left.addLayout(scopes)
        self.message_line = QtWidgets.QLabel("")
        self.message_line.setWordWrap(True)
        self.message_line.setStyleSheet("color: #c60")
        left.addWidget(self.message_line)

        side = QtWidgets.QWidget()
        side_layout = QtWidgets.QVBoxLayout(side)
        side_layout.addWidget(self._build_input_panel())
        side_layout.addWidget(self._build_preset_panel())
        side_layout.addWidget(self._build_record_panel())
        side_layout.addWidget(self._build_modulation_panel())
        self.param_panel = ParamPanel(session.target)
        self.param_panel.changed.connect(self._params_edited)
        self.param_panel.context_menu_requested.connect(self._param_context_menu)
        self.param_menu: QtWidgets.QMenu | None = None  # the last parameter context menu (tests trigger it)
        side_layout.addWidget(self.param_panel)
        # One scroll area for all side panels: the window's height no longer depends on how many there are.
        self.side_scroll = QtWidgets.QScrollArea()
        self.side_scroll.setWidgetResizable(True)
        self.side_scroll.setWidget(side)
        self.side_scroll.setMinimumWidth(SIDE_PANEL_MIN_WIDTH)
        main.addWidget(self.side_scroll, 2)

        self.status_fps = QtWidgets.QLabel()
        self.status_latency = QtWidgets.QLabel()
        self.status_dropped = QtWidgets.QLabel()
        self.status_input = QtWidgets.QLabel()
        self.status_model = QtWidgets.QLabel()
        self.status_tempo = QtWidgets.QLabel()
        self.status_tempo.setToolTip("Tempo (who set it: tap, audio, external, default) and the beat phase; T taps")
        self.status_midi = QtWidgets.QLabel()
        self.status_outputs = QtWidgets.QLabel()
        self.status_outputs.setToolTip("The network outputs: frames sent at the set's rate, repeated when the render "
                                       "dipped, dropped when the network or encoder was slow")
        for w in (self.status_fps, self.status_latency, self.status_dropped, self.status_tempo, self.status_midi,
                  self.status_outputs, self.status_input, self.status_model):
            self.statusBar().addPermanentWidget(w)
        self._build_menus()
        self._build_keys()
        self._watch_presets()

        self._timer = QtCore.QTimer(self)
        self._timer.timeout.connect(self.poll)
        self._timer.start(POLL_MS)

    @property
    def frames_drawn(self) -> int:
        """Frames this window has drawn so far (each new frame the poll found in the worker's slot)."""
        return self._frames_drawn

    def _opening_size(self) -> tuple[int, int]:
        """`PREFERRED_SIZE`, shrunk to the primary screen's free area minus a window frame."""
        width, height = PREFERRED_SIZE
        screen = QtGui.QGuiApplication.primaryScreen()
        if screen is not None:
            free = screen.availableGeometry()
            width = min(width, free.width() - WINDOW_FRAME_PX[0])
            height = min(height, free.height() - WINDOW_FRAME_PX[1])
        return max(width, 320), max(height, 240)

    # -- panels -----------------------------------------------------------------------------------

    def _build_input_panel(self) -> QtWidgets.QGroupBox:
        box = QtWidgets.QGroupBox("Input")
        grid = QtWidgets.QGridLayout(box)
        self.device_combo = QtWidgets.QComboBox()
        self.device_combo.setToolTip("Microphone / line-in (system default first; host API in brackets)")
        self.device_combo.activated.connect(self._device_chosen)
        rescan = QtWidgets.QPushButton("Rescan")
        rescan.setToolTip("Re-initialise PortAudio and list the input devices again")
        rescan.clicked.connect(self.rescan_devices)
        grid.addWidget(QtWidgets.QLabel("Device"), 0, 0)
        grid.addWidget(self.device_combo, 0, 1)
        grid.addWidget(rescan, 0, 2)
        open_file = QtWidgets.QPushButton("Open file…")
        open_file.clicked.connect(self._open_file)
        self.play_button = QtWidgets.QPushButton("Pause")
        self.play_button.clicked.connect(self._toggle_play)
        self.loop_box = QtWidgets.QCheckBox("Loop")
        self.loop_box.toggled.connect(self._loop_toggled)
        grid.addWidget(open_file, 1, 0)
        grid.addWidget(self.play_button, 1, 1)
        grid.addWidget(self.loop_box, 1, 2)
        self.seek_slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.seek_slider.setRange(0, 1000)
        self.seek_slider.sliderReleased.connect(self._seek)
        self.position_label = QtWidgets.QLabel("")
        grid.addWidget(self.seek_slider, 2, 0, 1, 2)
        grid.addWidget(self.position_label, 2, 2)
        self.input_state_label = QtWidgets.QLabel("")
        self.input_state_label.setWordWrap(True)
        grid.addWidget(self.input_state_label, 3, 0, 1, 3)
        self._fill_devices(self._list_devices(rescan=False))
        return box

    def _build_preset_panel(self) -> QtWidgets.QGroupBox:
        box = QtWidgets.QGroupBox("Presets")
        layout = QtWidgets.QVBoxLayout(box)
        self.preset_list = QtWidgets.QListWidget()
        self.preset_list.setMaximumHeight(120)
        self.preset_list.itemActivated.connect(lambda item: self.apply_preset_number(self.preset_list.row(item) + 1))
        layout.addWidget(self.preset_list)
        row = QtWidgets.QHBoxLayout()
        load = QtWidgets.QPushButton("Load…")
        load.clicked.connect(self._load_preset_file)
        save = QtWidgets.QPushButton("Save…")
        save.clicked.connect(self._save_preset_file)
        self.fade_box = QtWidgets.QDoubleSpinBox()
        self.fade_box.setRange(0.0, 30.0)
        self.fade_box.setValue(DEFAULT_FADE_SECONDS)
        self.fade_box.setSuffix(" s fade")
        self.fade_box.setToolTip("Crossfade time when a preset is picked")
        # One fade time for the window, MIDI and OSC: the box writes the session's, poll() shows it.
        self.fade_box.valueChanged.connect(self._fade_edited)
        row.addWidget(load)
        row.addWidget(save)
        row.addWidget(self.fade_box)
        layout.addLayout(row)
        self._fill_presets()
        return box

    def _build_record_panel(self) -> QtWidgets.QGroupBox:
        box = QtWidgets.QGroupBox("Record")
        row = QtWidgets.QHBoxLayout(box)
        self.record_button = QtWidgets.QPushButton("● Record")
        self.record_button.setCheckable(True)
        self.record_button.clicked.connect(self.toggle_recording)
        self.set_log_box = QtWidgets.QCheckBox("Set log")
        self.set_log_box.setToolTip("Also keep a set log beside the recording (NAME.soundvjset): the sound and "
                                    "every change, so `soundvj replay` can render the set again, every frame")
        self.set_log_box.setChecked(self.session.keep_set_logs)
        self.set_log_box.toggled.connect(self._set_log_toggled)
        self.record_label = QtWidgets.QLabel("not recording")
        row.addWidget(self.record_button)
        row.addWidget(self.set_log_box)
        row.addWidget(self.record_label, 1)
        return box

    def _build_modulation_panel(self) -> QtWidgets.QGroupBox:
        box = QtWidgets.QGroupBox("Modulation")
        box.setToolTip("parameter = base + sum of depth x source, clamped to the parameter's range")
        layout = QtWidgets.QVBoxLayout(box)
        self.modulation_panel = ModulationPanel(self.session)
        layout.addWidget(self.modulation_panel)
        return box

    def _build_menus(self) -> None:
        view_menu = self.menuBar().addMenu("&Output")
        self.screen_menu = view_menu.addMenu("Screen")
        group = QtGui.QActionGroup(self)
        for i, screen in enumerate(QtGui.QGuiApplication.screens()):
            g = screen.geometry()
            action = self.screen_menu.addAction(f"{i}: {screen.name()} ({g.width()}x{g.height()})")
            action.setCheckable(True)
            action.setChecked(i == 0)
            action.triggered.connect(lambda _=False, i=i: self.set_output_screen(i))
            group.addAction(action)
        view_menu.addAction("Fullscreen output (F)", self.toggle_output_fullscreen)
        self.output_actions = OutputActions(view_menu, self.session, self._show_message, self.set_view_filter, self,
                                            self.view_filter)
        model_menu = self.menuBar().addMenu("&Model")
        model_menu.addAction("Open model…", self._open_model)
        model_menu.addAction("Embedded default", lambda: self.session.load_model(None))
        controls_menu = self.menuBar().addMenu("&Controls")
        self.midi_menu = MidiPortMenu(self.session, self._show_message, self)
        controls_menu.addMenu(self.midi_menu)
        controls_menu.addAction("Cancel MIDI learn (Esc)", self.cancel_learn)
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction("Keys (?)", self.show_keys)

    def _build_keys(self) -> None:
        """Performance keys work in both windows (an application-wide event filter), except while a
        text or number field has the focus, where digits and arrows edit the field."""
        k = QtCore.Qt.Key
        self._keys = {
            **{getattr(k, f"Key_{n}"): (lambda n=n: self.apply_preset_number(n)) for n in range(1, 10)},
            k.Key_Space: self.toggle_freeze,
            k.Key_R: self.toggle_recording,
            k.Key_T: self.tap_tempo,
            k.Key_F: self.toggle_output_fullscreen,
            k.Key_Escape: self.escape,
            k.Key_Up: lambda: self.nudge("alpha", ALPHA_STEP),
            k.Key_Down: lambda: self.nudge("alpha", -ALPHA_STEP),
            k.Key_Right: lambda: self.nudge("noise", NOISE_STEP),
            k.Key_Left: lambda: self.nudge("noise", -NOISE_STEP),
            k.Key_Question: self.show_keys,
        }
        QtWidgets.QApplication.instance().installEventFilter(self)

    def eventFilter(self, obj: QtCore.QObject, event: QtCore.QEvent) -> bool:  # noqa: N802 - Qt's name
        if event.type() != QtCore.QEvent.Type.KeyPress or event.isAutoRepeat():
            return False
        if not isinstance(obj, QtWidgets.QWidget):
            return False
        action = self._keys.get(event.key())
        if not self._owns(obj) or self._typing_in(obj):
            return False
        if action is None:  # a key the mapping file binds (a tap on B, a preset on a letter, ...)
            name = QtGui.QKeySequence(event.key()).toString()
            return bool(name) and self.session.control.key(name)
        action()
        return True

    def _owns(self, widget: QtWidgets.QWidget) -> bool:
        top = widget.window()
        return top is self or (self._output is not None and top is self._output)

    @staticmethod
    def _typing_in(widget: QtWidgets.QWidget) -> bool:
        editing = (QtWidgets.QAbstractSpinBox, QtWidgets.QLineEdit, QtWidgets.QTextEdit, QtWidgets.QAbstractItemView)
        return isinstance(widget, editing) or isinstance(widget.parent(), QtWidgets.QAbstractSpinBox)

    # -- MIDI learn -------------------------------------------------------------------------------

    def _param_context_menu(self, name: str, where: QtCore.QPoint) -> None:
        """A right-click on parameter `name`: cancels a learn in progress, else shows the learn menu."""
        if self.session.control.learning is not None:
            self.cancel_learn()
            return
        menu = QtWidgets.QMenu(self)
        menu.addAction(f"Learn MIDI / OSC for {name}", lambda: self.learn_param(name))
        target = ControlTarget("param", param=name)
        bound = [b for b in self.session.control.bindings if b.target == target]
        if bound:
            sources = ", ".join(b.source.describe() for b in bound)
            menu.addAction(f"Forget binding ({sources})", lambda: self.forget_param(name))
        if self.param_menu is not None:
            self.param_menu.deleteLater()
        self.param_menu = menu
        menu.popup(where)  # not exec(): the poll (frames, status) goes on while the menu is open

    def learn_param(self, name: str) -> None:
        """Arm MIDI learn for parameter `name`: its control is marked until a CC, note or OSC fader
        binds (Esc or a second right-click cancels)."""
        self.session.control.learn(ControlTarget("param", param=name))
        self.param_panel.set_learning(name)
        self.side_scroll.ensureWidgetVisible(self.param_panel.controls[name])
        # Learn's lines go through the queued signal, as the dispatcher's own lines do, so they show in
        # the order they were said (this one after the dispatcher's "learn: ...", saying how to cancel).
        self.message.emit(f"learn: move a MIDI control (or send OSC) for {spec(name).label} ({name}); Esc cancels")

    def cancel_learn(self) -> None:
        """Disarm MIDI learn (Esc, a second right-click, the Controls menu)."""
        if self.session.control.learning is not None:
            self.session.control.cancel_learn()
            self.message.emit("learn cancelled")
        self.param_panel.set_learning(None)

    def forget_param(self, name: str) -> None:
        """Remove every binding to parameter `name` (saved to the mapping file)."""
        removed = self.session.control.unbind(ControlTarget("param", param=name))
        self.message.emit(f"forgot {removed} binding{'s' if removed != 1 else ''} of {name}")

    def _learned(self, binding: Binding) -> None:
        self.param_panel.set_learning(None)
        self._show_message(f"learned: {binding.source.describe()} now moves {binding.target.describe()}")

    def escape(self) -> None:
        """Esc: cancel MIDI learn if it is armed, else leave fullscreen."""
        if self.session.control.learning is not None:
            self.cancel_learn()
        else:
            self.leave_fullscreen()

    # -- actions ----------------------------------------------------------------------------------

    def _params_edited(self, params: Params) -> None:
        self.session.set_params(params)

    def _fade_edited(self, seconds: float) -> None:
        self.session.fade_seconds = float(seconds)

    def nudge(self, name: str, step: float) -> None:
        """Step parameter `name` by `step`, clamped to its range (the arrow keys)."""
        s = spec(name)
        value = min(s.maximum, max(s.minimum, getattr(self.session.target, name) + step))
        params = self.session.set_param(name, round(value, 6))
        self.param_panel.set_params(params)

    def apply_preset_number(self, number: int) -> None:
        preset = self.session.preset_by_number(number)
        if preset is None:
            self._show_message(f"no preset {number} (there are {len(self.session.presets)})")
            return
        self._apply_preset(preset)

    def _apply_preset(self, preset) -> None:
        params = self.session.apply_preset(preset, self.fade_box.value())
        if params is not None:
            self.param_panel.set_params(params)
            for i in range(self.preset_list.count()):
                item = self.preset_list.item(i)
                item.setSelected(item.data(QtCore.Qt.ItemDataRole.UserRole) == preset.name)

    def tap_tempo(self) -> None:
        """A tempo tap for the beat clock (key T); the status bar shows the tempo it gives."""
        self.session.tap()

    def toggle_freeze(self) -> None:
        frozen = self.session.worker.frozen
        if frozen.is_set():
            frozen.clear()
        else:
            frozen.set()

    def toggle_recording(self) -> None:
        """Start a recording to a new timestamped file in the record folder, or stop the running one."""
        rec = self.session.recorder
        if rec is not None and rec.active:
            self.session.stop_recording(wait=False)
        else:
            path = default_recording_path(self.record_folder)
            self.session.start_recording(path)
        self._update_record_panel()

    def _set_log_toggled(self, on: bool) -> None:
        """The Set log box: whether the next recording (the button, R, a control) keeps a set log too."""
        self.session.keep_set_logs = on

    def set_output_screen(self, index: int) -> None:
        self._output_screen = index
        if self._output is not None and self._output.isVisible():
            self._output.show_on_screen(index, fullscreen=self._output.isFullScreen())

    def output_window(self) -> OutputWindow:
        """The output window, made on first use."""
        if self._output is None:
            self._output = OutputWindow(use_gl=self.use_gl, view_filter=self.view_filter)
        return self._output

    def set_view_filter(self, name: str) -> None:
        """Scale the picture in this window and the output window with GPU filter `name` (Output menu)."""
        self.view_filter = name
        self.view.set_view_filter(name)
        if self._output is not None:
            self._output.view.set_view_filter(name)

    def toggle_output_fullscreen(self) -> None:
        out = self.output_window()
        if out.isVisible() and out.isFullScreen():
            out.leave_fullscreen()
        else:
            out.show_on_screen(self._output_screen, fullscreen=True)

    def show_output(self, screen: int, fullscreen: bool = True) -> None:
        self._output_screen = screen
        self.output_window().show_on_screen(screen, fullscreen=fullscreen)

    def leave_fullscreen(self) -> None:
        if self._output is not None:
            self._output.leave_fullscreen()
        if self.isFullScreen():
            self.showNormal()

    def show_keys(self) -> None:
        box = QtWidgets.QMessageBox(self)
        box.setWindowTitle("soundvj keys")
        box.setText(f"<pre>{KEYS_HELP}</pre>")
        box.setModal(False)
        box.show()

    # -- input ------------------------------------------------------------------------------------

    def _list_devices(self, rescan: bool) -> list[AudioDevice]:
        try:
            return rescan_devices() if rescan else list_input_devices()
        except Exception as e:  # noqa: BLE001 - no PortAudio devices at all is a state, not a crash
            self._show_message(f"audio devices: {e}")
            return []

    def _fill_devices(self, devices: list[AudioDevice]) -> None:
        current = self.session.source_choice.device
        self.device_combo.clear()
        for d in devices:
            label = f"{d.name}  [{d.host_api}]" + ("  (default)" if d.is_default else "")
            self.device_combo.addItem(label, d.name)
        if not devices:
            self.device_combo.addItem("no input device", None)
        if current is not None:
            i = self.device_combo.findData(current)
            if i >= 0:
                self.device_combo.setCurrentIndex(i)

    def rescan_devices(self) -> None:
        """Re-initialise PortAudio, refill the device list, and reopen the chosen device if it came back."""
        devices = self._list_devices(rescan=True)
        self._fill_devices(devices)
        wanted = self.session.source_choice
        names = [d.name for d in devices]
        if wanted.file is None and wanted.device is not None and wanted.device in names:
            state, _ = self.session.input_state()
            if state != "running":  # found again by name after the device came back
                self.session.use_source(InputChoice(device=wanted.device))
        self._show_message(f"{len(devices)} input device(s)")

    def _device_chosen(self, index: int) -> None:
        name = self.device_combo.itemData(index)
        if name is not None:
            self.session.use_source(InputChoice(device=name), background=True)

    def _open_file(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Play an audio file")
        if path:
            self.session.use_source(InputChoice(file=path, loop=self.loop_box.isChecked()), background=True)

    def _toggle_play(self) -> None:
        player = self.session.player
        if player is None:
            return
        if player.state == "playing":
            player.pause()
        else:
            player.play()

    def _loop_toggled(self, on: bool) -> None:
        if self.session.player is not None:
            self.session.player.loop = on

    def _seek(self) -> None:
        player = self.session.player
        if player is not None and player.duration > 0:
            player.seek(self.seek_slider.value() / 1000 * player.duration)

    # -- presets ----------------------------------------------------------------------------------

    def _fill_presets(self) -> None:
        self.preset_list.clear()
        for i, p in enumerate(self.session.presets, start=1):
            label = f"{i}  {p.name}" if i <= 9 else f"   {p.name}"
            item = QtWidgets.QListWidgetItem(label)
            item.setData(QtCore.Qt.ItemDataRole.UserRole, p.name)
            item.setToolTip(p.description + "\n" + ", ".join(f"{k}={v}" for k, v in p.values.items()))
            self.preset_list.addItem(item)

    def _watch_presets(self) -> None:
        self._watcher = QtCore.QFileSystemWatcher(self)
        self._watcher.directoryChanged.connect(self._presets_changed_on_disk)
        self._watcher.fileChanged.connect(self._presets_changed_on_disk)
        self._rewatch()

    def _rewatch(self) -> None:
        paths = [str(d) for d in preset_dirs() if d.is_dir()]
        paths += [str(p.path) for p in self.session.presets if p.path is not None]
        new = [p for p in paths if p not in self._watched]
        if new:
            self._watcher.addPaths(new)
            self._watched.update(new)

    def _presets_changed_on_disk(self, _path: str) -> None:
        self.session.reload_presets()  # broken files come back as messages; the current look stays
        self._fill_presets()
        self._watched = set(self._watcher.files()) | set(self._watcher.directories())
        self._rewatch()
        active = next((p for p in self.session.presets if p.name == self.session.look), None)
        if active is not None:
            params = active.apply(self.session.target)
            if params != self.session.target:
                self._apply_preset(active)
                self._show_message(f"preset {active.name} reloaded from disk")

    def _load_preset_file(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Load preset", "", "Presets (*.yaml *.yml)")
        if path:
            try:
                self._apply_preset(load_preset(path))
            except SoundvjError as e:
                self._show_message(str(e))

    def _save_preset_file(self) -> None:
        folder = str(preset_dirs()[0]) if preset_dirs() else ""
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save preset", folder, "Presets (*.yaml)")
        if path:
            try:
                saved = save_preset(Path(path).with_suffix(".yaml"), self.session.target)
                self._show_message(f"saved {saved}")
            except SoundvjError as e:
                self._show_message(str(e))

    def _open_model(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open model", "", "Models (*.pkl *.safetensors)")
        if path:
            self._show_message(f"loading {path} (the current model plays until it is ready)")
            self.session.load_model(path)

    # -- polling ----------------------------------------------------------------------------------

    def poll(self) -> None:
        """Draw the newest frame and refresh the scopes, status bar, input and record panels (the timer's slot)."""
        worker = self.session.worker
        frame, self._frame_seq = worker.frames.take_new(self._frame_seq)
        if frame is not None:
            self.view.show_frame(frame.image)
            if self._output is not None and self._output.isVisible():
                self._output.view.show_frame(frame.image)
            self.mel_scope.show_window(frame.mel)
            self._frames_drawn += 1
        status, _ = worker.status.peek()
        if status is not None and status is not self._last_status:
            self._last_status = status
            self.level_meter.show_level(status.level_peak, status.level_rms, status.clipped, time.monotonic())
            self.status_fps.setText(f"{status.fps:5.1f} fps" + (" (frozen)" if status.frozen else ""))
            self.status_latency.setText(f"latency {status.latency_ms_median:.0f} / p95 {status.latency_ms_p95:.0f} ms")
            self.status_dropped.setText(f"dropped {status.dropped}")
            self.status_tempo.setText(tempo_text(status.bpm, status.beat_phase, status.tempo_source))
            self.status_model.setText(f"model: {status.model}" + (f" | look: {status.look}" if status.look else ""))
        self._show_remote_changes()
        self.modulation_panel.refresh()
        self._update_learn_and_midi()
        self._update_input_state()
        self._update_record_panel()
        self._update_outputs()

    def _update_outputs(self) -> None:
        text = self.output_actions.status_text()
        if self.status_outputs.text() != text:
            self.status_outputs.setText(text)
        self.output_actions.refresh()

    def _show_remote_changes(self) -> None:
        """Show what MIDI, OSC or a mapped key changed: the sliders follow the session's target and
        the fade box its fade time, so the next slider move starts from the values now playing
        instead of sending stale ones back."""
        target = self.session.target
        if target is not self.param_panel.params():
            self.param_panel.set_params(target)
        if abs(self.session.fade_seconds - self.fade_box.value()) > 1e-9 and not self.fade_box.hasFocus():
            with QtCore.QSignalBlocker(self.fade_box):
                self.fade_box.setValue(self.session.fade_seconds)

    def _update_learn_and_midi(self) -> None:
        """Mark the control MIDI learn waits for (whoever armed it) and show the MIDI input's state."""
        learning = self.session.control.learning
        name = learning.param if learning is not None and learning.kind == "param" else None
        if name != self.param_panel.learning():
            self.param_panel.set_learning(name)
        text, tip = midi_status(self.session)
        if self.status_midi.text() != text:
            self.status_midi.setText(text)
            self.status_midi.setToolTip(tip)

    def _update_input_state(self) -> None:
        state, error = self.session.input_state()
        choice = self.session.source_choice
        source = f"file {Path(choice.file).name}" if choice.file else f"device {choice.device or 'default'}"
        self.status_input.setText(f"{source}: {state}")
        text = error or ""
        if self.input_state_label.text() != text:
            self.input_state_label.setText(text)
            if error:
                self._show_message(error)
        player = self.session.player
        if player is not None and player.loop != self.loop_box.isChecked():
            with QtCore.QSignalBlocker(self.loop_box):  # mirror the player (e.g. `--loop`), not a user's toggle
                self.loop_box.setChecked(player.loop)
        if player is not None and player.duration > 0:
            self.play_button.setText("Pause" if player.state == "playing" else "Play")
            if not self.seek_slider.isSliderDown():
                self.seek_slider.setValue(int(1000 * player.position / player.duration))
            self.position_label.setText(f"{player.position:5.1f} / {player.duration:.1f} s")

    def _update_record_panel(self) -> None:
        rec = self.session.recorder
        if rec is None:
            return
        if rec.active:
            self.record_button.setChecked(True)
            log = self.session.set_logger
            logging = " + set log" if log is not None and log.active else ""
            self.record_label.setText(
                f"REC {rec.seconds:6.1f} s  {rec.bytes_written / 1e6:5.1f} MB  {rec.path.name}{logging}")
        else:
            self.record_button.setChecked(False)
            if rec.error:
                self.record_label.setText(f"stopped: {rec.error}")
            else:
                self.record_label.setText(f"saved {rec.path.name} ({rec.seconds:.1f} s)")

    def _show_message(self, text: str) -> None:
        # Only the wrapped line under the scopes: a long text in the status bar ran under fps and latency.
        self.message_line.setText(text)

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802 - Qt's name
        """Stop polling, the session (render thread, input, recording) and the output window; the
        widgets themselves go with `delete_window_now` (or the app's event loop)."""
        self._timer.stop()
        QtWidgets.QApplication.instance().removeEventFilter(self)  # a closed window takes no more keys
        if self.session.control.on_learned is self._on_learned:
            self.session.control.on_learned = None
        self.session.control.cancel_learn()
        self.session.stop()
        if self._output is not None:
            self._output.close()
            self._output.deleteLater()  # a top-level window without a parent: nothing else deletes it
            self._output = None
        super().closeEvent(event)


def tempo_text(bpm: float, phase: float, source: str) -> str:
    """The status bar's tempo: "120.0 BPM tap  ●○○○" (the dot marks the quarter of the beat we are in)."""
    if not (math.isfinite(bpm) and math.isfinite(phase)):
        return "-- BPM"
    quarter = min(3, max(0, int(phase * 4)))
    dots = "".join("●" if i == quarter else "○" for i in range(4))
    return f"{bpm:5.1f} BPM {source}  {dots}"


def delete_window_now(window: QtWidgets.QWidget) -> None:
    """Close `window` and destroy it and its widgets now, on the calling (UI) thread.

    Left to Python, a window is destroyed when the garbage collector breaks its reference cycles
    (signal connections, key lambdas): at a moment nobody chose, on whichever thread allocates then
    (the render thread, an audio callback), with part of its Python side already cleared, and
    possibly while the UI thread paints another OpenGL view. Destroying an OpenGL widget that way can
    crash the process. `deleteLater` alone does not help if no event loop runs before a collection.
    """
    window.close()
    window.deleteLater()
    QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)
