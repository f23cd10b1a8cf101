"""Augmentations of mel windows [B, n_mels, W] (the normalised log-mel of `core.audio.mel`, in [0, 1]) for
the sound models' inputs: what a recording heard another way would look like, so a model trained on a
few clips answers to the sound's kind rather than to one file's level or one band's details.
"""

from __future__ import annotations

import torch


def spec_augment(
    mel: torch.Tensor,
    generator: torch.Generator | None = None,
    num_masks: int = 2,
    max_freq_fraction: float = 0.15,
    max_time_fraction: float = 0.30,
) -> torch.Tensor:
    """SpecAugment on mel windows [B, n_mels, W]: per sample, `num_masks` frequency bands of up to
    15 % of the mel bins and `num_masks` time spans of up to 30 % of the window set to 0 (silence in
    the [0, 1] mel scale). Returns a new tensor; random numbers come from `generator` (CPU) so a
    seeded run repeats exactly."""
    if mel.ndim != 3:
        raise ValueError(f"spec_augment: expected mel windows [B, n_mels, W], got {list(mel.shape)}")
    batch, n_mels, width = mel.shape
    keep = torch.ones(batch, n_mels, width, dtype=torch.bool)
    for axis, size, fraction in ((1, n_mels, max_freq_fraction), (2, width, max_time_fraction)):
        longest = int(size * fraction)
        if longest < 1:
            continue
        for _ in range(num_masks):
            length = torch.randint(0, longest + 1, (batch,), generator=generator)
            start = (torch.rand(batch, generator=generator) * (size - length + 1)).long()
            index = torch.arange(size).view(1, -1)
            band = (index >= start.view(-1, 1)) & (index < (start + length).view(-1, 1))  # [B, size]
            keep &= ~(band.unsqueeze(2) if axis == 1 else band.unsqueeze(1))
    return mel * keep.to(device=mel.device, dtype=mel.dtype)


def level_shift(mel: torch.Tensor, max_db: float, top_db: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each window as if its sound were up to `max_db` dB louder or quieter (uniform per window).

    The mel scale is dB / top_db + 1 clamped to [0, 1], so a gain of g dB adds g / top_db, and values
    pushed past either end clamp as the front end would (a quieter sound sinks into the floor, a louder
    one saturates). Bins at the floor stay there: their true level is unknown, and digital silence must
    stay silence at any gain. Returns a new tensor; random numbers come from `generator` (CPU) so a
    seeded run repeats exactly."""
    if mel.ndim != 3:
        raise ValueError(f"level_shift: expected mel windows [B, n_mels, W], got {list(mel.shape)}")
    if max_db < 0 or top_db <= 0:
        raise ValueError(f"level_shift: expected max_db >= 0 and top_db > 0, got {max_db} and {top_db}")
    gain_db = (torch.rand(mel.shape[0], generator=generator) * 2 - 1) * max_db
    shift = (gain_db / top_db).to(device=mel.device, dtype=mel.dtype).view(-1, 1, 1)
    return torch.where(mel > 0, (mel + shift).clamp(0.0, 1.0), mel)


def mix_recordings(mel: torch.Tensor, other: torch.Tensor, top_db: float) -> torch.Tensor:
    """Two windows heard at once, at their mean power (so the mix is as loud as its parts): per bin
    10 log10((P_a + P_b) / 2) on the dB scale the mel values encode (dB / top_db + 1, clamped to [0, 1];
    the floor counts as -top_db dB). Shapes must match."""
    if mel.shape != other.shape:
        raise ValueError(f"mix_recordings: shapes differ, {list(mel.shape)} and {list(other.shape)}")
    if top_db <= 0:
        raise ValueError(f"mix_recordings: expected top_db > 0, got {top_db}")
    db_a, db_b = (mel - 1) * top_db, (other - 1) * top_db
    high = torch.maximum(db_a, db_b)
    # log-sum-exp in base 10, from the larger term, so the sum cannot overflow
    mixed = high + 10 * torch.log10((10 ** ((db_a - high) / 10) + 10 ** ((db_b - high) / 10)) / 2)
    return (mixed / top_db + 1).clamp(0.0, 1.0)
