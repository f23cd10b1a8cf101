"""Projector-grade scaling of generator frames: a separable Lanczos-3 resampler, cover and centre-crop.

A 64 px frame on a 1080p projector is scaled about 17 times. Bilinear scaling shows the source grid
as creases and diamonds at that factor, nearest shows blocks; Lanczos-3 (a windowed sinc over 3 source
pixels either side) gives smooth gradients with edges as sharp as the source allows. Downscaling
widens the kernel by the factor, so fine detail is averaged away instead of aliasing into moiré.

The filter is separable and the grids are fixed, so each axis is a fixed linear map, computed once per
(source size, scaled size, crop) and cached. `axis_weights` writes it as a matrix W (out = Wy @ image
@ Wx^T); most of W is zeros (an output pixel reads 6 source pixels when enlarging), so the products
run in its polyphase form instead (`axis_plan`): the scaling ratio is p/q in lowest terms, every p
output pixels read a window of source pixels that moves on by q, and the weights repeat with the
period. One matrix product per axis, [periods, window] @ [window, p], does the work with a few
multiplications per output pixel instead of one per source pixel (about 7 instead of 64 for a 64 px
frame at 1280x720), which matters on the stream's thread beside a busy render thread. The crop is
folded in (only the periods that survive it are computed), so covering 1920x1080 from a square frame
never builds the 1920x1920 image first. Edges repeat the border pixel; Lanczos rings a little at hard
edges (values slightly past the input's range), which the conversion to 8 bits clamps.

`fit_frames` in `core.render`, the live stream and NDI all scale through here.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

LANCZOS_LOBES = 3  # Lanczos-3: the kernel reaches 3 source pixels either side (when upscaling)
WEIGHT_CACHE_SIZE = 32  # (axis, size) combinations kept; a set uses two or three


def lanczos(x: np.ndarray, lobes: int = LANCZOS_LOBES) -> np.ndarray:
    """The Lanczos kernel sinc(x) * sinc(x / lobes) for |x| < lobes, else 0 (x in source pixels)."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(np.abs(x) < lobes, np.sinc(x) * np.sinc(x / lobes), 0.0)


def _check_axis(source: int, scaled: int, start: int, count: int) -> None:
    if source < 1 or scaled < 1 or count < 1 or start < 0 or start + count > scaled:
        raise ValueError(f"cannot keep pixels {start}..{start + count - 1} of {source} -> {scaled}")


def _taps(source: int, scaled: int, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For output pixels `outputs` (indices into the scaled axis): the first source pixel each reads
    (may lie past the borders) and its weights [len(outputs), taps], each row summing to 1.
    Pixel centres line up as in `F.interpolate(..., align_corners=False)`."""
    ratio = scaled / source
    stretch = min(1.0, ratio)  # downscaling widens the kernel: an anti-aliasing low-pass
    support = LANCZOS_LOBES / stretch
    centres = (outputs + 0.5) / ratio - 0.5  # in source pixel coordinates
    first = np.floor(centres - support).astype(np.int64) + 1
    taps = int(np.ceil(2 * support)) + 1
    weights = lanczos((first[:, None] + np.arange(taps)[None, :] - centres[:, None]) * stretch)
    return first, weights / weights.sum(axis=1, keepdims=True)


@functools.lru_cache(maxsize=WEIGHT_CACHE_SIZE)
def axis_weights(source: int, scaled: int, start: int = 0, count: int | None = None) -> torch.Tensor:
    """The resampling of one axis as a matrix [count, source] (float32, CPU): `source` pixels to
    `scaled`, keeping output pixels `start` .. `start + count - 1` (default: all). Taps past a border
    read the border pixel. The definition `axis_plan` computes faster; cached, treat as read-only."""
    count = scaled - start if count is None else count
    _check_axis(source, scaled, start, count)
    first, weights = _taps(source, scaled, np.arange(start, start + count))
    index = np.clip(first[:, None] + np.arange(weights.shape[1])[None, :], 0, source - 1)
    matrix = np.zeros((count, source), dtype=np.float64)
    np.add.at(matrix, (np.repeat(np.arange(count), weights.shape[1]), index.ravel()), weights.ravel())
    return torch.from_numpy(matrix.astype(np.float32))


@dataclass(frozen=True)
class AxisPlan:
    """One axis's resampling in polyphase form (see the module docstring): read source pixels
    `reads` (clamped to the borders), cut them into `periods` windows of `window` pixels stepping by
    `stride`, multiply by `kernel` [window, phases], and keep `count` outputs from `skip` on."""

    reads: torch.Tensor  # source indices, int64
    periods: int
    window: int
    stride: int
    kernel: torch.Tensor  # float32 [window, phases]
    skip: int
    count: int

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Resample the last axis of `x` (float, any leading shape)."""
        kernel = self.kernel.to(x.device, x.dtype)
        windows = x.index_select(-1, self.reads.to(x.device)).unfold(-1, self.window, self.stride)
        # One tall product (all windows of all rows at once), not a batch of tiny ones.
        out = torch.matmul(windows.reshape(-1, self.window), kernel).view(*x.shape[:-1], -1)
        return out[..., self.skip: self.skip + self.count]


@functools.lru_cache(maxsize=WEIGHT_CACHE_SIZE)
def axis_plan(source: int, scaled: int, start: int, count: int) -> AxisPlan:
    """`axis_weights(source, scaled, start, count)` as an AxisPlan. Cached."""
    _check_axis(source, scaled, start, count)
    divisor = math.gcd(source, scaled)
    phases, stride = scaled // divisor, source // divisor  # every `phases` outputs, the window moves `stride`
    first, weights = _taps(source, scaled, np.arange(phases))
    low = int(first.min())
    window = int(first.max()) - low + weights.shape[1]
    kernel = np.zeros((window, phases))
    for phase in range(phases):
        kernel[first[phase] - low: first[phase] - low + weights.shape[1], phase] = weights[phase]
    begin, end = start // phases, (start + count - 1) // phases  # the periods the crop keeps
    periods = end - begin + 1
    reads = np.clip(np.arange(begin * stride + low, end * stride + low + window), 0, source - 1)
    return AxisPlan(torch.from_numpy(reads), periods, window, stride, torch.from_numpy(kernel.astype(np.float32)),
                    start - begin * phases, count)


def cover_crop(source_w: int, source_h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """(scaled_w, scaled_h, left, top): scale so that the source covers width x height with its
    aspect kept, then centre-crop to width x height at (left, top)."""
    scale = max(width / source_w, height / source_h)
    scaled_w, scaled_h = max(width, round(source_w * scale)), max(height, round(source_h * scale))
    return scaled_w, scaled_h, (scaled_w - width) // 2, (scaled_h - height) // 2


def scale_to_cover(frames: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Frames [N, C, h, w] (float) scaled with Lanczos-3 to cover width x height, centre-cropped:
    [N, C, height, width]. The same size returns `frames` itself."""
    _, _, h, w = frames.shape
    if (w, h) == (width, height):
        return frames
    scaled_w, scaled_h, left, top = cover_crop(w, h, width, height)
    across, down = axis_plan(w, scaled_w, left, width), axis_plan(h, scaled_h, top, height)
    # Either order gives the same pixels; the cheaper one scales the axis that grows less first.
    if h * width * across.window + height * width * down.window <= height * w * down.window + height * width * across.window:
        return down.apply(across.apply(frames).transpose(-1, -2)).transpose(-1, -2)
    return across.apply(down.apply(frames.transpose(-1, -2)).transpose(-1, -2))


def scale_rgb_to_cover(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """A uint8 RGB image [h, w, 3] scaled with Lanczos-3 to cover width x height, centre-cropped,
    as uint8 [height, width, 3] (rounded, clamped). The same size returns `image` itself."""
    h, w, _ = image.shape
    if (w, h) == (width, height):
        return image
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).to(torch.float32)
    scaled = scale_to_cover(pixels[None], width, height)[0]  # a new tensor: rounded in place
    # Channels first for the products and the rounding, channels last in the one pass that converts.
    return scaled.add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()
