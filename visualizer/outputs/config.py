"""`soundvj live`'s network output flags (--stream, --stream-size, --stream-audio, --ndi), checked up
front: a bad URL or size, ffmpeg or cyndilib missing is one line and exit 2 before any window opens."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from visualizer.outputs.ndi_sender import DEFAULT_NDI_NAME, check_ndi_available, check_ndi_name
from visualizer.outputs.stream_sender import DEFAULT_SIZE, check_stream_url, find_ffmpeg, parse_stream_size


@dataclass(frozen=True)
class OutputConfig:
    """What to send out: a stream URL and an NDI name (None: off), their size and whether with sound."""

    stream: str | None = None
    ndi: str | None = None
    size: tuple[int, int] = DEFAULT_SIZE
    sound: bool = False


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the output flags to `soundvj live`."""
    group = parser.add_argument_group("network outputs (to a video mixer, OBS, another machine)")
    group.add_argument("--stream", default=None, metavar="URL",
                       help="send the picture as H.264 to udp://HOST:PORT, srt://HOST:PORT or rtmp://HOST/APP/KEY "
                            "(needs ffmpeg)")
    group.add_argument("--stream-size", default=None, metavar="WxH",
                       help=f"size of the stream and NDI pictures (default {DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]}; "
                            "scaled to cover, centre-cropped)")
    group.add_argument("--stream-audio", action="store_true",
                       help="send the sound the picture answers with the stream and NDI (AAC in the stream)")
    group.add_argument("--ndi", nargs="?", const=DEFAULT_NDI_NAME, default=None, metavar="NAME",
                       help=f"send as an NDI source named NAME (default {DEFAULT_NDI_NAME}); "
                            "needs pip install 'soundvj[ndi]'")


def output_config_from_args(args: argparse.Namespace) -> OutputConfig:
    """The checked output settings; a one-line SoundvjError naming the flag otherwise. The size and
    sound apply to outputs started later from the window's Output menu too."""
    stream = getattr(args, "stream", None)
    ndi = getattr(args, "ndi", None)
    size_text = getattr(args, "stream_size", None)
    sound = bool(getattr(args, "stream_audio", False))
    if stream is not None:
        stream = check_stream_url(stream).url
        find_ffmpeg()
    if ndi is not None:
        ndi = check_ndi_name(ndi)
        check_ndi_available()
    size = parse_stream_size(size_text) if size_text is not None else DEFAULT_SIZE
    return OutputConfig(stream=stream, ndi=ndi, size=size, sound=sound)
