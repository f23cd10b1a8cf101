"""Shared bits of the live app's tests: signals written as real audio files, and polling with a timeout."""

import time
from pathlib import Path

import numpy as np

from tests.test_audio_decode import write_audio

SR = 44100


def write_wav(path: Path, seconds: float, kind: str = "noise") -> Path:
    """A mono 16-bit wav of white noise (rms 0.3) or an 880 Hz tone (amplitude 0.4)."""
    n = int(seconds * SR)
    if kind == "noise":
        x = 0.3 * np.random.default_rng(0).standard_normal(n)
    else:
        x = 0.4 * np.sin(2 * np.pi * 880 * np.arange(n) / SR)
    return write_audio(path, np.clip(x, -1, 1)[None, :], SR, "pcm_s16le", "s16", "mono", container_format="wav")


def wait_for(predicate, timeout: float) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass; returns its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())
