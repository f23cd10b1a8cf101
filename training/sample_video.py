"""Short sample videos with their sound, for a stage's `write_samples` hook.

`write_sample_video(path, frames, audio, sample_rate, fps)` writes generated frames (the generator's
[-1, 1] range) with the sound they were generated from as an H.264/AAC mp4 through
`core.video_writer.Mp4Writer` (atomic: the file appears only when complete). The audio is cut to the
frames' duration, so frame t plays with the sound its mel window ended at.
"""

from __future__ import annotations

from pathlib import Path

import torch

from core.video_writer import Mp4Writer


def write_sample_video(
    path: str | Path,
    frames: torch.Tensor,
    audio: torch.Tensor,
    sample_rate: int,
    fps: float,
) -> Path:
    """Frames [T, 3, H, W] in [-1, 1] (H and W even) and mono audio [n] -> `path` (.mp4)."""
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be [T, 3, H, W], got {tuple(frames.shape)}")
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono [n], got {tuple(audio.shape)}")
    count, _, height, width = frames.shape
    samples = audio.detach().float().cpu()[: round(count / fps * sample_rate)]
    with Mp4Writer(path, fps, width, height, audio=samples[None], sample_rate=sample_rate) as writer:
        for frame in frames.detach().float().cpu():
            writer.write(frame)
    return Path(path)
