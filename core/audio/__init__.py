"""Audio front end: decoding (PyAV), the fixed-reference log-mel, per-video-frame windows, a demo soundscape."""

from core.audio.decode import DecodedAudio, decode_audio, load_mono, resample, to_mono
from core.audio.demo import demo_sections, demo_soundscape
from core.audio.mel import MelConfig, MelSpectrogramFrontEnd
from core.audio.windows import (
    FrameWindow,
    StreamingWindower,
    WindowConfig,
    frame_end_sample,
    mel_windows,
    num_video_frames,
    window_mel_frames,
)

__all__ = [
    "DecodedAudio",
    "FrameWindow",
    "MelConfig",
    "MelSpectrogramFrontEnd",
    "StreamingWindower",
    "WindowConfig",
    "decode_audio",
    "demo_sections",
    "demo_soundscape",
    "frame_end_sample",
    "load_mono",
    "mel_windows",
    "num_video_frames",
    "resample",
    "to_mono",
    "window_mel_frames",
]
