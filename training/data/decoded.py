"""Decoding a clip into training arrays, and the on-disk cache of those arrays.

For a clip, at the training fps:

* `mel`: float32 [T, n_mels, W], exactly `core.audio.windows.mel_windows(samples, mel, window)`, the
  windows inference gives frames 0 .. T-1 (T = round(duration x fps), cut to the video's length).
  Consecutive windows overlap, so the cache stores them as one strip of mel frames [n_mels, M] plus
  each window's first column (about 44 kB per second of audio instead of 1 MB at 24 fps), after
  checking that every window cut from the strip equals `mel_windows`' bit for bit (if one ever did
  not, the windows are stored whole);
* `frames` (video clips): uint8 [T, R, R, 3], frame t the picture showing at time t / fps (the last
  decoded frame whose timestamp is at or before it), centre-cropped square and resized to R x R.

The cache keeps them as .npy files (read memory-mapped) under
`cache_dir/<settings hash>/<clip hash>.*`, where the clip hash covers the file's path, size and
modification time, and the settings hash the mel, window, fps, resolution and max_seconds settings;
a usable clip also gets a small JSON, a skipped one a JSON with its problem, so reopening a dataset
decodes nothing. Every file is written to a temp name and renamed, so concurrent ranks and killed
runs never leave a half-written entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

from core.atomic_write import write_bytes_atomic
from core.audio.decode import load_mono
from core.audio.mel import MelConfig, MelSpectrogramFrontEnd
from core.audio.windows import WindowConfig, frame_end_sample, mel_windows, num_video_frames
from core.errors import SoundvjError, one_line
from training.data.clips import ClipEntry, Problem, check_audio

CACHE_VERSION = 3  # bumped whenever decoding changes, so old cache entries are not reused


@dataclass(frozen=True)
class DecodeSettings:
    """Everything that changes a clip's decoded arrays (and so the cache key)."""

    mel: MelConfig
    fps: float
    window_seconds: float
    resolution: int  # 0 for audio-only datasets
    max_seconds: float  # 0: the whole clip
    min_seconds: float
    silence_db: float

    def key(self) -> str:
        data = {"version": CACHE_VERSION, **dataclasses.asdict(self)}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DecodedClip:
    """A usable clip in the cache: where its arrays are and how many frames it has."""

    entry: ClipEntry
    num_frames: int
    mel_path: Path
    frames_path: Path | None
    mel_starts: tuple[int, ...] | None = None  # strip layout: window t is strip[:, s_t : s_t + W]
    window_frames: int = 0

    def mel_windows(self, strip_or_windows: np.ndarray, start: int, end: int) -> np.ndarray:
        """Windows start .. end-1 as float32 [n, n_mels, W] from the cached array (either layout)."""
        if self.mel_starts is None:
            return np.array(strip_or_windows[start:end])
        w = self.window_frames
        return np.stack([strip_or_windows[:, s : s + w] for s in self.mel_starts[start:end]])


def _clip_key(path: Path) -> str:
    st = path.stat()
    text = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array))
    write_bytes_atomic(path, buffer.getvalue())


def decode_frames(path: Path, fps: float, count: int, resolution: int) -> np.ndarray:
    """Up to `count` frames at `fps` (frame t = the picture showing at t / fps), uint8 [n, R, R, 3]."""
    out: list[np.ndarray] = []
    try:
        with av.open(str(path), metadata_errors="replace") as container:
            if not container.streams.video:
                raise SoundvjError(f"video file {str(path)!r}: has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            t0 = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            rate = float(stream.average_rate) if stream.average_rate else fps
            # mkv/webm keep times in whole milliseconds: a frame due at 1/6 s is stamped 0.167 s.
            slack = min(0.002, 0.25 / rate)
            current = None  # (time, resized image) of the newest decoded frame
            last_time = 0.0
            for frame in container.decode(stream):
                time = (frame.time - t0) if frame.time is not None else last_time + 1 / rate
                last_time = time
                # Frames whose target time comes before this picture's timestamp show the previous one.
                while len(out) < count and len(out) / fps < time - slack:
                    image = current[1] if current is not None else _square(frame.to_ndarray(format="rgb24"), resolution)
                    out.append(image)
                if len(out) >= count:
                    break
                current = (time, _square(frame.to_ndarray(format="rgb24"), resolution))
            if current is not None:
                end = last_time + 1 / rate  # the last picture shows for one frame period
                while len(out) < count and len(out) / fps < end - slack:
                    out.append(current[1])
    except av.FFmpegError as e:
        raise SoundvjError(f"video file {str(path)!r}: could not be decoded ({one_line(e)})") from None
    if not out:
        raise SoundvjError(f"video file {str(path)!r}: the video stream has no frames")
    return np.stack(out)


def _square(image: np.ndarray, resolution: int) -> np.ndarray:
    """Centre-crop [H, W, 3] uint8 to a square and resize it to resolution x resolution (antialiased)."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = torch.from_numpy(np.ascontiguousarray(image[top : top + side, left : left + side]))
    if side == resolution:
        return crop.numpy()
    x = crop.permute(2, 0, 1)[None].float()
    x = torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True,
                                        align_corners=False)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


class DecodedCache:
    """Decodes clips once per settings and serves their arrays from `cache_dir`."""

    def __init__(self, cache_dir: Path, settings: DecodeSettings):
        self.settings = settings
        self.folder = Path(cache_dir) / settings.key()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SoundvjError(f"data.cache_dir {str(cache_dir)!r}: cannot be created ({e.strerror or e})") from None
        self._front_end = MelSpectrogramFrontEnd(settings.mel)

    def get(self, entry: ClipEntry, need_frames: int) -> DecodedClip | Problem:
        """The decoded clip, decoding it now if the cache lacks it, or the Problem that makes it unusable."""
        try:
            key = _clip_key(entry.path)
        except OSError as e:
            return Problem(entry.path, "unreadable", f"unreadable: {e.strerror or e}")
        meta_path = self.folder / f"{key}.json"
        mel_path = self.folder / f"{key}.mel.npy"
        frames_path = self.folder / f"{key}.frames.npy" if self.settings.resolution else None
        meta = None
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                meta = None
            if meta is not None and meta.get("problem") is None:
                missing = not mel_path.exists() or (frames_path is not None and not frames_path.exists())
                meta = None if missing else meta
        if meta is None:
            meta = self._decode(entry, mel_path, frames_path)
            write_bytes_atomic(meta_path, json.dumps(meta).encode())
        if meta.get("problem"):
            return Problem(entry.path, meta["problem"]["kind"], meta["problem"]["reason"])
        if meta["frames"] < need_frames:
            return Problem(entry.path, "too-short",
                           f"too short: {meta['frames']} frames at {self.settings.fps:g} fps, expected at least {need_frames}")
        starts = meta.get("mel_starts")
        return DecodedClip(entry, meta["frames"], mel_path, frames_path,
                           tuple(starts) if starts is not None else None, int(meta.get("window_frames", 0)))

    def _decode(self, entry: ClipEntry, mel_path: Path, frames_path: Path | None) -> dict:
        s = self.settings
        try:
            samples = load_mono(entry.path, s.mel.sample_rate, seconds=s.max_seconds or None)
        except SoundvjError as e:
            return {"problem": {"kind": "unreadable", "reason": f"unreadable: {_tail(str(e))}"}}
        problem = check_audio(samples, s.mel.sample_rate, entry.path, s.min_seconds, s.silence_db)
        if problem is not None:
            return {"problem": {"kind": problem.kind, "reason": problem.reason}}
        count = num_video_frames(samples.shape[0], s.mel.sample_rate, s.fps)
        if frames_path is not None:
            try:
                frames = decode_frames(entry.path, s.fps, count, s.resolution)
            except SoundvjError as e:
                return {"problem": {"kind": "unreadable", "reason": f"unreadable: {_tail(str(e))}"}}
            count = min(count, frames.shape[0])
            _save_npy(frames_path, frames[:count])
        window = WindowConfig(fps=s.fps, window_seconds=s.window_seconds)
        windows = mel_windows(samples, s.mel, window, num_frames=count, front_end=self._front_end)
        starts = [frame_end_sample(t, s.mel.sample_rate, s.fps) // s.mel.hop for t in range(count)]
        strip = pack_windows(windows, starts)
        meta = {"problem": None, "frames": count, "path": str(entry.path), "window_frames": windows.shape[-1]}
        if strip is None:
            _save_npy(mel_path, windows.numpy().astype(np.float32, copy=False))
            meta["mel_starts"] = None
        else:
            _save_npy(mel_path, strip.numpy())
            meta["mel_starts"] = [m - starts[0] for m in starts]
        return meta


def pack_windows(windows: torch.Tensor, last_mel: list[int]) -> torch.Tensor | None:
    """Windows [T, n_mels, W] whose window t starts at column last_mel[t] - last_mel[0] of one strip.

    Returns the strip [n_mels, M], or None unless every window cut from it equals the given one exactly.
    """
    count, n_mels, w = windows.shape
    if count == 0:
        return None
    starts = torch.tensor(last_mel) - last_mel[0]
    strip = windows.new_zeros((n_mels, int(starts[-1]) + w))
    for t in range(count):
        strip[:, int(starts[t]) : int(starts[t]) + w] = windows[t]
    cut = strip.unfold(1, w, 1).index_select(1, starts).permute(1, 0, 2)
    return strip.contiguous() if torch.equal(cut, windows) else None


def _tail(message: str) -> str:
    # Messages start with "<kind> file '<path>': "; the caller names the file already.
    head, sep, rest = message.partition("': ")
    return rest if sep else message


def open_array(path: Path) -> np.ndarray:
    """A cached array, memory-mapped read-only."""
    return np.load(path, mmap_mode="r")


def default_cache_dir(data_path: str | Path) -> Path:
    """`DIR/.soundvj-cache` for a folder dataset, `<csv folder>/.soundvj-cache` for a CSV."""
    root = Path(data_path)
    return (root.parent if root.is_file() else root) / ".soundvj-cache"


__all__ = ["DecodeSettings", "DecodedCache", "DecodedClip", "decode_frames", "default_cache_dir", "open_array"]
