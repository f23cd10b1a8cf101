"""The StyleGAN2 residual discriminator that StyleGAN3 trains against (shapes and names as NVIDIA's
`networks_stylegan2.Discriminator`, architecture 'resnet'), written for this project.

Blocks `b{R}` for R = resolution, resolution/2, ..., 8, each: (first block only) `fromrgb` 1x1 conv,
`conv0` 3x3, `conv1` 3x3 with 2x down-sampling, and a residual `skip` 1x1 down-sampling conv without
bias, summed with gain sqrt(1/2). Channels at R are min(channel_base / R, channel_max). Down-sampling
blurs with the [1, 3, 3, 1] filter, then convolves with stride 2. The epilogue `b4`: minibatch
standard deviation (groups of `mbstd_group`, one feature), `conv` 3x3, `fc`, `out`. Class-conditional
(c_dim > 0): a mapping network turns c into `cmap` and the score is the projection
<out(x), cmap> / sqrt(cmap_dim) (Miyato & Koyama's projection discriminator, as NVIDIA does).

All layers use equalised learning rate (weights scaled at run time), leaky ReLU 0.2 with gain
sqrt(2), and activations clamped to +-`conv_clamp`. Only ordinary torch ops: the R1 penalty
differentiates through them twice.

One deliberate difference: minibatch-stddev groups are *consecutive* samples (NVIDIA: strided), so a
batch of [real; fake] concatenated for one DDP call keeps real and fake in separate groups when the
half-batch is a multiple of the group size (checked by the stage).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from core.stylegan3.networks import FullyConnectedLayer
from core.stylegan3.ops.bias_act import bias_act

BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)


def _blur_filter() -> torch.Tensor:
    f = torch.tensor(BLUR_TAPS)
    f = torch.outer(f, f)
    return f / f.sum()


class Conv2dLayer(torch.nn.Module):
    """Equalised-lr conv with bias, activation, gain and clamp; `down=2` blurs then strides."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        down: int = 1,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.activation = activation
        self.down = down
        self.conv_clamp = conv_clamp
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels])) if bias else None
        if down > 1:
            self.register_buffer("resample_filter", _blur_filter(), persistent=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight * self.weight_gain
        if self.down > 1:
            # Pad so that blur + stride-2 conv halves the size exactly (NVIDIA's conv2d_resample padding).
            pad = self.kernel_size // 2 + 1
            channels = x.shape[1]
            f = self.resample_filter.to(x.dtype).view(1, 1, 4, 4).expand(channels, 1, 4, 4)
            x = F.conv2d(F.pad(x, [pad, pad, pad, pad]), f, groups=channels)
            x = F.conv2d(x, w.to(x.dtype), stride=self.down)
        else:
            x = F.conv2d(x, w.to(x.dtype), padding=self.kernel_size // 2)
        act_gain = (math.sqrt(2) if self.activation == "lrelu" else 1.0) * gain
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, act=self.activation, gain=act_gain, clamp=clamp)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, kernel={self.kernel_size}, "
                f"activation={self.activation}, down={self.down}")


class DiscriminatorBlock(torch.nn.Module):
    """One resolution of the residual discriminator (see the module docstring)."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int,
                 conv_clamp: float | None):
        super().__init__()
        self.in_channels = in_channels
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 0:
            x = self.fromrgb(img)
        assert x is not None
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x


class MinibatchStdLayer(torch.nn.Module):
    """Appends the std of features over groups of `group_size` consecutive samples as extra channels."""

    def __init__(self, group_size: int, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        group = min(self.group_size, n) if self.group_size else n
        if n % group:
            raise ValueError(f"minibatch stddev: batch {n} is not a multiple of the group size {group}")
        f = self.num_channels
        y = x.reshape(n // group, group, f, c // f, h, w)
        y = (y - y.mean(dim=1, keepdim=True)).square().mean(dim=1)  # variance over the group
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [n/group, f]
        y = y.reshape(n // group, 1, f, 1, 1).expand(n // group, group, f, h, w).reshape(n, f, h, w)
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class DiscriminatorEpilogue(torch.nn.Module):
    """The 4x4 head: minibatch std, conv, fc, out (projected onto cmap when conditional)."""

    def __init__(self, in_channels: int, cmap_dim: int, mbstd_group: int, conv_clamp: float | None):
        super().__init__()
        self.cmap_dim = cmap_dim
        self.mbstd = MinibatchStdLayer(mbstd_group, 1) if mbstd_group else None
        self.conv = Conv2dLayer(in_channels + (1 if mbstd_group else 0), in_channels, 3, activation="lrelu",
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * 16, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, cmap_dim if cmap_dim > 0 else 1)

    def forward(self, x: torch.Tensor, cmap: torch.Tensor | None) -> torch.Tensor:
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.out(self.fc(x.flatten(1)))
        if self.cmap_dim > 0:
            assert cmap is not None
            x = (x * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)
        return x


class ClassMapping(torch.nn.Module):
    """c -> cmap: an embedding, 2nd-moment normalisation, then `num_layers` lrelu FCs (NVIDIA's
    MappingNetwork with z_dim 0: the same layers and lr multiplier)."""

    def __init__(self, c_dim: int, cmap_dim: int, num_layers: int = 8, lr_multiplier: float = 0.01):
        super().__init__()
        self.num_layers = num_layers
        self.embed = FullyConnectedLayer(c_dim, cmap_dim)
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(cmap_dim, cmap_dim, activation="lrelu",
                                                          lr_multiplier=lr_multiplier))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        x = self.embed(c.to(torch.float32))
        x = x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        return x


class Discriminator(torch.nn.Module):
    """images [N, C, R, R] in [-1, 1] (+ one-hot c [N, c_dim]) -> realness logits [N, 1]."""

    def __init__(
        self,
        c_dim: int,
        img_resolution: int,
        img_channels: int = 3,
        channel_base: int = 32768,
        channel_max: int = 512,
        mbstd_group: int = 4,
        conv_clamp: float | None = 256,
        mapping_layers: int = 8,
    ):
        super().__init__()
        if img_resolution < 8 or img_resolution & (img_resolution - 1):
            raise ValueError(f"discriminator: resolution must be a power of two >= 8, got {img_resolution}")
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        log2 = int(np.log2(img_resolution))
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        if min(channels.values()) < 1:
            raise ValueError(f"discriminator: channel_base {channel_base} leaves no channels at {img_resolution} px")
        cmap_dim = channels[4] if c_dim > 0 else 0
        for res in self.block_resolutions:
            in_channels = channels[res] if res < img_resolution else 0
            block = DiscriminatorBlock(in_channels, channels[res], channels[res // 2], img_channels, conv_clamp)
            setattr(self, f"b{res}", block)
        if c_dim > 0:
            self.mapping = ClassMapping(c_dim, cmap_dim, num_layers=mapping_layers)
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim, mbstd_group, conv_clamp)

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        x = None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img)
        cmap = self.mapping(c) if self.c_dim > 0 else None
        assert x is not None
        return self.b4(x, cmap)
