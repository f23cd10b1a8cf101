"""Generators the synthesis benchmarks time: the embedded default (the shipped trained model), the
random-weights one, or a StyleGAN3-T of a given size
(seeded, so every benchmark times the same weights)."""

from __future__ import annotations

import torch

import core.stylegan3.networks as networks
from core.default_model import DEFAULT_GENERATOR_CONFIG, default_generator
from core.model_file import load_generator


def build(config: tuple[int, int, int] | str | None) -> networks.Generator:
    """`None`: the embedded default (what `render` and `live` run); "random": the random-weights one;
    (resolution, channel_base, channel_max): a seeded StyleGAN3-T."""
    if config is None:
        return load_generator(None, device="cpu")
    if config == "random":
        return default_generator()
    res, base, cmax = config
    torch.manual_seed(0)
    kwargs = dict(DEFAULT_GENERATOR_CONFIG, img_resolution=res, channel_base=base, channel_max=cmax)
    return networks.Generator(**kwargs).eval().requires_grad_(False)


def sample_ws(G: networks.Generator, batch: int, seed: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """Mapped latents [batch, num_ws, w_dim] from seeded z (the first class when G is class-conditional)."""
    z = torch.randn(batch, G.z_dim, generator=torch.Generator(device).manual_seed(seed), device=device)
    c = torch.zeros(batch, G.c_dim, device=device)
    if G.c_dim:
        c[:, 0] = 1
    return G.mapping(z, c)
