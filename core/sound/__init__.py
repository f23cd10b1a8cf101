"""Sound models: audio encoder E_A, sound inversion encoder E_I and the latent stepper.

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
from core.sound.inversion_encoder import SoundInversionEncoder
from core.sound.latent_stepper import LatentStepper, alpha_per_style


class SoundModels(torch.nn.Module):
    """E_A, E_I and the stepper built from one `SoundModelsConfig`, with stable parameter prefixes."""

    def __init__(self, config: SoundModelsConfig | None = None):
        super().__init__()
        self.config = config if config is not None else SoundModelsConfig()
        self.audio_encoder = AudioEncoder(self.config.audio_encoder)
        self.inversion_encoder = SoundInversionEncoder(self.config.inversion_encoder)
        self.latent_stepper = LatentStepper(self.config.latent_stepper)

    def set_w_avg(self, w_avg: torch.Tensor) -> None:
        """Copy the generator's `mapping.w_avg` into both modules that offset from it."""
        self.inversion_encoder.set_w_avg(w_avg)
        self.latent_stepper.set_w_avg(w_avg)


__all__ = [
    "AudioEncoder",
    "AudioEncoderConfig",
    "InversionEncoderConfig",
    "LatentStepper",
    "LatentStepperConfig",
    "SoundInversionEncoder",
    "SoundModels",
    "SoundModelsConfig",
    "alpha_groups",
    "alpha_per_style",
    "style_groups",
]
