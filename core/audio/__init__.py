"""Audio front end: downmixing and resampling, the fixed-reference log-mel, per-video-frame windows,
a demo soundscape.

Decoding files needs PyAV and lives in `core.audio.decode`, which this package does not import:
the models and the frame pipeline load where PyAV is not installed.
"""

from core.audio.demo import demo_sections, demo_soundscape
from core.audio.mel import MelConfig, MelSpectrogramFrontEnd
from core.audio.resampling import StreamingResampler, resample, to_mono
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
    "FrameWindow",
    "MelConfig",
    "MelSpectrogramFrontEnd",
    "StreamingResampler",
    "StreamingWindower",
    "WindowConfig",
    "demo_sections",
    "demo_soundscape",
    "frame_end_sample",
    "mel_windows",
    "num_video_frames",
    "resample",
    "to_mono",
    "window_mel_frames",
]
