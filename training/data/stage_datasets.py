"""How a stage gets its data: the dataset of `data:` at the generator's resolution, with the checks a
stage needs (frames, at least two classes, clip length), and frames in the generator's [-1, 1] range.

Items (`training.data.datasets`) are dicts: `mel` [T, n_mels, W] (the windows core gives those frames
at inference), `frames` [T, 3, H, W] in [-1, 1] (video data), `label` (class index); T = `data.clip_frames`.
"""

from __future__ import annotations

import torch

from core.audio.mel import MelConfig
from core.errors import SoundvjError
from training.config import RunConfig
from training.data.datasets import open_datasets


def open_stage_datasets(
    run: RunConfig, resolution: int, need_frames: bool, min_clip_frames: int = 1, verbose: bool = True,
    mel: MelConfig | None = None,
) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
    """(training split, held-out split) of the run's dataset, frames at `resolution` px, windows in
    `mel`'s settings (default: the project's)."""
    data = run.data
    if need_frames and data.kind != "video":
        raise SoundvjError(
            f"data.kind: `train {run.stage_name}` pairs sounds with video frames; expected video, got {data.kind!r}"
        )
    if data.clip_frames < min_clip_frames:
        raise SoundvjError(
            f"data.clip_frames: `train {run.stage_name}` trains on clips of frames; expected >= {min_clip_frames}, "
            f"got {data.clip_frames}"
        )
    train, holdout, _report = open_datasets(data, mel or MelConfig(), resolution=resolution, verbose=verbose)
    return train, holdout


def check_classes(dataset: torch.utils.data.Dataset) -> list[str]:
    """The dataset's class names; contrastive and zero-shot training need at least two."""
    classes = list(dataset.classes)  # type: ignore[attr-defined]
    if len(classes) < 2:
        raise SoundvjError(
            f"data.path: the dataset has {len(classes)} class{'' if len(classes) == 1 else 'es'} "
            f"({', '.join(classes) or 'none'}); expected at least 2 (a folder per class)"
        )
    return classes


def frames_to_generator_range(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames [..., 3, H, W] -> float in the generator's [-1, 1] range (what CLIP's adapter expects)."""
    if frames.dtype == torch.uint8:
        return frames.float() / 127.5 - 1.0
    return frames.float()
