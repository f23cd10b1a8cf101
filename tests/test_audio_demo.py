"""The synthetic demo soundscape: deterministic, bounded, and its four sections really differ."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.audio import MelConfig, MelSpectrogramFrontEnd, demo_sections, demo_soundscape
from core.errors import SoundvjError

SR = 44100


@pytest.fixture(scope="module")
def soundscape() -> torch.Tensor:
    return demo_soundscape(24.0, SR, seed=0)


def section_audio(x: torch.Tensor, seconds: float = 24.0) -> dict[str, np.ndarray]:
    """The middle of each section, away from the crossfades."""
    sections = demo_sections(seconds)
    return {name: x[int((s + 0.5) * SR) : int((e - 0.5) * SR)].double().numpy() for name, s, e in sections}


def spectral_centroid(x: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    return float((power * np.fft.rfftfreq(x.shape[0], 1 / SR)).sum() / power.sum())


def low_fraction(x: np.ndarray, below_hz: float = 200.0) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    return float(power[np.fft.rfftfreq(x.shape[0], 1 / SR) < below_hz].sum() / power.sum())


def kurtosis(x: np.ndarray) -> float:
    x = x - x.mean()
    return float((x**4).mean() / (x**2).mean() ** 2)


def envelope_variation(x: np.ndarray, block: int = 2205) -> float:
    rms = np.sqrt((x[: x.shape[0] // block * block].reshape(-1, block) ** 2).mean(1))
    return float(rms.std() / rms.mean())


def test_shape_dtype_range(soundscape):
    assert soundscape.shape == (24 * SR,) and soundscape.dtype == torch.float32
    assert float(soundscape.abs().max()) <= 1.0
    assert bool(torch.isfinite(soundscape).all())
    # No dropouts: every 0.25 s has sound, crossfades included.
    blocks = soundscape[: 96 * (SR // 4)].reshape(96, -1)
    assert float(blocks.pow(2).mean(1).sqrt().min()) > 0.005


def test_sections_tile_the_clip():
    sections = demo_sections(24.0)
    assert [name for name, _, _ in sections] == ["rain", "rumble", "wind", "crackle"]
    assert sections[0][1] == 0.0 and sections[-1][2] == 24.0
    assert all(a[2] == b[1] for a, b in zip(sections, sections[1:]))
    assert demo_sections(8.0)[1] == ("rumble", 2.0, 4.0)


def test_deterministic_for_a_seed_and_seeds_differ():
    a, b = demo_soundscape(4.0, SR, seed=3), demo_soundscape(4.0, SR, seed=3)
    assert torch.equal(a, b)
    c = demo_soundscape(4.0, SR, seed=4)
    assert float((a - c).abs().mean()) > 0.01


def test_sections_sound_different(soundscape):
    parts = section_audio(soundscape)
    centroid = {name: spectral_centroid(x) for name, x in parts.items()}
    # Rain is bright hiss, rumble is sub-bass, wind sits in between.
    assert centroid["rain"] > 3000 > centroid["wind"] > 300 > centroid["rumble"]
    assert low_fraction(parts["rumble"]) > 0.9
    assert low_fraction(parts["rain"]) < 0.05
    # Crackle is sparse impulses: heavy-tailed, unlike the dense rain.
    assert kurtosis(parts["crackle"]) > 20 > 3 * kurtosis(parts["rain"])
    # Wind gusts: its loudness wanders far more than the steady rain's.
    assert envelope_variation(parts["wind"]) > 3 * envelope_variation(parts["rain"])


def test_sections_differ_in_the_models_features(soundscape):
    # What the sound models actually see: the mean log-mel profiles of the sections are far apart.
    front_end = MelSpectrogramFrontEnd(MelConfig())
    profiles = {name: front_end(torch.from_numpy(x).float()).mean(1) for name, x in section_audio(soundscape).items()}
    names = list(profiles)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert float((profiles[a] - profiles[b]).abs().mean()) > 0.1, (a, b)


def test_other_sample_rates_and_bad_arguments():
    x = demo_soundscape(2.0, 16000, seed=1)
    assert x.shape == (32000,) and float(x.abs().max()) <= 1.0
    for kwargs, field in (({"seconds": 0.0}, "seconds"), ({"sample_rate": 100}, "sample_rate"), ({"seed": -1}, "seed")):
        with pytest.raises(SoundvjError, match=f"demo {field}"):
            demo_soundscape(**kwargs)
