"""The training losses of docs/method.md: contrastive (stage 1 and `train clip`), L_enc (stages 2 and 3),
and least-squares GAN (stage 3). The input augmentations are in `training.augment.mel`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# CLIP's temperature: logits are exp(logit_scale) * cosine, logit_scale starts at log(1/0.07) and is
# clamped at log(100) so the learnable scale cannot run away (as in CLIP).
INITIAL_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOGIT_SCALE = math.log(100.0)


class LogitScale(torch.nn.Module):
    """Learnable CLIP-style temperatures initialised to log(1/0.07): one scalar, or `count` of them
    (one per contrastive pair, returned by one call so a DDP-wrapped instance runs once per step)."""

    def __init__(self, count: int | None = None, initial: float = INITIAL_LOGIT_SCALE):
        super().__init__()
        shape = [] if count is None else [count]
        self.value = torch.nn.Parameter(torch.full(shape, float(initial)))

    def forward(self) -> torch.Tensor:
        """exp(logit_scale), the multiplier(s) of the cosine logits."""
        return self.value.clamp(max=MAX_LOGIT_SCALE).exp()


def info_nce(
    x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric InfoNCE between unit-norm rows x [B, D] and y [B, D]; `scale` = exp(logit_scale).

    Without `labels` the positives are the pairs (i, i) and this is CLIP's loss: the mean of the
    cross-entropy of x against y and of y against x. With `labels` [B], every pair of the same class is a
    positive and each row's loss is the mean negative log-probability of its positives, so a batch that
    holds one class twice (and so the same caption twice) does not push a sample away from its own class.
    """
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"info_nce: expected two [B, D] batches of the same shape, got {list(x.shape)} and {list(y.shape)}")
    logits = scale * (x @ y.T)
    if labels is None:
        target = torch.arange(x.shape[0], device=x.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    positives = (labels.view(-1, 1) == labels.view(1, -1)).to(logits.dtype)
    per_row = positives.sum(dim=1)  # >= 1: every sample is its own positive
    rows = -(positives * F.log_softmax(logits, dim=1)).sum(dim=1) / per_row
    cols = -(positives * F.log_softmax(logits.T, dim=1)).sum(dim=1) / per_row
    return 0.5 * (rows.mean() + cols.mean())


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos(a_i, b_i) over the batch."""
    return (1.0 - F.cosine_similarity(a, b, dim=-1)).mean()


def latent_offset_penalty(w: torch.Tensor, w_avg: torch.Tensor) -> torch.Tensor:
    """||w - w_avg||^2, as the mean square per entry (decision: the paper gives lambda_b = 1 but not the
    norm's scale; per entry, lambda_b = 1 means the same for any num_ws and w_dim)."""
    return (w - w_avg).square().mean()


def encoder_loss(
    image_embed: torch.Tensor,
    audio_embed: torch.Tensor,
    text_embed: torch.Tensor,
    w: torch.Tensor,
    w_avg: torch.Tensor,
    lambda_b: float,
) -> dict[str, torch.Tensor]:
    """L_enc = (1 - cos(CLIP_img(G(w)), E_A(a))) + (1 - cos(CLIP_img(G(w)), CLIP_txt(label)))
    + lambda_b * ||w - w_avg||^2. Returns the total and its three parts (for logging)."""
    audio_term = cosine_distance(image_embed, audio_embed)
    text_term = cosine_distance(image_embed, text_embed)
    offset_term = latent_offset_penalty(w, w_avg)
    return {
        "loss": audio_term + text_term + lambda_b * offset_term,
        "image_audio": audio_term,
        "image_text": text_term,
        "offset": offset_term,
    }


def lsgan_discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Least-squares GAN, discriminator side: 0.5 E[(D(real) - 1)^2] + 0.5 E[D(fake)^2]."""
    return 0.5 * ((real_scores - 1.0).square().mean() + fake_scores.square().mean())


def lsgan_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """Least-squares GAN, generator side: 0.5 E[(D(fake) - 1)^2]."""
    return 0.5 * (fake_scores - 1.0).square().mean()

