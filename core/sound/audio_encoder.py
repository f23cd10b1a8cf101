"""Audio encoder E_A: mel window [B, n_mels, W] -> unit-norm embedding [B, embed_dim].

The authors' encoder (CVPR 2022, sound-guided image manipulation) is a timm ResNet-18 with a
Conv2d(1, 3, 3x3) in front, so the one-channel mel image can feed the three-channel RGB stem; its
512-d output is trained into CLIP space, hence the L2 normalisation. This is the same shape written
in plain torch; `width` scales every channel count (64 = the real ResNet-18).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from core.sound.config import AudioEncoderConfig
from core.sound.resnet import ResidualStages, check_mel_batch, init_resnet_weights


class AudioEncoder(torch.nn.Module):
    """ResNet-18 over the mel window; parameter names: input_stem, conv1, bn1, body.stages.*, fc."""

    def __init__(self, config: AudioEncoderConfig | None = None):
        super().__init__()
        self.config = config if config is not None else AudioEncoderConfig()
        width = self.config.width
        self.input_stem = torch.nn.Conv2d(1, 3, 3, padding=1)  # 1 -> 3 channels, as the authors' encoder
        self.conv1 = torch.nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(width)
        self.maxpool = torch.nn.MaxPool2d(3, stride=2, padding=1)
        # The stem already downsamples by 4, so the first stage keeps stride 1 (ResNet-18 layout).
        self.body = ResidualStages(width, width, self.config.blocks_per_stage, strides=(1, 2, 2, 2))
        self.fc = torch.nn.Linear(8 * width, self.config.embed_dim)
        init_resnet_weights(self.conv1)
        init_resnet_weights(self.bn1)
        init_resnet_weights(self.body)

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, n_mels, W] in [0, 1] -> embedding [B, embed_dim] with unit L2 norm."""
        x = check_mel_batch(mel, self.config.n_mels, "audio encoder", self.fc.weight.dtype)
        x = self.input_stem(x)
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.body(x)[-1]
        x = self.fc(x.mean(dim=(2, 3)))  # global average pool: any window length W works
        return F.normalize(x, dim=1)
