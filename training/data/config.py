"""The `data:` section of a training config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from training.settings import setting


@dataclass(frozen=True)
class DataConfig:
    """Where the clips are and how they become training items."""

    path: str = setting("", help="dataset folder (a folder per class) or CSV of path,label")
    kind: Literal["audio", "video"] = setting("video", help="audio clips, or video clips with sound")
    fps: float = setting(24.0, min=1.0, max=240.0, help="training frame rate (frames and mel windows)")
    window_seconds: float = setting(1.0, min=0.05, max=60.0, help="audio each frame hears (as the preset's window)")
    clip_frames: int = setting(1, min=1, max=1000, help="consecutive frames per training item")
    item_stride: int = setting(1, min=1, max=10000, help="frames between the starts of consecutive items of a clip")
    max_seconds: float = setting(0.0, min=0.0, help="use at most this much of each clip (0: all of it)")
    min_seconds: float = setting(1.0, min=0.0, help="shorter clips are skipped (counted)")
    silence_db: float = setting(-60.0, max=0.0, help="clips with RMS below this (dBFS) are skipped as silent")
    holdout_fraction: float = setting(0.1, min=0.0, max=0.9, help="clips per class held out (for samples and eval)")
    cache_dir: str = setting("", resumable=True, help="decoded cache folder ('' : DIR/.soundvj-cache)")
