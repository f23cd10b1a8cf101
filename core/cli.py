"""The `soundvj` command: one entry point, one subcommand per job.

User mistakes (`SoundvjError`) print one line and exit with code 2; `--debug` shows the traceback.
Subcommands register themselves from their own modules so this file stays a thin dispatcher.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable, Sequence

from core.errors import SoundvjError
from core.model_credits import credit_lines, summary_lines
from core.model_file import (
    builtin_model_file,
    check_not_an_input,
    check_writable_folder,
    describe_generator,
    generator_from_pickle,
    is_builtin_model,
    load_generator,
    model_kind,
    read_model_file,
    save_model,
)
from core.presets import list_presets
from core.render import register_cli as register_render_cli
from core.replay import register_cli as register_replay_cli
from core.sound.sound_embedding import CREDIT as EMBEDDING_CREDIT
from core.stylegan3.nvidia_pickle import list_pickle_contents
from core.stylegan3.ops.backend import describe_backend

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors already exit 2; keep them one line
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def _get_values(self, action: argparse.Action, arg_strings: list[str]):  # type: ignore[override]
        # Python 3.11's argparse turns `--crf=--` into an empty list for a one-value flag; refuse it
        # here so every command sees either a value of the flag's type or a usage error.
        if action.nargs is None and action.option_strings and arg_strings == ["--"]:
            self.error(f"argument {'/'.join(action.option_strings)}: expected one value, got '--'")
        return super()._get_values(action, arg_strings)


def _cmd_info(args: argparse.Namespace) -> int:
    G = load_generator(args.model or "default", device=args.device)
    if args.backend:
        print(describe_backend(G))  # the measured (or cached) times for this model, and the choice
        if args.model is None:
            return 0
    facts = describe_generator(G)
    name = args.model or "default"
    if is_builtin_model(name):
        shipped = builtin_model_file(name)
        name = f"{name} (embedded, {'trained: ' + str(shipped) if shipped else 'random weights'})"
    print(f"model:        {name}")
    print(f"generator:    {facts['variant']}, {facts['resolution']}x{facts['resolution']} px, "
          f"{facts['channels']} channels")
    print(f"latent:       num_ws {facts['num_ws']}, w_dim {facts['w_dim']}, z_dim {facts['z_dim']}, "
          f"c_dim {facts['c_dim']}")
    print(f"size:         channel_base {facts['channel_base']}, channel_max {facts['channel_max']}, "
          f"{facts['parameters']:,} parameters")
    print(f"device:       {facts['device']}")
    if args.model and Path(args.model).suffix == ".pkl":
        networks = [f"{k} ({v.rsplit('.', 1)[-1]})" for k, v in list_pickle_contents(args.model).items() if v]
        print(f"networks:     {', '.join(networks)}")
    sound = _sound_summary(args.model)
    if sound:
        print(f"sound models: {sound}")
    if _uses_sound_embedding(args.model):
        print(f"listens with: {EMBEDDING_CREDIT}")
    metadata = _model_metadata(args.model)
    for line in summary_lines(metadata):
        print(line)
    if args.credits:
        lines = credit_lines(metadata)
        print("credits:" if lines else "credits:      none recorded in this model file")
        for line in lines:
            print(f"  {line}")
    return 0


def _model_file(model: str | None) -> Path | None:
    """The file a model argument names (the shipped default's file for "default"), None for the random one."""
    return builtin_model_file(model) if is_builtin_model(model) else Path(model)  # type: ignore[arg-type]


def _model_metadata(model: str | None) -> dict[str, str]:
    """The free-form metadata of a soundvj model file ({} for the random default and pickles)."""
    path = _model_file(model)
    if path is None:
        return {}
    return dict(read_model_file(path).metadata) if model_kind(path) == "safetensors" else {}


def _sound_summary(model: str | None) -> str | None:
    path = _model_file(model)
    if path is None:
        return "embedded (seeded, untrained)"
    if model_kind(path) == "pickle":
        return "none in the file (seeded defaults are used)"
    contents = read_model_file(path)
    return "present" if contents.sound_state else "none in the file (seeded defaults are used)"


def _uses_sound_embedding(model: str | None) -> bool:
    """True when the model's E_A and E_I are heads over the pretrained sound embedding."""
    path = _model_file(model)
    if path is None or model_kind(path) != "safetensors":
        return False
    config = read_model_file(path).sound_config
    return bool(config) and config.get("models", {}).get("audio_encoder", {}).get("backbone") == "embedding"


def _cmd_convert(args: argparse.Namespace) -> int:
    out = Path(args.output)
    check_not_an_input(out, {"network pickle": args.network})
    if out.suffix != ".safetensors":
        raise SoundvjError(f"{out}: the output must end in .safetensors")
    check_writable_folder(out)
    G = generator_from_pickle(args.network, key=args.key)
    save_model(out, G, source=f"converted from {Path(args.network).name} ({args.key})")
    print(f"wrote {out} ({G.img_resolution} px, num_ws {G.num_ws})")
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    presets = list_presets()
    width = max((len(p.name) for p in presets), default=4)
    for p in presets:
        keys = ", ".join(f"{k}={v}" for k, v in p.values.items())
        print(f"{p.name:<{width}}  {p.description}")
        if args.verbose:
            print(f"{'':<{width}}  {p.path}\n{'':<{width}}  {keys}")
    return 0


Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="soundvj", description="Sound-guided semantic video generation with StyleGAN3.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("info", help="describe a model file (resolution, num_ws, T/R, parameters, device)")
    p.add_argument("model", nargs="?", help="NVIDIA .pkl or soundvj .safetensors (default: the embedded model)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--backend", action="store_true", help="also show the measured op backend times and choice")
    p.add_argument("--credits", action="store_true", help="also list every training file with its licence and credit")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("convert", help="convert an NVIDIA network pickle to a soundvj .safetensors model")
    p.add_argument("network", help="NVIDIA network pickle (network-snapshot-*.pkl)")
    p.add_argument("-o", "--output", required=True, help="output .safetensors path")
    p.add_argument("--key", default="G_ema", choices=["G_ema", "G"], help="which generator in the pickle")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("presets", help="list the presets (shipped and in SOUNDVJ_PRESETS_DIR)")
    p.add_argument("-v", "--verbose", action="store_true", help="also show each preset's file and values")
    p.set_defaults(func=_cmd_presets)

    for register in _extra_commands():
        register(sub)
    return parser


ENTRY_POINT_GROUP = "soundvj.commands"


def _extra_commands() -> list[Callable]:
    """Subcommands that live with the code they run.

    `render` and `replay` are in core; `live` (visualizer) and `train`/`data`/`eval` (training) register through the
    `soundvj.commands` entry-point group, so core never imports those packages. Each entry point names
    a `register_cli(subparsers)` function that must import nothing heavy (no Qt) at registration.
    """
    registrars: list[Callable] = [register_render_cli, register_replay_cli]
    seen = {"render", "replay"}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in seen:
            continue
        seen.add(ep.name)
        try:
            registrars.append(ep.load())
        except ImportError as e:  # a half-installed extra must not take the whole command down
            print(f"soundvj: warning: command {ep.name!r} unavailable ({e})", file=sys.stderr)
    return registrars


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug is accepted anywhere on the line (people add it at the end after an error).
    end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:end]
    argv = [a for i, a in enumerate(argv) if not (i < end and a == "--debug")]
    parser = build_parser()
    args = parser.parse_args(argv)
    args.debug = args.debug or debug
    try:
        return int(args.func(args) or 0)
    except SoundvjError as e:
        if args.debug:
            raise
        print(f"soundvj: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("soundvj: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
