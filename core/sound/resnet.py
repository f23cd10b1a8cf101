"""Residual building blocks shared by the audio encoder (E_A) and the sound inversion encoder (E_I).

Plain ResNet "basic" blocks (two 3x3 convs + BatchNorm, identity or 1x1-conv shortcut), grouped into
four stages whose channels double (width, 2w, 4w, 8w) and whose spatial size halves, as in ResNet-18.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class BasicBlock(torch.nn.Module):
    """x -> relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)); `stride` 2 halves both spatial sides."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(out_channels)
        self.conv2 = torch.nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(out_channels)
        self.downsample: torch.nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = torch.nn.Sequential(
                torch.nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                torch.nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + shortcut)


class ResidualStages(torch.nn.Module):
    """Four stages of BasicBlocks; returns every stage's output so callers can build pyramids from them.

    Stage i has `width * 2**i` channels; its first block uses `strides[i]`.
    Parameter names: `stages.{i}.{j}.conv1.weight` etc.
    """

    def __init__(self, in_channels: int, width: int, blocks_per_stage: Sequence[int], strides: Sequence[int]):
        super().__init__()
        if len(blocks_per_stage) != 4 or len(strides) != 4:
            raise ValueError("ResidualStages: expected 4 stages")
        self.channels = [width * 2**i for i in range(4)]
        stages = []
        prev = in_channels
        for out_ch, num_blocks, stride in zip(self.channels, blocks_per_stage, strides):
            blocks = [BasicBlock(prev, out_ch, stride)] + [BasicBlock(out_ch, out_ch) for _ in range(num_blocks - 1)]
            stages.append(torch.nn.Sequential(*blocks))
            prev = out_ch
        self.stages = torch.nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs


def init_resnet_weights(module: torch.nn.Module) -> None:
    """He init for convs and BatchNorm as identity.

    fan_in mode keeps the forward scale, so an untrained network's features track the input level
    (silence -> zero features, loud -> O(1)), which the inversion encoder's offset init relies on.
    """
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
        elif isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
            torch.nn.init.zeros_(m.bias)


def check_mel_batch(mel: torch.Tensor, n_mels: int, who: str, dtype: torch.dtype) -> torch.Tensor:
    """[B, n_mels, W] (or [B, 1, n_mels, W]) -> [B, 1, n_mels, W] in the model's dtype."""
    if mel.ndim == 3:
        mel = mel.unsqueeze(1)
    if mel.ndim != 4 or mel.shape[1] != 1 or mel.shape[2] != n_mels or mel.shape[3] < 1:
        raise ValueError(f"{who}: mel must be [B, {n_mels}, W], got {list(mel.shape)}")
    return mel.to(dtype)
