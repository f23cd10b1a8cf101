"""Labelled clip datasets for the stages: items of consecutive frames with their mel windows.

`open_datasets(data_config, mel_config, resolution)` lists the clips, decodes them through the cache,
skips (and counts) unusable ones, splits each class's clips into training and held-out ones, and
returns two `ClipDataset`s and a `DatasetReport`.

An item (a dict; the default collate stacks them):

* `mel`: float32 [K, n_mels, W], the windows inference gives these K frames (K = `data.clip_frames`);
* `frames` (video datasets): float32 [K, 3, R, R] in [-1, 1], the generator's output range;
* `label`: int64, an index into `dataset.classes` (sorted class names, shared by both splits);
* `clip`, `start`: which clip of the split and its first frame.

Items start every `data.item_stride` frames of every clip, so a dataset's length is fixed and the
loop's sampler can put it in a reproducible order.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from core.audio.mel import MelConfig
from core.errors import SoundvjError
from training.data.clips import ClipEntry, Problem, list_clips
from training.data.config import DataConfig
from training.data.decoded import DecodedCache, DecodedClip, DecodeSettings, default_cache_dir, open_array


@dataclass(frozen=True)
class DatasetReport:
    """What opening a dataset found: classes, usable clips per split, and the skipped clips."""

    classes: tuple[str, ...]
    listed: int
    train_clips: int
    holdout_clips: int
    problems: tuple[Problem, ...]

    def summary(self) -> str:
        usable = self.train_clips + self.holdout_clips
        text = (f"data: {len(self.classes)} classes, {usable} of {self.listed} clips usable "
                f"({self.train_clips} training, {self.holdout_clips} held out)")
        if self.problems:
            counts = Counter(p.kind for p in self.problems)
            text += "; skipped " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
            text += " (`soundvj data scan` names them)"
        return text


class ClipDataset(Dataset):
    """Items of `clip_frames` consecutive frames from decoded clips (see the module docstring)."""

    def __init__(self, clips: list[DecodedClip], classes: tuple[str, ...], clip_frames: int, item_stride: int):
        self.clips = clips
        self.classes = classes
        self.clip_frames = clip_frames
        self.labels = [classes.index(c.entry.label) for c in clips]
        self.items = [(i, start) for i, c in enumerate(clips)
                      for start in range(0, c.num_frames - clip_frames + 1, item_stride)]
        self._arrays: dict[Path, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getstate__(self) -> dict:  # DataLoader workers open their own memory maps
        state = self.__dict__.copy()
        state["_arrays"] = {}
        return state

    def _array(self, path: Path) -> np.ndarray:
        array = self._arrays.get(path)
        if array is None:
            array = self._arrays[path] = open_array(path)
        return array

    def __getitem__(self, index: int) -> dict:
        clip_index, start = self.items[index]
        clip = self.clips[clip_index]
        end = start + self.clip_frames
        item = {
            "mel": torch.from_numpy(clip.mel_windows(self._array(clip.mel_path), start, end)),
            "label": torch.tensor(self.labels[clip_index], dtype=torch.int64),
            "clip": clip_index,
            "start": start,
        }
        if clip.frames_path is not None:
            item["frames"] = frames_to_float(np.array(self._array(clip.frames_path)[start:end]))
        return item

    def whole_clip(self, clip_index: int) -> dict:
        """All frames of one clip: `mel` [T, n_mels, W], `frames` [T, 3, R, R] (video), `label`, `path`."""
        clip = self.clips[clip_index]
        out = {
            "mel": torch.from_numpy(clip.mel_windows(self._array(clip.mel_path), 0, clip.num_frames)),
            "label": self.labels[clip_index],
            "path": clip.entry.path,
        }
        if clip.frames_path is not None:
            out["frames"] = frames_to_float(np.array(self._array(clip.frames_path)))
        return out


def frames_to_float(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float32 [T, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def _holdout_count(n: int, fraction: float) -> int:
    if fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, math.floor(n * fraction + 0.5)))


def _stable_order(clip: DecodedClip) -> str:
    # By name, not by listing order: adding clips does not move existing ones between the splits.
    return hashlib.sha256(f"{clip.entry.label}/{clip.entry.path.name}".encode()).hexdigest()


HOLDOUT_LIST = "HOLDOUT.txt"


def read_holdout_list(path: str | Path, entries: list[ClipEntry]) -> set[tuple[str, str]] | None:
    """The (class, file name) pairs `HOLDOUT.txt` names, or None when the dataset has no such file.

    It sits in the dataset folder (next to the CSV for a CSV dataset), one `<class>/<file>` per line
    ('#' comments and blank lines allowed). A line naming a clip the dataset does not list is a
    one-line `SoundvjError`.
    """
    root = Path(path)
    list_path = (root if root.is_dir() else root.parent) / HOLDOUT_LIST
    if not list_path.is_file():
        return None
    try:
        lines = list_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SoundvjError(f"{list_path}: cannot be read ({e})") from None
    known = {(e.label, e.path.name) for e in entries}
    held: set[tuple[str, str]] = set()
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        label, sep, name = text.partition("/")
        if not sep or not label or not name or "/" in name:
            raise SoundvjError(f"{list_path} line {number}: expected <class>/<file>, got {text!r}")
        if (label, name) not in known:
            raise SoundvjError(f"{list_path} line {number}: {text!r} is not a clip of the dataset")
        held.add((label, name))
    return held


def open_datasets(
    config: DataConfig,
    mel_config: MelConfig,
    resolution: int | None = None,
    verbose: bool = True,
) -> tuple[ClipDataset, ClipDataset, DatasetReport]:
    """(training split, held-out split, report) of `config.path`, decoding through the cache.

    The held-out clips are the ones a `HOLDOUT.txt` in the dataset names (see `read_holdout_list`), else
    `data.holdout_fraction` of each class by a stable hash of the names; `holdout_fraction` 0 holds out
    nothing either way. Video datasets need `resolution` (the generator's). Fewer than two classes with usable clips,
    or no training items, is a one-line `SoundvjError`. With `verbose`, prints the report's summary.
    """
    if config.kind == "video" and not resolution:
        raise SoundvjError("data.kind video: the stage must give the generator's resolution")
    entries = list_clips(config.path, config.kind)
    listed = read_holdout_list(config.path, entries) if config.holdout_fraction > 0 else None  # checked before decoding
    settings = DecodeSettings(
        mel=mel_config, fps=config.fps, window_seconds=config.window_seconds,
        resolution=int(resolution) if config.kind == "video" else 0, max_seconds=config.max_seconds,
        min_seconds=config.min_seconds, silence_db=config.silence_db,
    )
    cache = DecodedCache(Path(config.cache_dir) if config.cache_dir else default_cache_dir(config.path), settings)
    usable: list[DecodedClip] = []
    problems: list[Problem] = []
    for entry in entries:
        result = cache.get(entry, need_frames=config.clip_frames)
        (problems if isinstance(result, Problem) else usable).append(result)
    classes = tuple(sorted({c.entry.label for c in usable}))
    if len(classes) < 2:
        found = f"{len(classes)} class ({classes[0]})" if classes else "no usable clips"
        raise SoundvjError(
            f"data.path {str(config.path)!r}: {found}; expected at least 2 classes of usable clips "
            f"({len(problems)} of {len(entries)} clips skipped)"
        )
    train, holdout = [], []
    if listed is not None:
        for c in usable:
            (holdout if (c.entry.label, c.entry.path.name) in listed else train).append(c)
    else:
        for label in classes:
            ordered = sorted((c for c in usable if c.entry.label == label), key=_stable_order)
            k = _holdout_count(len(ordered), config.holdout_fraction)
            holdout += ordered[:k]
            train += ordered[k:]
    key = lambda c: (c.entry.label, str(c.entry.path))  # noqa: E731
    train.sort(key=key)
    holdout.sort(key=key)
    train_set = ClipDataset(train, classes, config.clip_frames, config.item_stride)
    holdout_set = ClipDataset(holdout, classes, config.clip_frames, config.item_stride)
    report = DatasetReport(classes, len(entries), len(train), len(holdout), tuple(problems))
    if len(train_set) == 0:
        raise SoundvjError(f"data.path {str(config.path)!r}: no training items of data.clip_frames={config.clip_frames}")
    if verbose:
        print(report.summary(), file=sys.stderr)
    return train_set, holdout_set, report
