"""A procedurally synthesised demo soundscape: rain, rumble, wind, crackle, with short crossfades.

Lets the app, tests and benchmarks run with no audio file, and gives the sound models four clearly
different textures (close to the paper's Landscape classes: raining, thunderstorm, wind noise, fire
crackling). numpy only: filtering is done by shaping spectra with FFTs, so no scipy is needed.
Deterministic for a seed: every section draws from its own generator seeded by (seed, section).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from core.errors import SoundvjError

SECTION_NAMES = ("rain", "rumble", "wind", "crackle")
_MAX_CROSSFADE_SECONDS = 0.5
_PEAK = 0.9  # each section's peak before crossfading; the mix is then kept inside [-1, 1]


def _check_args(seconds: object, sample_rate: object = 44100) -> None:
    number = isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds)
    if not number or not 1 <= seconds <= 3600:
        raise SoundvjError(f"demo seconds: expected a number in [1, 3600], got {seconds!r}")
    if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or not 8000 <= sample_rate <= 192_000:
        raise SoundvjError(f"demo sample_rate: expected an integer in [8000, 192000] Hz, got {sample_rate!r}")


def demo_sections(seconds: float = 24.0) -> list[tuple[str, float, float]]:
    """(name, start, end) of each section in seconds; crossfades are centred on the boundaries."""
    _check_args(seconds)
    length = seconds / len(SECTION_NAMES)
    return [(name, i * length, (i + 1) * length) for i, name in enumerate(SECTION_NAMES)]


def _crossfade_seconds(seconds: float) -> float:
    return min(_MAX_CROSSFADE_SECONDS, 0.25 * seconds / len(SECTION_NAMES))


# --- building blocks ---------------------------------------------------------------------------


def _band_gain(freqs: np.ndarray, low: float | None, high: float | None, order: int = 2) -> np.ndarray:
    """Butterworth-shaped magnitude response: a high-pass at `low` times a low-pass at `high`."""
    gain = np.ones_like(freqs)
    f = np.maximum(freqs, 1e-3)
    if low is not None:
        gain = gain / np.sqrt(1.0 + (low / f) ** (2 * order))
    if high is not None:
        gain = gain / np.sqrt(1.0 + (f / high) ** (2 * order))
    return gain


def _filtered_noise(
    rng: np.random.Generator, n: int, sr: int, low: float | None, high: float | None, order: int = 2
) -> np.ndarray:
    """White noise band-limited in the frequency domain, scaled to unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum *= _band_gain(np.fft.rfftfreq(n, 1.0 / sr), low, high, order)
    out = np.fft.irfft(spectrum, n)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def _slow_random(rng: np.random.Generator, n: int, sr: int, rate_hz: float) -> np.ndarray:
    """A smooth random curve in [0, 1] changing about `rate_hz` times a second (cosine-interpolated knots)."""
    knots = rng.random(int(math.ceil(n / sr * rate_hz)) + 2)
    pos = np.arange(n) / sr * rate_hz
    i = pos.astype(np.int64)
    frac = (1.0 - np.cos(np.pi * (pos - i))) / 2.0
    return knots[i] * (1.0 - frac) + knots[i + 1] * frac


def _poisson_times(rng: np.random.Generator, n: int, sr: int, rate_hz: float) -> np.ndarray:
    """Sample indices of a Poisson process with `rate_hz` events per second."""
    count = rng.poisson(rate_hz * n / sr)
    return np.sort(rng.integers(0, n, size=count))


def _add_event(out: np.ndarray, at: int, event: np.ndarray) -> None:
    end = min(out.shape[0], at + event.shape[0])
    out[at:end] += event[: end - at]


def _normalise_peak(x: np.ndarray, peak: float = _PEAK) -> np.ndarray:
    return x * (peak / (np.max(np.abs(x)) + 1e-12))


# --- the four textures -------------------------------------------------------------------------


def _rain(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Dense high-passed hiss with a fast flutter, plus droplet plinks and tiny clicks."""
    bed = _filtered_noise(rng, n, sr, 1500.0, min(12000.0, 0.45 * sr))
    bed *= 0.8 + 0.2 * _slow_random(rng, n, sr, 25.0)
    out = 0.25 * bed
    for at in _poisson_times(rng, n, sr, 45.0):
        freq = rng.uniform(2500.0, min(7000.0, 0.4 * sr))
        decay = rng.uniform(0.002, 0.008)
        t = np.arange(int(decay * 6 * sr)) / sr
        _add_event(out, at, rng.uniform(0.2, 0.6) * np.sin(2 * np.pi * freq * t) * np.exp(-t / decay))
    for at in _poisson_times(rng, n, sr, 120.0):
        _add_event(out, at, rng.uniform(-0.3, 0.3) * np.array([1.0, -0.6, 0.2]))
    return out


def _rumble(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Low-passed noise with slow swells and a thunder roll, over sub-bass sine swells."""
    t = np.arange(n) / sr
    roll = _filtered_noise(rng, n, sr, 20.0, 110.0, order=4)
    swell = 0.3 + 0.7 * _slow_random(rng, n, sr, 0.6) ** 2
    # One thunder roll: quick attack, long decay, somewhere in the first half.
    onset = rng.uniform(0.1, 0.5) * n / sr
    since = np.clip(t - onset, 0.0, None)
    thunder = np.where(t >= onset, (1.0 - np.exp(-since / 0.15)) * np.exp(-since / 1.8), 0.0)
    noise = roll * (swell + 1.5 * thunder)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    sub = np.sin(2 * np.pi * 42.0 * t + phase[0]) + 0.6 * np.sin(2 * np.pi * 57.0 * t + phase[1])
    sub *= np.sin(np.pi * t / rng.uniform(2.5, 3.5)) ** 2  # swells every ~3 s
    return noise + 0.8 * sub


def _wind(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Band-passed noise whose centre sweeps slowly (200 Hz .. 1.6 kHz), with gusty amplitude."""
    block, hop = 4096, 2048
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(block) / block)  # periodic Hann: sums to 1 at 50 %
    padded = n + 2 * block
    noise = rng.standard_normal(padded)
    t = np.arange(padded) / sr
    sweep = 0.5 + 0.5 * np.sin(2 * np.pi * t / rng.uniform(4.0, 6.0) + rng.uniform(0, 2 * np.pi))
    centre = 200.0 * 8.0 ** (0.7 * sweep + 0.3 * _slow_random(rng, padded, sr, 0.8))
    freqs = np.fft.rfftfreq(block, 1.0 / sr)
    out = np.zeros(padded)
    # Overlap-add of short blocks, each band-passed around its own centre: a time-varying filter.
    for start in range(0, padded - block + 1, hop):
        fc = centre[start + block // 2]
        piece = np.fft.rfft(noise[start : start + block] * window) * _band_gain(freqs, fc / 1.5, fc * 1.5, order=2)
        out[start : start + block] += np.fft.irfft(piece, block)
    out = out[block : block + n]
    out /= np.sqrt(np.mean(out**2)) + 1e-12
    gusts = 0.15 + 0.85 * _slow_random(rng, n, sr, 1.2) ** 2
    return out * gusts


def _crackle(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """A soft low bed with sparse, clustered impulses that decay within a few milliseconds."""
    out = 0.04 * _filtered_noise(rng, n, sr, 40.0, 600.0) + 0.01 * _filtered_noise(rng, n, sr, 2000.0, None)
    busy = _slow_random(rng, n, sr, 2.0)
    for at in _poisson_times(rng, n, sr, 40.0):
        if rng.random() > 0.3 + 0.7 * busy[at]:
            continue  # thinning by a slow curve makes crackles come in clusters
        decay = rng.uniform(0.0003, 0.003)
        length = max(3, int(decay * 6 * sr))
        burst = rng.standard_normal(length) * np.exp(-np.arange(length) / (decay * sr))
        _add_event(out, at, np.exp(rng.uniform(np.log(0.15), np.log(1.0))) * burst)
    return out


_SYNTHS = {"rain": _rain, "rumble": _rumble, "wind": _wind, "crackle": _crackle}


def demo_soundscape(seconds: float = 24.0, sample_rate: int = 44100, seed: int = 0) -> torch.Tensor:
    """Float32 mono [n] in [-1, 1]: rain, rumble, wind and crackle in equal sections (see `demo_sections`)."""
    _check_args(seconds, sample_rate)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise SoundvjError(f"demo seed: expected a non-negative integer, got {seed!r}")
    n = int(round(seconds * sample_rate))
    half_fade = _crossfade_seconds(seconds) / 2
    mix = np.zeros(n)
    for index, (name, start, end) in enumerate(demo_sections(seconds)):
        lo = max(0, int(round((start - half_fade) * sample_rate)))
        hi = min(n, int(round((end + half_fade) * sample_rate)))
        rng = np.random.default_rng([seed, index])
        part = _normalise_peak(_SYNTHS[name](rng, hi - lo, sample_rate))
        # Equal-power fades across each boundary keep loudness steady for uncorrelated textures.
        t = (np.arange(lo, hi) / sample_rate)
        gain = np.ones(hi - lo)
        if index > 0:
            ramp = np.clip((t - (start - half_fade)) / (2 * half_fade), 0.0, 1.0)
            gain *= np.sin(0.5 * np.pi * ramp)
        if index < len(SECTION_NAMES) - 1:
            ramp = np.clip((t - (end - half_fade)) / (2 * half_fade), 0.0, 1.0)
            gain *= np.cos(0.5 * np.pi * ramp)
        mix[lo:hi] += part * gain
    peak = np.max(np.abs(mix))
    if peak > 0.99:
        mix *= 0.99 / peak
    return torch.from_numpy(mix.astype(np.float32))
