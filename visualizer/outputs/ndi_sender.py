"""The live picture (and optionally its sound) as an NDI source, for video mixers and OBS on the LAN.

NDI comes through cyndilib, the optional extra `soundvj[ndi]`: cyndilib bundles NDI's runtime, which
is proprietary (the NDI SDK licence), so soundvj never depends on it by default and imports it only
when NDI is asked for. The source is named "HOST (NAME)" on the network, NAME "soundvj" by default.

Frames go out at the set's frame rate on the sender's own thread (`PacedOutput`: repeats when the
render dips, skips when sending is slow), scaled with Lanczos-3 to the output size, as RGBX; NDI
compresses them itself. NDI's own clocking is off: the output's clock paces the frames, so the
render thread never waits on NDI.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from core.errors import SoundvjError, one_line
from core.video_writer import exact_frame_rate
from visualizer.outputs.paced_output import PacedOutput

DEFAULT_NDI_NAME = "soundvj"
NDI_INSTALL_HINT = "pip install 'soundvj[ndi]' (cyndilib, which bundles NDI's proprietary runtime)"


def check_ndi_available() -> None:
    """A one-line SoundvjError saying how to install NDI support, unless cyndilib imports."""
    try:
        # Imported here, not at the top: the optional extra, loaded only when NDI is asked for.
        import cyndilib  # noqa: F401
    except ImportError:
        raise SoundvjError(f"--ndi needs cyndilib, which is not installed; {NDI_INSTALL_HINT}") from None


def check_ndi_name(name: str) -> str:
    """The NDI source name, stripped; one line naming the flag when it is empty or has odd characters."""
    text = str(name).strip()
    if not text or len(text) > 63 or any(not ch.isprintable() or ch in "()\\" for ch in text):
        raise SoundvjError(f"--ndi {text[:80]!r}: expected a source name of 1-63 printable characters "
                           "without brackets or backslashes, e.g. soundvj")
    return text


class NdiSender(PacedOutput):
    """An NDI source named `name` sending at `fps`, scaled to `size`, with the sound when
    `sample_rate` is given. A frame sink of the render worker (`feed` returns at once)."""

    kind = "NDI"

    def __init__(self, name: str = DEFAULT_NDI_NAME, fps: float = 24.0, size: tuple[int, int] = (1280, 720),
                 sample_rate: int | None = None, on_message: Callable[[str], None] | None = None) -> None:
        self.name = check_ndi_name(name)
        super().__init__(f"NDI {self.name}", fps, size[0], size[1], sample_rate, on_message)
        self._sender = None
        self._rgbx: np.ndarray | None = None
        self._last_image: np.ndarray | None = None

    @property
    def receivers(self) -> int:
        """How many receivers are connected now (0 while closed)."""
        sender = self._sender
        try:
            return int(sender.get_num_connections(0)) if sender is not None else 0
        except Exception:  # noqa: BLE001 - a count for the status line; closing races are harmless
            return 0

    def status_text(self) -> str:
        text = super().status_text()
        return f"{text}, {self.receivers} receiving" if self.state == "live" else text

    def _connect(self) -> None:
        try:
            # Imported here, not at the top: the optional extra with NDI's proprietary runtime, loaded
            # only when NDI is asked for.
            from cyndilib.audio_frame import AudioSendFrame
            from cyndilib.sender import Sender
            from cyndilib.video_frame import VideoSendFrame
            from cyndilib.wrapper.ndi_structs import FourCC
        except ImportError as e:
            raise SoundvjError(f"{self.label}: cannot load cyndilib ({one_line(e)}); {NDI_INSTALL_HINT}") from None
        try:
            sender = Sender(self.name, clock_video=False, clock_audio=False)
            video = VideoSendFrame()
            video.set_fourcc(FourCC.RGBX)
            video.set_frame_rate(exact_frame_rate(self.fps))
            video.set_resolution(self.width, self.height)
            sender.set_video_frame(video)
            if self.sample_rate is not None:
                audio = AudioSendFrame()
                audio.sample_rate = self.sample_rate
                audio.num_channels = 1
                audio.set_max_num_samples(int(self.sample_rate / self.fps) + 2)
                sender.set_audio_frame(audio)
            sender.open()
        except Exception as e:  # noqa: BLE001 - NDI's runtime says little; the performer gets one line
            raise SoundvjError(f"{self.label}: NDI could not start ({type(e).__name__}: {one_line(e)})") from None
        self._sender = sender
        self._rgbx = np.full((self.height, self.width, 4), 255, np.uint8)
        self._last_image = None

    def _send(self, image: np.ndarray, audio: np.ndarray | None) -> None:
        if image is not self._last_image:
            self._rgbx[..., :3] = image
            self._last_image = image
        frame = self._rgbx.reshape(-1)
        if audio is None:
            ok = self._sender.write_video_async(frame)
        else:
            ok = self._sender.write_video_and_audio(frame, audio.reshape(1, -1))
        if ok is False:
            raise SoundvjError(f"{self.label}: NDI did not take the frame")

    def _disconnect(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            try:
                sender.close()
            except Exception:  # noqa: BLE001 - closing what is already gone
                pass
