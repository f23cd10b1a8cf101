"""Starting the live app: check the inputs, load the model, open the window, run, shut down cleanly."""

from __future__ import annotations

import argparse
import signal
import sys

from core.atomic_write import atomic_path
from core.audio.decode import decode_audio
from core.control import ModulationMatrix
from core.errors import SoundvjError, one_line
from core.model import load_model
from core.params import Params, params_from_cli
from core.presets import load_preset
from core.video_writer import check_output_path
from visualizer.control.config import control_config_from_args
from visualizer.display import check_display
from visualizer.outputs.config import output_config_from_args
from visualizer.portaudio import find_input_device
from visualizer.session import InputChoice, LiveSession
from visualizer.set_logger import check_set_log_path


def _start_look(args: argparse.Namespace) -> tuple[Params, str, ModulationMatrix | None]:
    """The starting parameters, the look's name and the preset's modulations (None: it has none)."""
    params, look, matrix = Params(), "", None
    if args.preset:
        preset = load_preset(args.preset)
        params, look, matrix = preset.apply(params), preset.name, preset.matrix
    return params_from_cli(args, params), look, matrix


def _check_source(args: argparse.Namespace) -> InputChoice:
    if args.file is not None:
        decode_audio(args.file, seconds=0.05)  # one line and exit 2 now, not a message in a window later
        return InputChoice(file=args.file, loop=args.loop)
    if args.device is not None:
        return InputChoice(device=find_input_device(args.device).name)
    return InputChoice()


def _quitter_class() -> type:
    """A QObject class whose `quit` signal carries a quit from another thread to the UI thread
    (made in a function so that Qt loads only once the inputs are checked)."""
    from PyQt6 import QtCore

    class Quitter(QtCore.QObject):
        quit = QtCore.pyqtSignal()

    return Quitter


def run_app(args: argparse.Namespace) -> int:
    """Check every input (one line and exit 2 on a problem), then open the window and play until the
    window closes, --duration runs out, Ctrl-C or SIGTERM; returns the exit code."""
    params, look, matrix = _start_look(args)
    source = _check_source(args)
    control = control_config_from_args(args)
    outputs = output_config_from_args(args)
    if args.record is not None:
        check_output_path(args.record)
    if args.set_log is not None:
        check_set_log_path(args.set_log)
    screenshot = check_output_path(args.screenshot, suffixes=(".png",)) if args.screenshot is not None else None
    check_display()
    model = load_model(args.model, device=args.compute)

    # Qt and the widgets load only once every input check passed: a bad flag fails fast without them.
    from PyQt6 import QtCore, QtWidgets

    from visualizer.main_window import MainWindow, delete_window_now

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    app.setApplicationName("soundvj")
    session = LiveSession(model, params, source, output_device=args.output_device, control=control,
                          outputs=outputs)
    session.look = look
    if matrix is not None:  # a version-2 preset's modulations play from the first frame
        session.set_modulations(matrix)
    session.start_control()  # a port in use: one line and exit 2, before any window opens
    window = MainWindow(session, use_gl=not args.no_gl)
    session.on_message = window.message.emit
    for text in session.messages:  # said before the window existed (a broken mapping file, ...)
        window.message.emit(text)
    window.show()
    if args.fullscreen is not None:
        window.show_output(args.fullscreen)
    outcome: dict[str, str | None] = {"error": None, "screenshot": None}
    if screenshot is not None:
        def save_screenshot() -> None:  # as the app quits, however it quits: the window still shows
            failed = f"{screenshot}: could not save the window's picture"
            try:
                with atomic_path(screenshot, suffix=".png") as partial:  # Qt picks the format by the suffix
                    if not window.grab().save(str(partial)):
                        raise SoundvjError(failed)
            except SoundvjError:
                outcome["error"] = failed
            except OSError as err:
                outcome["error"] = f"{failed} ({one_line(err)})"
            else:
                outcome["screenshot"] = str(screenshot)

        app.aboutToQuit.connect(save_screenshot)

    quitter = _quitter_class()()
    quitter.quit.connect(app.quit, QtCore.Qt.ConnectionType.QueuedConnection)

    # With --duration, the recording and the set log each end after S seconds of sound; the run ends
    # when the last of them is done.
    running = {name for name, path in (("record", args.record), ("set log", args.set_log)) if path is not None}

    def finished(name: str, error: str | None) -> None:  # on the recorder's or logger's thread
        if error:
            outcome["error"] = error
        running.discard(name)
        if args.duration is not None and not running:
            quitter.quit.emit()  # hand the quit to the UI thread

    session.worker.set_params(params, 0.0, look)
    if args.set_log is not None:  # before the first frame, so the set starts with the show
        if session.start_set_log(args.set_log, args.set_log_audio, max_seconds=args.duration,
                                 on_done=lambda log: finished("set log", log.error)) is None:
            raise SoundvjError(session.messages[-1] if session.messages else f"{args.set_log}: cannot keep a set log")
    session.worker.start()
    session.start_outputs()  # --stream, --ndi: a failure to connect is a message; the show goes on
    if args.record is not None:
        if session.start_recording(args.record, max_seconds=args.duration,
                                   on_done=lambda rec: finished("record", rec.error)) is None:
            raise SoundvjError(session.messages[-1] if session.messages else f"{args.record}: cannot record")
    session.use_source(source)
    if args.duration is not None:
        # Without a recording or set log the clock ends the run; with one, they do (exactly S seconds
        # of sound), and this is only a backstop if the input never delivers.
        backstop = 0.0 if not running else 30.0 + args.duration
        QtCore.QTimer.singleShot(int((args.duration + backstop) * 1000), app.quit)
    # Ctrl-C in the terminal ends the app cleanly (Qt's loop would otherwise swallow it).
    signal.signal(signal.SIGINT, lambda *_: app.quit())
    signal.signal(signal.SIGTERM, lambda *_: app.quit())
    keepalive = QtCore.QTimer()
    keepalive.timeout.connect(lambda: None)
    keepalive.start(200)
    try:
        app.exec()
    finally:
        session.stop()
        delete_window_now(window)  # here, on the UI thread, while the QApplication still exists
    if outcome["error"]:
        print(f"soundvj: error: {outcome['error']}", file=sys.stderr)
        return 1
    if outcome["screenshot"]:
        print(f"saved {outcome['screenshot']}")
    rec = session.recorder
    if rec is not None and rec.error is None and rec.state == "finished":
        print(f"recorded {rec.path} ({rec.seconds:.2f} s, {rec.frames_written} frames)")
    log = session.set_logger
    if log is not None and log.error is None and log.state == "finished":
        print(f"set log {log.path} ({log.seconds:.2f} s, {log.events_logged} changes, {log.frames_seen} frames); "
              f"soundvj replay {log.path} -o OUT.mp4 renders it again")
    return 0
