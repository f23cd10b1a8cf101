"""Synthetic beat tracks for the analysis and beat clock tests: hits on a steady noise floor.

A hit is a click (a 10 ms noise burst decaying with a 2 ms time constant: a rimshot, a metronome)
or a kick (a 250 ms sine gliding from 150 Hz down to 50 Hz, decaying over 80 ms). The floor is white
noise at -40 dBFS RMS, on from the first sample; `snr_db` is the hit's power over its first 10 ms
against the floor's power. Hits start at `first` seconds and repeat every 60 / bpm seconds.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 44100
FLOOR_DBFS = -40.0


def hit(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "click":
        n = int(0.01 * SAMPLE_RATE)
        return np.exp(-np.arange(n) / (0.002 * SAMPLE_RATE)) * rng.standard_normal(n)
    if kind == "kick":
        t = np.arange(int(0.25 * SAMPLE_RATE)) / SAMPLE_RATE
        frequency = 50.0 + 100.0 * np.exp(-t / 0.03)
        return np.sin(2 * np.pi * np.cumsum(frequency) / SAMPLE_RATE) * np.exp(-t / 0.08)
    raise ValueError(kind)


def beat_track(
    bpm: float, seconds: float, snr_db: float = 20.0, kind: str = "click", first: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(mono float32 samples at 44.1 kHz, the hits' start times in seconds)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    floor = 10 ** (FLOOR_DBFS / 20)
    samples = floor * rng.standard_normal(n)
    shape = hit(kind, rng)
    head = shape[: int(0.01 * SAMPLE_RATE)]
    shape = shape / np.sqrt(np.mean(head**2)) * floor * 10 ** (snr_db / 20)
    times = np.arange(first, seconds - 0.3, 60.0 / bpm)
    for t in times:
        i = int(round(t * SAMPLE_RATE))
        samples[i : i + shape.size] += shape[: n - i]
    return samples.astype(np.float32), times
