"""The stepper stage's discriminators (docs/method.md, "Training", stage 3).

D_I (image): PatchGAN, four blocks of Conv2d 4x4 stride 2, InstanceNorm, LeakyReLU 0.2, then a
1-channel 3x3 conv head: one realness score per patch.
D_V (video): four blocks of Conv3d, InstanceNorm3d, LeakyReLU 0.2 with a temporal kernel of 3
(decision: the official temporal kernel of 1 sees no motion), spatial 4x4 stride 2, time stride 1,
then a 1-channel 3x3x3 head. Input clips are [B, 3, T, H, W].

`width` is the first block's channels; each block doubles them, up to 8 * width. Four stride-2 blocks
need images of at least 32 px (InstanceNorm needs more than one value per channel).

With `num_classes > 0` both are class-conditional by projection (Miyato & Koyama 2018): each patch's
score adds the inner product of its last features with a learned embedding of the clip's class, so a
frame is judged against real frames of its own class, not of any class (beyond the paper).
"""

from __future__ import annotations

import torch

LRELU_SLOPE = 0.2
NUM_BLOCKS = 4
MIN_SIZE = 2**NUM_BLOCKS * 2  # the last block must keep at least 2x2


def _channels(width: int) -> list[int]:
    return [width * min(2**i, 8) for i in range(NUM_BLOCKS)]


def _check_size(who: str, height: int, width: int) -> None:
    if min(height, width) < MIN_SIZE:
        raise ValueError(f"{who}: images must be at least {MIN_SIZE} px on each side, got {height}x{width}")


def _class_projection(num_classes: int, channels: int) -> torch.nn.Embedding | None:
    if num_classes <= 0:
        return None
    embed = torch.nn.Embedding(num_classes, channels)
    torch.nn.init.normal_(embed.weight, std=channels**-0.5)
    return embed


def _project(features: torch.Tensor, embed: torch.nn.Embedding | None, labels: torch.Tensor | None) -> torch.Tensor:
    """Per-location <features, embed(label)> [B, 1, ...], or 0 for an unconditional discriminator."""
    if embed is None:
        if labels is not None:
            raise ValueError("discriminator: labels given to an unconditional discriminator")
        return torch.zeros((), device=features.device, dtype=features.dtype)
    if labels is None or labels.shape != features.shape[:1]:
        raise ValueError(f"discriminator: expected one class label per item ({features.shape[0]}), got "
                         f"{None if labels is None else list(labels.shape)}")
    vectors = embed(labels).to(features.dtype).view(*features.shape[:2], *([1] * (features.ndim - 2)))
    return (features * vectors).sum(dim=1, keepdim=True)


class ImageDiscriminator(torch.nn.Module):
    """D_I: PatchGAN over frames [B, 3, H, W] in [-1, 1] -> patch scores [B, 1, H/16, W/16];
    with `num_classes`, forward takes each frame's class label too."""

    def __init__(self, width: int = 64, in_channels: int = 3, num_classes: int = 0):
        super().__init__()
        layers: list[torch.nn.Module] = []
        prev = in_channels
        for ch in _channels(width):
            layers += [
                torch.nn.Conv2d(prev, ch, 4, stride=2, padding=1),
                torch.nn.InstanceNorm2d(ch, affine=True),
                torch.nn.LeakyReLU(LRELU_SLOPE),
            ]
            prev = ch
        self.blocks = torch.nn.Sequential(*layers)
        self.head = torch.nn.Conv2d(prev, 1, 3, padding=1)
        self.class_embed = _class_projection(num_classes, prev)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        _check_size("image discriminator", images.shape[-2], images.shape[-1])
        features = self.blocks(images)
        return self.head(features) + _project(features, self.class_embed, labels)


class VideoDiscriminator(torch.nn.Module):
    """D_V: 3D conv net over clips [B, 3, T, H, W] in [-1, 1] -> scores [B, 1, T, H/16, W/16];
    with `num_classes`, forward takes each clip's class label too."""

    def __init__(self, width: int = 32, temporal_kernel: int = 3, in_channels: int = 3, num_classes: int = 0):
        super().__init__()
        layers: list[torch.nn.Module] = []
        prev, pad_t = in_channels, temporal_kernel // 2
        for ch in _channels(width):
            layers += [
                torch.nn.Conv3d(prev, ch, (temporal_kernel, 4, 4), stride=(1, 2, 2), padding=(pad_t, 1, 1)),
                torch.nn.InstanceNorm3d(ch, affine=True),
                torch.nn.LeakyReLU(LRELU_SLOPE),
            ]
            prev = ch
        self.blocks = torch.nn.Sequential(*layers)
        self.head = torch.nn.Conv3d(prev, 1, (temporal_kernel, 3, 3), padding=(pad_t, 1, 1))
        self.class_embed = _class_projection(num_classes, prev)

    def forward(self, clips: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if clips.ndim != 5 or clips.shape[1] != 3:
            raise ValueError(f"video discriminator: expected clips [B, 3, T, H, W], got {list(clips.shape)}")
        _check_size("video discriminator", clips.shape[-2], clips.shape[-1])
        features = self.blocks(clips)
        return self.head(features) + _project(features, self.class_embed, labels)
