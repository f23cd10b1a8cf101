"""A tiny generator + sound models so pipeline and render tests run in seconds on 2 cores."""

import torch

from core.audio.mel import MelConfig
from core.model import SoundvjModel, seeded_sound_models
from core.stylegan3.networks import Generator

TINY_CONFIG = dict(z_dim=64, c_dim=0, w_dim=64, img_resolution=32, img_channels=3, channel_base=1024, channel_max=32)


def tiny_model(**overrides) -> SoundvjModel:
    torch.manual_seed(0)
    G = Generator(**(TINY_CONFIG | overrides)).eval().requires_grad_(False)
    with torch.no_grad():
        G.mapping.w_avg.copy_(G.mapping(torch.randn(256, G.z_dim), None)[:, 0].mean(0))
    return SoundvjModel(G, seeded_sound_models(G, width=8), MelConfig(), "tiny test model", True)


def tone(seconds: float, sr: int = 44100, freq: float = 440.0, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return amp * torch.sin(2 * torch.pi * freq * t)
