"""Upsample, pad, FIR-filter and downsample a batch of 2-D images (NVIDIA's `upfirdn2d` semantics)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def parse_scaling(s: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(s, int):
        return s, s
    sx, sy = s
    return int(sx), int(sy)


def parse_padding(p: int | tuple[int, ...] | list[int]) -> tuple[int, int, int, int]:
    """int -> all sides; (px, py) -> symmetric per axis; (x0, x1, y0, y1) as is."""
    if isinstance(p, int):
        return p, p, p, p
    p = [int(v) for v in p]
    if len(p) == 2:
        return p[0], p[0], p[1], p[1]
    x0, x1, y0, y1 = p
    return x0, x1, y0, y1


def filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(width, height) of a 1-D (separable) or 2-D filter; None is the 1-tap identity."""
    if f is None:
        return 1, 1
    return int(f.shape[-1]), int(f.shape[0])


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int | tuple[int, int] = 1,
    down: int | tuple[int, int] = 1,
    padding: int | tuple[int, ...] = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Reference path: zero insertion, pad/crop, depthwise convolution, then keep every `down`-th sample.

    A 1-D filter `f` is applied separably (rows then columns); the gain is split across the passes.
    """
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    batch, channels, in_h, in_w = x.shape
    upx, upy = parse_scaling(up)
    downx, downy = parse_scaling(down)
    px0, px1, py0, py1 = parse_padding(padding)

    x = x.reshape(batch, channels, in_h, 1, in_w, 1)
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape(batch, channels, in_h * upy, in_w * upx)

    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]

    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f[None, None].repeat([channels, 1] + [1] * f.ndim)
    if f.ndim == 4:
        x = F.conv2d(x, f, groups=channels)
    else:
        x = F.conv2d(x, f.unsqueeze(2), groups=channels)
        x = F.conv2d(x, f.unsqueeze(3), groups=channels)
    return x[:, :, ::downy, ::downx]
