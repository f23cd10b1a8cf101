"""The control layer's settings, checked in one place: OSC in and out, MIDI in, and the mapping file.

`ControlConfig` is what `LiveSession` takes; `control_config_from_args` builds it from `soundvj live`'s
flags (--osc-port, --osc-host, --osc-out, --mapping, and the MIDI input's --midi-port, --midi-api)
with one-line errors naming the flag, so the CLI exits 2 before any window opens.
"""

from __future__ import annotations

import argparse
import ipaddress
import numbers
from dataclasses import dataclass
from pathlib import Path

from core.errors import SoundvjError, short_repr
from visualizer.control.mapping_file import default_mapping_path
from visualizer.control.midi import MidiSettings, add_midi_arguments, midi_settings_from_args

LOCALHOST = "127.0.0.1"
MAX_HOST_LENGTH = 253


def _check_port(port: object, where: str, allow_zero: bool) -> int:
    lo = 0 if allow_zero else 1
    if isinstance(port, bool) or not isinstance(port, numbers.Integral) or not lo <= int(port) <= 65535:
        raise SoundvjError(f"{where}: {short_repr(port)}: expected a UDP port in [{lo}, 65535]")
    return int(port)


def _check_host(host: object, where: str) -> str:
    if not isinstance(host, str) or not host.strip() or len(host) > MAX_HOST_LENGTH \
            or not host.isascii() or not host.isprintable() or " " in host:
        raise SoundvjError(f"{where}: {short_repr(host)}: expected a host name or IP address")
    return host.strip()


def parse_host_port(text: str, where: str) -> tuple[str, int]:
    """"HOST:PORT" (an IPv6 address in brackets: "[::1]:9000") as (host, port); errors name `where`."""
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise SoundvjError(f"{where} {short_repr(text)}: expected HOST:PORT, e.g. 127.0.0.1:9001")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise SoundvjError(f"{where} {short_repr(text)}: {short_repr(host)} is not an IPv6 address") from None
    return _check_host(host, where), _check_port(int(port_text), where, allow_zero=False)


@dataclass(frozen=True)
class ControlConfig:
    """`osc_port`: listen for OSC there (0: no OSC input); `osc_host`: the address to listen on (the
    loopback unless opened on purpose); `osc_out`: (host, port) to send the analysis to each frame, or
    None; `mapping_path`: the mapping file (None: bindings are not read or saved); `midi`: the MIDI
    input to open (None: no MIDI); `link`: join an Ableton Link session."""

    osc_port: int = 0
    osc_host: str = LOCALHOST
    osc_out: tuple[str, int] | None = None
    mapping_path: Path | None = None
    midi: MidiSettings | None = None
    link: bool = False

    def __post_init__(self) -> None:
        _check_port(self.osc_port, "--osc-port", allow_zero=True)
        _check_host(self.osc_host, "--osc-host")
        if self.osc_out is not None:
            if not isinstance(self.osc_out, tuple) or len(self.osc_out) != 2:
                raise SoundvjError(f"--osc-out: {short_repr(self.osc_out)}: expected (host, port)")
            _check_host(self.osc_out[0], "--osc-out")
            _check_port(self.osc_out[1], "--osc-out", allow_zero=False)
        if not isinstance(self.link, bool):
            raise SoundvjError(f"--link: {short_repr(self.link)}: expected true or false")
        if self.mapping_path is not None:
            object.__setattr__(self, "mapping_path", Path(self.mapping_path).expanduser())
            if self.mapping_path.is_dir():
                raise SoundvjError(f"--mapping {self.mapping_path}: is a folder; expected a YAML file")


def add_control_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --osc-port, --osc-host, --osc-out, --mapping, --link and the MIDI flags to `soundvj live`."""
    parser.add_argument("--osc-port", type=int, default=0, metavar="N",
                        help="listen for OSC on this UDP port (0 or absent: off); see docs/controllers.md")
    parser.add_argument("--osc-host", default=LOCALHOST, metavar="ADDR",
                        help="address the OSC input listens on (default 127.0.0.1, this machine only; "
                             "0.0.0.0 opens it to the network)")
    parser.add_argument("--osc-out", default=None, metavar="HOST:PORT",
                        help="send the analysis (level, bands, onset, BPM, beat phase, parameters) "
                             "over OSC to HOST:PORT every frame")
    parser.add_argument("--mapping", default=None, metavar="FILE",
                        help=f"the MIDI/OSC/key mapping file (default {default_mapping_path()})")
    parser.add_argument("--link", action="store_true",
                        help="join an Ableton Link session: follow its tempo and beat phase, and lead it "
                             "with taps (off by default; Link talks to every network interface)")
    add_midi_arguments(parser)


def control_config_from_args(args: argparse.Namespace) -> ControlConfig:
    """The `ControlConfig` of `soundvj live`'s flags (one-line `SoundvjError` naming the flag)."""
    osc_out = parse_host_port(args.osc_out, "--osc-out") if args.osc_out else None
    mapping = Path(args.mapping) if args.mapping else default_mapping_path()
    midi = midi_settings_from_args(args) if args.midi_port else None
    return ControlConfig(osc_port=args.osc_port, osc_host=args.osc_host, osc_out=osc_out, mapping_path=mapping,
                         midi=midi, link=args.link)
