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


def tiny_embedding_model(head_hidden: int = 16) -> SoundvjModel:
    """The tiny generator with untrained heads over the pretrained sound embedding (its mel settings)."""
    from core.sound import SoundModels, SoundModelsConfig
    from core.sound.config import AudioEncoderConfig, InversionEncoderConfig, LatentStepperConfig
    from core.sound.sound_embedding import MEL

    model = tiny_model()
    G = model.generator
    torch.manual_seed(1)
    config = SoundModelsConfig(
        audio_encoder=AudioEncoderConfig(n_mels=MEL.n_mels, embed_dim=16, backbone="embedding", head_hidden=head_hidden),
        inversion_encoder=InversionEncoderConfig(num_ws=G.num_ws, w_dim=G.w_dim, n_mels=MEL.n_mels,
                                                 backbone="embedding", head_hidden=head_hidden, offset_init_std=1.0),
        latent_stepper=LatentStepperConfig(num_ws=G.num_ws, w_dim=G.w_dim, hidden=16, num_layers=1, embed_dim=16,
                                           noise_dim=8),
    )
    sound = SoundModels(config).eval().requires_grad_(False)
    sound.set_w_avg(G.mapping.w_avg)
    return SoundvjModel(G, sound, MEL, "tiny test model with embedding heads", False)
