"""A procedural audio-visual dataset (`soundvj data synth DIR`): labelled mp4 clips with sound.

Each class has a sound of its own character and a look of its own (colour, texture, motion), and
within a clip the picture moves with the sound's events, so the whole chain (CLIP, audio encoder,
inverter, stepper, evaluation) can be trained and tested here without outside data:

| class   | sound                                              | look                                             |
|---------|----------------------------------------------------|--------------------------------------------------|
| rain    | broadband hiss with dense short noise bursts       | dark blue, bright streaks falling                |
| hum     | low harmonic tone (55-110 Hz) with slow vibrato    | red-orange rings pulsing outwards                |
| chirps  | short upward sweeps (2-5 kHz) a few times a second | green field, yellow dots flashing with each chirp |
| crackle | sparse loud clicks over a low rumble               | black, orange flicker rising from the bottom     |
| wind    | low-passed noise swelling and fading slowly        | pale cyan bands drifting sideways                |

Clips are written with `core.video_writer.Mp4Writer` (H.264 + AAC, atomic) as `DIR/<class>/<class>-NNN.mp4`.
Every clip is a pure function of (seed, class, index), so a dataset is reproducible.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from core.errors import SoundvjError

SAMPLE_RATE = 44100


@dataclass(frozen=True)
class SynthSettings:
    clips_per_class: int = 12
    seconds: float = 4.0
    size: int = 64
    fps: float = 24.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.clips_per_class <= 10000:
            raise SoundvjError(f"--clips-per-class {self.clips_per_class}: expected 1 .. 10000")
        if not 0.5 <= self.seconds <= 600:
            raise SoundvjError(f"--seconds {self.seconds:g}: expected 0.5 .. 600")
        if not 16 <= self.size <= 1024 or self.size % 2:
            raise SoundvjError(f"--size {self.size}: expected an even number of pixels in 16 .. 1024")
        if not 1 <= self.fps <= 120:
            raise SoundvjError(f"--fps {self.fps:g}: expected 1 .. 120")


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in [0, 1): (y, x), each [size, size]."""
    axis = (np.arange(size) + 0.5) / size
    return np.meshgrid(axis, axis, indexing="ij")


def _envelope_at_frames(env: np.ndarray, frames: int, fps: float) -> np.ndarray:
    """The audio envelope sampled at each frame's time (the sound's last ~40 ms), in [0, 1]."""
    out = np.zeros(frames, dtype=np.float32)
    span = int(0.04 * SAMPLE_RATE)
    for t in range(frames):
        end = min(len(env), int(t / fps * SAMPLE_RATE) + 1)
        out[t] = env[max(0, end - span) : end].max() if end > 0 else 0.0
    peak = out.max()
    return out / peak if peak > 0 else out


def _bursts(rng: np.random.Generator, n: int, rate: float, decay_s: float) -> np.ndarray:
    """An envelope of Poisson-timed, exponentially decaying events (random heights)."""
    env = np.zeros(n, dtype=np.float32)
    count = rng.poisson(rate * n / SAMPLE_RATE)
    starts = rng.integers(0, n, size=count)
    length = int(decay_s * 6 * SAMPLE_RATE)
    shape = np.exp(-np.arange(length) / (decay_s * SAMPLE_RATE)).astype(np.float32)
    for s, h in zip(starts, rng.uniform(0.3, 1.0, size=count)):
        seg = env[s : s + length]
        np.maximum(seg, h * shape[: len(seg)], out=seg)
    return env


def _lowpass(x: np.ndarray, cutoff: float) -> np.ndarray:
    """A gentle low-pass by FFT (brick-wall above `cutoff` with a smooth roll-off)."""
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    spectrum *= 1 / (1 + (freqs / cutoff) ** 4)
    return np.fft.irfft(spectrum, n=len(x)).astype(np.float32)


def _rain(rng, n, frames, fps, size):
    env = _bursts(rng, n, rate=rng.uniform(150, 300), decay_s=0.004)
    audio = 0.08 * rng.standard_normal(n) + 0.5 * env * rng.standard_normal(n)
    level = _envelope_at_frames(env, frames, fps)
    y, x = _grid(size)
    drops = rng.uniform(0, 1, size=(40, 2))
    speed = rng.uniform(0.8, 1.4)
    base = np.array([0.05, 0.10, 0.30]) + rng.uniform(-0.03, 0.03, 3)
    video = np.empty((frames, size, size, 3), dtype=np.float32)
    for t in range(frames):
        img = np.broadcast_to(base, (size, size, 3)).copy()
        for dy, dx in drops:
            cy = (dy + speed * t / fps) % 1.0
            streak = (np.abs(x - dx) < 0.012) & (y > cy - 0.08) & (y <= cy)
            img[streak] = [0.6, 0.75, 1.0]
        video[t] = img * (0.75 + 0.25 * level[t])
    return audio, video


def _hum(rng, n, frames, fps, size):
    f0 = rng.uniform(55, 110)
    tt = np.arange(n) / SAMPLE_RATE
    phase = 2 * np.pi * f0 * tt + 0.3 * np.sin(2 * np.pi * 0.5 * tt)
    audio = sum(a * np.sin(k * phase) for k, a in ((1, 0.5), (2, 0.25), (3, 0.12), (4, 0.06)))
    audio *= 0.8 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * tt)
    y, x = _grid(size)
    cy, cx = rng.uniform(0.35, 0.65, 2)
    r = np.hypot(y - cy, x - cx)
    rings = rng.uniform(10, 18)
    video = np.empty((frames, size, size, 3), dtype=np.float32)
    for t in range(frames):
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * (rings * r - 0.8 * t / fps))
        video[t, ..., 0] = 0.35 + 0.6 * wave
        video[t, ..., 1] = 0.08 + 0.3 * wave
        video[t, ..., 2] = 0.05
    return audio, video


def _chirps(rng, n, frames, fps, size):
    audio = 0.01 * rng.standard_normal(n)
    env = np.zeros(n, dtype=np.float32)
    length = int(0.08 * SAMPLE_RATE)
    tt = np.arange(length) / SAMPLE_RATE
    events = []
    for s in np.sort(rng.integers(0, max(1, n - length), size=rng.poisson(4 * n / SAMPLE_RATE) + 1)):
        f_lo, f_hi = rng.uniform(1800, 2500), rng.uniform(4000, 5500)
        sweep = np.sin(2 * np.pi * (f_lo * tt + (f_hi - f_lo) * tt**2 / (2 * tt[-1])))
        win = np.sin(np.pi * tt / tt[-1]) ** 2
        audio[s : s + length] += 0.5 * sweep * win
        env[s : s + length] = np.maximum(env[s : s + length], win)
        events.append((s / SAMPLE_RATE, rng.uniform(0.1, 0.9, 2)))
    y, x = _grid(size)
    green = np.array([0.1, 0.45, 0.15]) + rng.uniform(-0.04, 0.04, 3)
    video = np.empty((frames, size, size, 3), dtype=np.float32)
    for t in range(frames):
        img = np.broadcast_to(green, (size, size, 3)).copy()
        now = t / fps
        for when, (dy, dx) in events:
            age = now - when
            if 0 <= age < 0.3:
                dot = np.hypot(y - dy, x - dx) < 0.07 * (1 - age / 0.3) + 0.02
                img[dot] = [1.0, 0.95, 0.2]
        video[t] = img
    return audio, video


def _crackle(rng, n, frames, fps, size):
    env = _bursts(rng, n, rate=rng.uniform(15, 40), decay_s=0.0015)
    rumble = _lowpass(rng.standard_normal(n).astype(np.float32), 150.0)
    audio = 0.9 * env * np.sign(rng.standard_normal(n)) + 0.6 * rumble / (np.abs(rumble).max() + 1e-9) * 0.3
    level = _envelope_at_frames(env, frames, fps)
    y, _ = _grid(size)
    video = np.empty((frames, size, size, 3), dtype=np.float32)
    coarse = max(4, size // 8)
    for t in range(frames):
        noise = rng.uniform(0, 1, (coarse, coarse))
        noise = np.kron(noise, np.ones((size // coarse, size // coarse)))[:size, :size]
        heat = np.clip((y - 0.3) / 0.7, 0, 1) * (0.5 + 0.5 * noise) * (0.6 + 0.4 * level[t])
        video[t, ..., 0] = np.clip(1.6 * heat, 0, 1)
        video[t, ..., 1] = np.clip(0.9 * heat - 0.1, 0, 1)
        video[t, ..., 2] = np.clip(0.2 * heat - 0.1, 0, 1)
    return audio, video


def _wind(rng, n, frames, fps, size):
    tt = np.arange(n) / SAMPLE_RATE
    swell = 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(0.15, 0.4) * tt + rng.uniform(0, 2 * np.pi))
    noise = _lowpass(rng.standard_normal(n).astype(np.float32), rng.uniform(300, 600))
    audio = 0.6 * swell * noise / (np.abs(noise).max() + 1e-9)
    y, x = _grid(size)
    speed = rng.uniform(0.3, 0.6)
    freq = rng.uniform(3, 6)
    video = np.empty((frames, size, size, 3), dtype=np.float32)
    for t in range(frames):
        s = swell[min(n - 1, int(t / fps * SAMPLE_RATE))]
        band = 0.5 + 0.5 * np.sin(2 * np.pi * (freq * y + 0.6 * np.sin(2 * np.pi * (x - speed * t / fps))))
        video[t, ..., 0] = 0.55 + 0.35 * band * s
        video[t, ..., 1] = 0.75 + 0.2 * band * s
        video[t, ..., 2] = 0.85 + 0.15 * band
    return audio, video


CLASSES: dict[str, Callable] = {"rain": _rain, "hum": _hum, "chirps": _chirps, "crackle": _crackle, "wind": _wind}


def clip_seed(seed: int, name: str, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}/{index}".encode()).digest()[:8], "little")


def make_clip(name: str, index: int, settings: SynthSettings) -> tuple[np.ndarray, np.ndarray]:
    """(mono audio float32 [n] at 44.1 kHz in [-1, 1], frames uint8 [T, size, size, 3]) of one clip."""
    rng = np.random.default_rng(clip_seed(settings.seed, name, index))
    n = int(round(settings.seconds * SAMPLE_RATE))
    frames = int(round(settings.seconds * settings.fps))
    audio, video = CLASSES[name](rng, n, frames, settings.fps, settings.size)
    audio = np.asarray(audio, dtype=np.float32)
    audio = 0.7 * audio / max(1e-9, float(np.abs(audio).max()))
    return audio, (np.clip(video, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_dataset(out_dir: str | Path, settings: SynthSettings, progress: Callable[[str], None] | None = None) -> list[Path]:
    """Write every class's clips under `out_dir/<class>/`; returns the paths written."""
    from core.video_writer import Mp4Writer  # PyAV: optional in core; make_clip needs none

    root = Path(out_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SoundvjError(f"{root}: cannot create the dataset folder ({e.strerror or e})") from None
    written = []
    for name in CLASSES:
        folder = root / name
        folder.mkdir(exist_ok=True)
        for index in range(settings.clips_per_class):
            path = folder / f"{name}-{index:03d}.mp4"
            audio, video = make_clip(name, index, settings)
            # Lossless, like `data demo`'s clips: at crf 18 x264 gave other frames from build to build here.
            with Mp4Writer(path, settings.fps, settings.size, settings.size, audio=audio[None],
                           sample_rate=SAMPLE_RATE, crf=0) as writer:
                for frame in video:
                    writer.write(frame)
            written.append(path)
            if progress is not None:
                progress(str(path))
    return written
