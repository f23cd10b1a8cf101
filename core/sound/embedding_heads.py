"""E_A and E_I as small heads over the pretrained sound embedding (`core.sound.sound_embedding`).

With `backbone: embedding` the sound models do not learn to hear from a few recordings: the frozen
embedding already tells kinds of sound apart across sources, and each head only maps its 512-d
description into the model's spaces:

    E_A: embedding -> LayerNorm -> Linear -> GELU -> Linear -> L2 normalise   (the CLIP space)
    E_I: embedding -> LayerNorm -> Linear -> GELU -> Linear -> w_avg + offsets [num_ws, w_dim]
         with `prototypes` P > 0 also: LayerNorm'd embedding -> Linear -> softmax over P kinds of
         sound, whose weights mix P learned offsets (a scene per kind) added to the offsets above

`forward(mel)` runs the shared embedding first, so training stages and tools call the heads exactly
as they call the ResNet encoders; the frame pipeline calls `from_embedding` on embeddings it computes
on its own schedule. The embedding's weights are never part of the heads' state.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from core.errors import SoundvjError
from core.sound.config import AudioEncoderConfig, InversionEncoderConfig
from core.sound.latent_space import WSpaceModule
from core.sound.sound_embedding import EMBED_DIM, shared_sound_embedding


def embed_windows(mel: torch.Tensor) -> torch.Tensor:
    """The shared sound embedding of mel windows [B, 96, W] on their device -> [B, 512]."""
    return shared_sound_embedding(mel.device)(mel)


class EmbeddingAudioEncoder(torch.nn.Module):
    """E_A over the sound embedding; parameter names: norm, hidden, fc."""

    def __init__(self, config: AudioEncoderConfig):
        super().__init__()
        self.config = config
        self.norm = torch.nn.LayerNorm(EMBED_DIM)
        self.hidden = torch.nn.Linear(EMBED_DIM, config.head_hidden)
        self.fc = torch.nn.Linear(config.head_hidden, config.embed_dim)

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def from_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        """Sound embeddings [B, 512] -> unit-norm E_A embeddings [B, embed_dim]."""
        x = self.norm(embedding.to(self.fc.weight.dtype))
        return F.normalize(self.fc(F.gelu(self.hidden(x))), dim=1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.from_embedding(embed_windows(mel))


class EmbeddingInversionEncoder(WSpaceModule):
    """E_I over the sound embedding; parameter names: norm, hidden, out and, with prototypes, kind and
    scenes; buffer w_avg."""

    label = "inversion encoder"

    def __init__(self, config: InversionEncoderConfig):
        super().__init__()
        self.config = cfg = config
        self.norm = torch.nn.LayerNorm(EMBED_DIM)
        self.hidden = torch.nn.Linear(EMBED_DIM, cfg.head_hidden)
        self.out = torch.nn.Linear(cfg.head_hidden, cfg.num_ws * cfg.w_dim)
        # Small init, as the ResNet encoder's: an untrained head's offsets have std ~offset_init_std.
        torch.nn.init.normal_(self.out.weight, std=cfg.offset_init_std / math.sqrt(cfg.head_hidden))
        torch.nn.init.zeros_(self.out.bias)
        if cfg.prototypes:
            # Linear on purpose: a linear read-out of the embedding is what keeps telling kinds of sound
            # apart on recordings of sources training never heard (docs/sound-embedding.md).
            self.kind = torch.nn.Linear(EMBED_DIM, cfg.prototypes)
            self.scenes = torch.nn.Parameter(torch.randn(cfg.prototypes, cfg.num_ws * cfg.w_dim) * cfg.offset_init_std)
        self._register_w_avg()

    def kind_logits(self, embedding: torch.Tensor) -> torch.Tensor:
        """Sound embeddings [B, 512] -> logits over the head's kinds of sound [B, prototypes]."""
        if not self.config.prototypes:
            raise SoundvjError("inversion encoder: kind_logits needs prototypes > 0")
        return self.kind(self.norm(embedding.to(self.out.weight.dtype)))

    def set_scenes(self, offsets: torch.Tensor) -> None:
        """Start the kinds' scenes at given offsets from w_avg [prototypes, num_ws, w_dim] (e.g. the
        mean latents of a class-conditional generator's classes minus w_avg)."""
        expected = (self.config.prototypes, self.num_ws, self.w_dim)
        if tuple(offsets.shape) != expected:
            raise SoundvjError(f"inversion encoder scenes: expected {list(expected)}, got {list(offsets.shape)}")
        with torch.no_grad():
            self.scenes.copy_(offsets.reshape(self.scenes.shape))

    def offsets_from_embedding(self, embedding: torch.Tensor, focus: float = 1.0) -> torch.Tensor:
        """Sound embeddings [B, 512] -> offsets from w_avg [B, num_ws, w_dim].

        `focus` scales the kinds' logits before the softmax that mixes their scenes: 1 is the mix
        training learned, higher settles on the likeliest kind (a mix of two scenes is a picture of
        neither), 0 mixes all scenes alike. Heads without kinds ignore it."""
        x = self.norm(embedding.to(self.out.weight.dtype))
        offsets = self.out(F.gelu(self.hidden(x)))
        if self.config.prototypes:
            offsets = offsets + (self.kind(x) * focus).softmax(dim=1) @ self.scenes
        return offsets.view(-1, self.num_ws, self.w_dim)

    def from_embedding(self, embedding: torch.Tensor, focus: float = 1.0) -> torch.Tensor:
        """Sound embeddings [B, 512] -> w_hat = w_avg + offsets, [B, num_ws, w_dim] (`focus`: see
        `offsets_from_embedding`)."""
        return self.w_avg + self.offsets_from_embedding(embedding, focus)

    def offsets(self, mel: torch.Tensor) -> torch.Tensor:
        return self.offsets_from_embedding(embed_windows(mel))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.from_embedding(embed_windows(mel))
