"""Finding a dataset's labelled clips (a folder per class, or a CSV of path,label) and checking each one.

A clip is usable when it decodes, is long enough and is not silent; everything else is a `Problem`
with a one-line reason, which `soundvj data scan` prints and training skips with a count.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import av
import torch

from core.audio.decode import decode_audio
from core.audio.resampling import to_mono
from core.errors import SoundvjError, one_line

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".mp4", ".mkv", ".webm")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm")


@dataclass(frozen=True)
class ClipEntry:
    """One listed clip and its class label."""

    path: Path
    label: str


@dataclass(frozen=True)
class Problem:
    """A clip training skips, and why (`kind` is unreadable, silent or too-short)."""

    path: Path
    kind: str
    reason: str


def suffixes_for(kind: str) -> tuple[str, ...]:
    if kind == "audio":
        return AUDIO_SUFFIXES
    if kind == "video":
        return VIDEO_SUFFIXES
    raise SoundvjError(f"data.kind: expected audio or video, got {kind!r}")


def list_clips(path: str | Path, kind: str) -> list[ClipEntry]:
    """Every clip the dataset lists, sorted by label then path. Does not open the clips."""
    if str(path) == "":
        raise SoundvjError("data.path: not set; expected a dataset folder (a folder per class) or a CSV of path,label")
    root = Path(path)
    if not root.exists():
        raise SoundvjError(f"data.path {str(root)!r}: not found")
    suffixes = suffixes_for(kind)
    if root.is_file():
        entries = _from_csv(root, suffixes)
    else:
        entries = []
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for f in sorted(folder.iterdir()):
                if f.is_file() and f.suffix.lower() in suffixes and not f.name.startswith("."):
                    entries.append(ClipEntry(f, folder.name))
    if not entries:
        raise SoundvjError(
            f"data.path {str(root)!r}: no {kind} clips found; expected DIR/<class>/<clip> with one of "
            f"{', '.join(suffixes)} (or a CSV of path,label)"
        )
    return sorted(entries, key=lambda e: (e.label, str(e.path)))


def _from_csv(path: Path, suffixes: tuple[str, ...]) -> list[ClipEntry]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SoundvjError(f"data.path {str(path)!r}: cannot be read as a CSV of path,label ({e})") from None
    entries = []
    for number, row in enumerate(rows, start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        if number == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise SoundvjError(f"data.path {str(path)!r} line {number}: expected 'path,label', got {','.join(row)!r}")
        clip = Path(row[0].strip())
        clip = clip if clip.is_absolute() else path.parent / clip
        if clip.suffix.lower() not in suffixes:
            raise SoundvjError(
                f"data.path {str(path)!r} line {number}: {str(clip)!r} is not one of {', '.join(suffixes)}"
            )
        entries.append(ClipEntry(clip, row[1].strip()))
    return entries


def rms_dbfs(samples: torch.Tensor) -> float:
    """Root-mean-square level of samples in dB relative to full scale (-inf for digital silence)."""
    rms = float(samples.double().pow(2).mean().sqrt()) if samples.numel() else 0.0
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def check_audio(samples: torch.Tensor, sample_rate: int, path: Path, min_seconds: float, silence_db: float) -> Problem | None:
    """Too short or silent, as a Problem; None when the audio is usable."""
    seconds = samples.shape[-1] / sample_rate
    if seconds < min_seconds:
        return Problem(path, "too-short", f"too short: {seconds:.2f} s, expected at least {min_seconds:g} s")
    level = rms_dbfs(samples)
    if level < silence_db:
        shown = "digital silence" if level == -math.inf else f"RMS {level:.1f} dBFS"
        return Problem(path, "silent", f"silent: {shown}, below data.silence_db={silence_db:g}")
    return None


def check_clip(entry: ClipEntry, kind: str, min_seconds: float, silence_db: float) -> Problem | None:
    """Decode the clip's audio (and, for video, its first frame) and say whether training can use it."""
    try:
        decoded = decode_audio(entry.path)
    except SoundvjError as e:
        return Problem(entry.path, "unreadable", f"unreadable: {_strip_path(str(e), entry.path)}")
    problem = check_audio(to_mono(decoded.samples), decoded.sample_rate, entry.path, min_seconds, silence_db)
    if problem is None and kind == "video":
        problem = _check_video_stream(entry.path)
    return problem


def _strip_path(message: str, path: Path) -> str:
    # decode_audio's message starts with "audio file '<path>': "; the scan already names the file.
    prefix = f"audio file {str(path)!r}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _check_video_stream(path: Path) -> Problem | None:
    try:
        with av.open(str(path), metadata_errors="replace") as container:
            if not container.streams.video:
                return Problem(path, "unreadable", "unreadable: has no video stream")
            for _ in container.decode(container.streams.video[0]):
                return None
    except av.FFmpegError as e:
        return Problem(path, "unreadable", f"unreadable: video could not be decoded ({one_line(e)})")
    return Problem(path, "unreadable", "unreadable: the video stream has no frames")
