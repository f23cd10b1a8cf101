"""Reading the sound sources and cutting them into clips, held-out recordings and the demo walk.

All audio here is mono float32 at `SAMPLE_RATE`. Training clips are cut at seeded random places of a
class's training recordings: a source (package) is drawn first, by the square root of its seconds with
no source above `MAX_SOURCE_SHARE` where the class has enough sources (so one long recording does not
make the class), then one of its recordings by length; with a small speed change (0.9-1.1x, pitch moves with
it) so that short sources give varied clips; a source shorter than a clip is looped with crossfades.
Every clip is loudness-normalised (RMS -20 dBFS, peak at most -1 dBFS), so the class is in the sound's
character, not its level.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import wave
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.atomic_write import atomic_open
from core.errors import SoundvjError
from training.data.demo.sources import MAX_SOURCE_SHARE, SoundSource

SAMPLE_RATE = 44100
TARGET_RMS_DB = -20.0
PEAK_LIMIT = 10 ** (-1 / 20)
# Speed factors as source rates that share a large divisor with 44.1 kHz (a cheap exact sinc resample).
SPEED_FACTORS = (0.9, 0.95, 1.0, 1.05, 1.1)


@dataclass(frozen=True)
class Recording:
    """A source's samples, with the credit text as the package states it."""

    source: SoundSource
    samples: np.ndarray  # float32 [n] at SAMPLE_RATE
    credit: str

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def read_opensfx_catalogue(path: Path) -> list[tuple[str, bytes]]:
    """(name, RIFF wav bytes) of every sample in an OpenTTD `.cat` sound catalogue.

    Layout: a table of (offset, size) uint32 pairs (the first offset / 8 is the count); each entry is a
    length byte, the name (NUL-terminated) and a RIFF WAVE file.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SoundvjError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        first = struct.unpack_from("<I", data, 0)[0] & 0x7FFFFFFF
        count = first // 8
        if count == 0 or first % 8 or first > len(data):
            raise ValueError(f"a table of {first} bytes")
        entries = []
        for i in range(count):
            offset, size = struct.unpack_from("<II", data, i * 8)
            offset &= 0x7FFFFFFF
            if offset + size > len(data) or size < 1:
                raise ValueError(f"entry {i} runs past the end")
            name_len = data[offset]
            name = data[offset + 1 : offset + 1 + name_len].rstrip(b"\0").decode("latin-1")
            entries.append((name, data[offset + 1 + name_len : offset + size]))
        return entries
    except (struct.error, ValueError) as e:
        raise SoundvjError(f"{path}: not an OpenTTD sound catalogue ({e})") from None


def decode_wav_bytes(blob: bytes, where: str) -> tuple[np.ndarray, int]:
    """(mono float32 samples, sample rate) of an 8- or 16-bit PCM RIFF WAVE in memory."""
    try:
        with wave.open(io.BytesIO(blob)) as w:
            channels, width, rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(frames)
    except (wave.Error, EOFError) as e:
        raise SoundvjError(f"{where}: not a PCM WAVE sample ({e})") from None
    if width == 2:
        x = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    elif width == 1:
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    else:
        raise SoundvjError(f"{where}: {8 * width}-bit samples; expected 8 or 16-bit PCM")
    if channels > 1:
        x = x[: len(x) // channels * channels].reshape(-1, channels).mean(axis=1)
    return x, rate


def _resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    # torch and torchaudio only when a recording needs resampling: the scenes and images need neither
    import torch

    from core.audio.resampling import resample

    if from_rate == to_rate:
        return x.astype(np.float32, copy=False)
    return resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), from_rate, to_rate).numpy()


def _decode_file(path: Path) -> np.ndarray:
    from core.audio.decode import load_mono  # PyAV: optional in core, needed only to decode recordings

    return load_mono(path, SAMPLE_RATE).numpy()


def _decode_member(archive: Path, member: str, archives: dict) -> np.ndarray:
    """A sound stored in a zip archive (decoded through a temporary file: the decoder opens paths)."""
    try:
        if archive not in archives:
            archives[archive] = zipfile.ZipFile(archive)
        data = archives[archive].read(member)
    except KeyError:
        raise SoundvjError(f"{archive}: has no member {member!r}; expected the package's sound") from None
    except (OSError, zipfile.BadZipFile) as e:
        raise SoundvjError(f"{archive}: cannot be read as a zip archive ({e})") from None
    fd, name = tempfile.mkstemp(suffix=Path(member).suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return _decode_file(Path(name))
    finally:
        os.unlink(name)


def load_recording(source: SoundSource, root: Path, cache: dict | None = None) -> Recording:
    """The source's samples (its span only) at SAMPLE_RATE, read from `root/<package>/<path>`.
    `cache` keeps parsed `.cat` catalogues and open archives between calls."""
    cache = cache if cache is not None else {}
    path = root / source.package / source.path
    if not path.exists():
        raise SoundvjError(f"{path}: not found (from package {source.package}); expected the file the package installs")
    if source.cat_index is not None:
        catalogues = cache.setdefault("catalogues", {})
        if path not in catalogues:
            catalogues[path] = read_opensfx_catalogue(path)
        entries = catalogues[path]
        if source.cat_index >= len(entries):
            raise SoundvjError(f"{path}: has {len(entries)} samples; expected sample {source.cat_index}")
        name, blob = entries[source.cat_index]
        x, rate = decode_wav_bytes(blob, f"{path}#{source.cat_index}")
        samples = _resample(x, rate, SAMPLE_RATE)
        credit = name
    elif source.member is not None:
        samples = _decode_member(path, source.member, cache.setdefault("archives", {}))
        credit = source.credit
    else:
        samples = _decode_file(path)
        credit = source.credit
    start = int(round(source.start * SAMPLE_RATE))
    end = len(samples) if source.end is None else int(round(source.end * SAMPLE_RATE))
    samples = np.ascontiguousarray(samples[start:end], dtype=np.float32)
    if len(samples) < SAMPLE_RATE // 2:
        raise SoundvjError(f"{source.file}: {len(samples) / SAMPLE_RATE:.2f} s in the chosen span; expected at least 0.5 s")
    return Recording(source, samples, credit)


def normalise(x: np.ndarray) -> np.ndarray:
    """RMS to TARGET_RMS_DB, then scaled down if the peak would pass PEAK_LIMIT."""
    x = x.astype(np.float32) - float(np.mean(x))
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    if rms <= 1e-9:
        return x
    x = x * (10 ** (TARGET_RMS_DB / 20) / rms)
    peak = float(np.abs(x).max())
    return (x * (PEAK_LIMIT / peak) if peak > PEAK_LIMIT else x).astype(np.float32)


def loop_to(x: np.ndarray, n: int, fade: int) -> np.ndarray:
    """`x` repeated with `fade`-sample equal-power crossfades until it is `n` samples long."""
    if len(x) >= n:
        return x[:n].copy()
    fade = max(1, min(fade, len(x) // 3))
    t = np.linspace(0, np.pi / 2, fade, dtype=np.float32)
    fade_in, fade_out = np.sin(t), np.cos(t)
    out = x.copy()
    while len(out) < n:
        head = out[:-fade]
        joint = out[-fade:] * fade_out + x[:fade] * fade_in
        out = np.concatenate([head, joint, x[fade:]])
    return out[:n]


def change_speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play `x` `factor` times faster (pitch goes up with it)."""
    if factor == 1.0:
        return x
    return _resample(x, int(round(SAMPLE_RATE * factor)), SAMPLE_RATE)


def source_shares(recordings: list[Recording], cap: float = MAX_SOURCE_SHARE) -> dict[str, float]:
    """Each source's (package's) share of a class's training clips: the square root of its seconds,
    normalised, then no share above `cap` (the excess spread over the others in proportion) when there
    are enough sources for that (more than 1 / cap); else equal shares."""
    seconds: dict[str, float] = {}
    for r in recordings:
        seconds[r.source.package] = seconds.get(r.source.package, 0.0) + r.seconds
    weights = {k: float(np.sqrt(v)) for k, v in seconds.items()}
    if len(weights) * cap <= 1.0:
        return {k: 1.0 / len(weights) for k in weights}
    shares = {k: w / sum(weights.values()) for k, w in weights.items()}
    for _ in range(len(shares)):
        over = {k for k, v in shares.items() if v > cap + 1e-12}
        if not over:
            break
        excess = sum(shares[k] - cap for k in over)
        free = {k: v for k, v in shares.items() if k not in over and v < cap}
        for k in over:
            shares[k] = cap
        total_free = sum(free.values())
        for k, v in free.items():
            shares[k] = v + excess * v / total_free
    return shares


def cut_training_clip(recordings: list[Recording], rng: np.random.Generator, seconds: float,
                      shares: dict[str, float] | None = None) -> tuple[np.ndarray, Recording, float, float]:
    """(normalised clip, the recording it is from, start second, speed) of one seeded training clip: a
    source by `shares` (default `source_shares`), then one of its recordings by length."""
    shares = shares or source_shares(recordings)
    names = sorted(shares)
    p = np.array([shares[k] for k in names], dtype=np.float64)
    package = names[int(rng.choice(len(names), p=p / p.sum()))]
    mine = [r for r in recordings if r.source.package == package]
    weights = np.array([max(r.seconds, seconds / 2) for r in mine], dtype=np.float64)
    rec = mine[int(rng.choice(len(mine), p=weights / weights.sum()))]
    speed = float(rng.choice(SPEED_FACTORS))
    n = int(round(seconds * SAMPLE_RATE))
    need = int(np.ceil(n * speed)) + 16
    x = rec.samples
    if len(x) > need:
        start = int(rng.integers(0, len(x) - need + 1))
        span = x[start : start + need]
    else:
        start = int(rng.integers(0, len(x)))
        span = loop_to(np.roll(x, -start), need, int(0.05 * SAMPLE_RATE))
    clip = change_speed(span, speed)[:n]
    if len(clip) < n:
        clip = np.pad(clip, (0, n - len(clip)))
    return normalise(clip), rec, start / SAMPLE_RATE, speed


def split_heldout(rec: Recording, seconds: float, min_seconds: float = 1.2) -> list[tuple[float, np.ndarray]]:
    """(start second, samples) pieces of a held-out recording, each `seconds` long; a shorter tail joins
    the last piece (or stands alone when it is the whole recording)."""
    n = int(round(seconds * SAMPLE_RATE))
    x = rec.samples
    starts = list(range(0, max(1, len(x) - n + 1), n))
    pieces = []
    for i, s in enumerate(starts):
        end = s + n if i < len(starts) - 1 else len(x)
        if end - s >= min_seconds * SAMPLE_RATE:
            pieces.append((s / SAMPLE_RATE, normalise(x[s:end])))
    return pieces


def demo_walk(heldout: dict[str, list[Recording]], order: tuple[str, ...], segment_seconds: float,
              fade_seconds: float) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """A soundscape through the classes in `order`: each `segment_seconds` of the given recordings
    (joined, looped when short), crossfaded over `fade_seconds`; returns (samples, [(start s, class)]).
    A class's start is the middle of the crossfade into it."""
    n_seg = int(round(segment_seconds * SAMPLE_RATE))
    fade = int(round(fade_seconds * SAMPLE_RATE))
    out = np.zeros(0, dtype=np.float32)
    starts = []
    t = np.linspace(0, np.pi / 2, fade, dtype=np.float32)
    for i, label in enumerate(order):
        joined = np.concatenate([normalise(r.samples) for r in heldout[label]])
        seg = loop_to(joined, n_seg + fade, int(0.1 * SAMPLE_RATE))
        if i == 0:
            out = seg
            starts.append((0.0, label))
        else:
            mix = out[-fade:] * np.cos(t) + seg[:fade] * np.sin(t)
            starts.append(((len(out) - fade / 2) / SAMPLE_RATE, label))
            out = np.concatenate([out[:-fade], mix, seg[fade:]])
    return normalise(out), starts


def write_wav(path: Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """16-bit PCM mono WAVE, written atomically (core.atomic_write)."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f, wave.open(f, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
