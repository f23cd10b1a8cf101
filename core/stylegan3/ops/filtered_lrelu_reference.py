"""NVIDIA's reference `filtered_lrelu`: bias, upsample, leaky ReLU, clamp, downsample, composed of
existing ops exactly as StyleGAN3 wrote it. Slow (it zero-stuffs and filters the full upsampled map),
and the ground truth every faster path (`filtered_lrelu_fast`) is tested against."""

from __future__ import annotations

import math

import torch

from core.stylegan3.ops.bias_act import bias_act
from core.stylegan3.ops.upfirdn2d import filter_size, parse_padding, upfirdn2d


def filtered_lrelu_reference(
    x: torch.Tensor,
    fu: torch.Tensor | None = None,
    fd: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | tuple[int, ...] = 0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
    flip_filter: bool = False,
) -> torch.Tensor:
    """NVIDIA's reference composition of existing ops; the ground truth for any faster path."""
    batch, channels, in_h, in_w = x.shape
    fu_w, fu_h = filter_size(fu)
    fd_w, fd_h = filter_size(fd)
    px0, px1, py0, py1 = parse_padding(padding)
    out_w = (in_w * up + (px0 + px1) - (fu_w - 1) - (fd_w - 1) + (down - 1)) // down
    out_h = (in_h * up + (py0 + py1) - (fu_h - 1) - (fd_h - 1) + (down - 1)) // down

    x = bias_act(x, b)
    x = upfirdn2d(x, fu, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter)
    x = bias_act(x, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    x = upfirdn2d(x, fd, down=down, flip_filter=flip_filter)
    assert x.shape == (batch, channels, out_h, out_w), (tuple(x.shape), (batch, channels, out_h, out_w))
    return x
