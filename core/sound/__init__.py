"""Sound models: audio encoder E_A, sound inversion encoder E_I and the latent stepper.

E_A and E_I are ResNets over the mel window, or (`backbone: embedding`) heads over the pretrained
sound embedding (`core.sound.embedding_heads`).

`SoundModels` holds all three under the state_dict prefixes `audio_encoder.`, `inversion_encoder.`
and `latent_stepper.` (the names used in the safetensors checkpoints).
"""

from __future__ import annotations

import torch

from core.sound.audio_encoder import AudioEncoder
from core.sound.config import (
    AudioEncoderConfig,
    InversionEncoderConfig,
    LatentStepperConfig,
    SoundModelsConfig,
    alpha_groups,
    style_groups,
)
from core.sound.embedding_heads import EmbeddingAudioEncoder, EmbeddingInversionEncoder
from core.sound.inversion_encoder import SoundInversionEncoder
from core.sound.latent_stepper import LatentStepper, alpha_per_style


def build_audio_encoder(config: AudioEncoderConfig) -> AudioEncoder | EmbeddingAudioEncoder:
    """E_A for `config.backbone`: the ResNet over the mel window, or the head over the sound embedding."""
    return EmbeddingAudioEncoder(config) if config.backbone == "embedding" else AudioEncoder(config)


def build_inversion_encoder(config: InversionEncoderConfig) -> SoundInversionEncoder | EmbeddingInversionEncoder:
    """E_I for `config.backbone` (as `build_audio_encoder`)."""
    return EmbeddingInversionEncoder(config) if config.backbone == "embedding" else SoundInversionEncoder(config)


class SoundModels(torch.nn.Module):
    """E_A, E_I and the stepper built from one `SoundModelsConfig`, with stable parameter prefixes."""

    def __init__(self, config: SoundModelsConfig | None = None):
        super().__init__()
        self.config = config if config is not None else SoundModelsConfig()
        self.audio_encoder = build_audio_encoder(self.config.audio_encoder)
        self.inversion_encoder = build_inversion_encoder(self.config.inversion_encoder)
        self.latent_stepper = LatentStepper(self.config.latent_stepper)

    def set_w_avg(self, w_avg: torch.Tensor) -> None:
        """Copy the generator's `mapping.w_avg` into both modules that offset from it."""
        self.inversion_encoder.set_w_avg(w_avg)
        self.latent_stepper.set_w_avg(w_avg)


__all__ = [
    "AudioEncoder",
    "AudioEncoderConfig",
    "EmbeddingAudioEncoder",
    "EmbeddingInversionEncoder",
    "InversionEncoderConfig",
    "LatentStepper",
    "LatentStepperConfig",
    "SoundInversionEncoder",
    "SoundModels",
    "SoundModelsConfig",
    "alpha_groups",
    "build_audio_encoder",
    "build_inversion_encoder",
    "alpha_per_style",
    "style_groups",
]
