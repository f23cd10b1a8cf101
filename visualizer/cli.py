"""`soundvj live`: registered through the `soundvj.commands` entry point, so core never imports the app.

Registration imports no Qt; the command checks that PyQt6 (and pyqtgraph, vispy) are there and says how
to install them otherwise. Input problems (a missing file, an unknown device, no display) are one line
and exit 2 before any window opens.
"""

from __future__ import annotations

import argparse
import importlib
import math

from core.errors import SoundvjError
from core.params import add_cli_arguments
from visualizer.control.config import add_control_arguments, control_config_from_args
from visualizer.outputs.config import add_output_arguments, output_config_from_args
from visualizer.portaudio import list_input_devices

INSTALL_HINT = "pip install 'soundvj[live]' (PyQt6, pyqtgraph, vispy)"


def register_cli(sub: argparse._SubParsersAction) -> None:
    """Add the `live` subcommand and its flags (the shared parameter flags included)."""
    p = sub.add_parser("live", help="play live: microphone or file audio through the model, on screen, recordable")
    p.add_argument("--model", default=None, help="NVIDIA .pkl or soundvj .safetensors (default: embedded model)")
    p.add_argument("--preset", default=None, help="preset name or YAML path to start with")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--device", default=None, metavar="NAME",
                     help="audio input device by name (default: the system default input)")
    src.add_argument("--file", default=None, metavar="AUDIO", help="play this audio file instead of an input")
    p.add_argument("--loop", action="store_true", help="loop the --file")
    p.add_argument("--output-device", default=None, metavar="NAME", help="audio output device for --file playback")
    p.add_argument("--record", default=None, metavar="OUT.mp4", help="record the session (video + sound) to this file")
    p.add_argument("--set-log", default=None, metavar="SET.soundvjset",
                   help="keep a set log: the sound heard and every change, for `soundvj replay` to render "
                   "the set again offline, every frame")
    p.add_argument("--set-log-audio", default="flac", choices=("flac", "opus"),
                   help="how the set log keeps the sound: flac (lossless, default) or opus (about a tenth the size)")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="end by itself after S seconds (a --record file or --set-log then holds exactly S seconds)")
    p.add_argument("--screenshot", default=None, metavar="OUT.png",
                   help="save a picture of the window as the run ends (with --duration: after S seconds)")
    p.add_argument("--fullscreen", type=int, default=None, metavar="N", help="output window fullscreen on screen N")
    p.add_argument("--list-devices", action="store_true", help="print the audio input devices and exit")
    p.add_argument("--compute", default=None, metavar="DEVICE", help="torch device: auto (default), cpu, cuda, cuda:N")
    p.add_argument("--no-gl", action="store_true", help="draw without OpenGL (slower; for machines without GL)")
    add_control_arguments(p)
    add_output_arguments(p)
    add_cli_arguments(p)
    p.set_defaults(func=run_live_command)


def _list_devices() -> int:
    devices = list_input_devices()
    if not devices:
        print("no audio input devices")
        return 0
    for d in devices:
        default = "  (default)" if d.is_default else ""
        print(f"{d.name}  [{d.host_api}]  {d.channels} ch, {d.default_samplerate:g} Hz{default}")
    return 0


def run_live_command(args: argparse.Namespace) -> int:
    """Run `soundvj live`: list the devices, or check the Qt packages and the flags, then start the app."""
    if args.list_devices:
        return _list_devices()
    try:
        for name in ("PyQt6.QtWidgets", "pyqtgraph", "vispy"):
            importlib.import_module(name)
    except ImportError as e:
        raise SoundvjError(f"live: the live app needs its Qt packages ({e.name or e}); {INSTALL_HINT}") from None
    if args.duration is not None and not (math.isfinite(args.duration) and 0 < args.duration <= 86400 * 7):
        raise SoundvjError(f"--duration {args.duration}: expected seconds in (0, 604800]")
    if args.fullscreen is not None and args.fullscreen < 0:
        raise SoundvjError(f"--fullscreen {args.fullscreen}: expected a screen number >= 0")
    control_config_from_args(args)  # --osc-port, --osc-out, --mapping: one line and exit 2 now
    output_config_from_args(args)  # --stream URL and size, ffmpeg, --ndi and cyndilib: the same
    # Imported here, not at the top: the app loads torch and the model code, and every soundvj command
    # imports this module to register `live`.
    from visualizer.app import run_app

    return run_app(args)
