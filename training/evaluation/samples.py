"""Samples written while training: grids of frames generated from held-out sounds (one row per class)
and short videos of generated frames with the sound that made them."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from core.atomic_write import write_bytes_atomic


def items_per_class(dataset: torch.utils.data.Dataset, num_classes: int, per_class: int) -> list[list[dict]]:
    """Up to `per_class` items of each class, spread evenly over that class's items (a fixed grid: the
    same items every time). The first item of a clip hears mostly the silence before it starts."""
    indices: list[list[int]] = [[] for _ in range(num_classes)]
    items, labels = getattr(dataset, "items", None), getattr(dataset, "labels", None)
    for i in range(len(dataset)):  # type: ignore[arg-type]
        # ClipDataset knows each item's clip and each clip's label without decoding anything.
        label = labels[items[i][0]] if items is not None and labels is not None else int(dataset[i]["label"])
        indices[label].append(i)
    rows = []
    for found in indices:
        count = min(per_class, len(found))
        picks = [found[(k * len(found) + len(found) // 2) // count] for k in range(count)] if count else []
        rows.append([dataset[i] for i in picks])
    return rows


def grid_image(rows: list[torch.Tensor], pad: int = 2) -> np.ndarray:
    """Rows of frames [N_i, 3, H, W] in [-1, 1] -> one uint8 HWC image, rows top to bottom (empty rows grey)."""
    height, width = next(r.shape[2:] for r in rows if r.numel())
    columns = max(r.shape[0] for r in rows)
    out = np.full((len(rows) * (height + pad) + pad, columns * (width + pad) + pad, 3), 40, dtype=np.uint8)
    for y, row in enumerate(rows):
        pixels = ((row.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for x, frame in enumerate(pixels):
            top, left = pad + y * (height + pad), pad + x * (width + pad)
            out[top : top + height, left : left + width] = frame
    return out


def write_grid(path: Path, rows: list[torch.Tensor]) -> Path:
    """A PNG grid (see `grid_image`), written atomically."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(grid_image(rows)).save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())
    return path


def write_sample_video(path: Path, frames: torch.Tensor, fps: float, audio_path: str | Path, seconds: float) -> Path:
    """An mp4 of `frames` [T, 3, H, W] in [-1, 1] with the first `seconds` of `audio_path`'s sound
    (the sound the frames were generated from), written atomically by core's Mp4Writer."""
    # PyAV: optional in core, needed only for the sample videos (the grids need none)
    from core.audio.decode import decode_audio
    from core.video_writer import Mp4Writer

    audio = decode_audio(audio_path, start=0.0, seconds=seconds)
    height, width = frames.shape[2:]
    with Mp4Writer(path, fps, width, height, audio=audio.samples, sample_rate=audio.sample_rate) as writer:
        for frame in frames:
            writer.write(((frame.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu())
    return path
