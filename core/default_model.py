"""The random-weights generator: built from a fixed seed, so it needs no file.

It is not the default model. `default` names the trained model shipped in
`core/assets/default.safetensors` (a class-conditional StyleGAN3-T and its sound models; what it
was trained on and its credits are in `core/assets/CREDITS.md` and `soundvj info --credits`). This
generator is what `random` names, what `default` falls back to when that file is missing (a trimmed
install), and what tests and benchmarks use for sizes that do not change when the shipped model
does. Its weights are random, so it draws abstract, colourful patterns; the motion still follows
the sound through the (seeded) sound models.
"""

from __future__ import annotations

import copy
import functools

import torch

from core.stylegan3.networks import Generator

DEFAULT_SEED = 2022
# Small enough for 2 CPU cores; NVIDIA's layer structure (14 layers, num_ws 16) kept as in the paper.
DEFAULT_GENERATOR_CONFIG: dict = {
    "z_dim": 512,
    "c_dim": 0,
    "w_dim": 512,
    "img_resolution": 128,
    "img_channels": 3,
    "mapping_kwargs": {"num_layers": 2},
    "channel_base": 2048,
    "channel_max": 64,
    "conv_kernel": 3,
    "use_radial_filters": False,
    "magnitude_ema_beta": 0.5 ** (32 / 20000),
}
W_AVG_SAMPLES = 4096
CALIBRATION_SAMPLES = 8
TARGET_STD = 0.5  # per colour channel, in the generator's [-1, 1] output range


@functools.lru_cache(maxsize=1)
def _default_generator_cpu() -> Generator:
    rng_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(DEFAULT_SEED)
        G = Generator(**DEFAULT_GENERATOR_CONFIG)
        # A trained generator's w_avg is the mean of mapped z; compute it so truncation (psi) means the same.
        z = torch.randn(W_AVG_SAMPLES, G.z_dim)
        with torch.no_grad():
            G.mapping.w_avg.copy_(G.mapping(z, None)[:, 0].mean(dim=0))
            _calibrate_colours(G, torch.randn(CALIBRATION_SAMPLES, G.z_dim))
    finally:
        torch.random.set_rng_state(rng_state)  # building the default must not disturb the caller's seed
    return G.eval().requires_grad_(False)


def _calibrate_colours(G: Generator, z: torch.Tensor) -> None:
    """Untrained generators come out nearly grey; rescale the ToRGB layer so each colour channel has
    mean 0 and std TARGET_STD over random latents (a linear change of the last layer only)."""
    torgb = getattr(G.synthesis, G.synthesis.layer_names[-1])
    img = G.synthesis(G.mapping(z, None))
    mean, std = img.mean(dim=(0, 2, 3)), img.std(dim=(0, 2, 3))
    scale = TARGET_STD / std.clamp_min(1e-6)
    conv_mean = mean / G.synthesis.output_scale - torgb.bias  # output = output_scale * (conv + bias)
    torgb.weight.mul_(scale.view(-1, 1, 1, 1))
    torgb.bias.copy_(-scale * conv_mean)


def default_generator() -> Generator:
    """A fresh copy of the random-weights generator (CPU, eval mode), the same on every call."""
    return copy.deepcopy(_default_generator_cpu())  # callers may move or modify theirs
