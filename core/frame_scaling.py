"""Projector-grade scaling of generator frames: a separable Lanczos-3 resampler, cover and centre-crop.

A 64 px frame on a 1080p projector is scaled about 17 times. Bilinear scaling shows the source grid
as creases and diamonds at that factor, nearest shows blocks; Lanczos-3 (a windowed sinc over 3 source
pixels either side) gives smooth gradients with edges as sharp as the source allows. Downscaling
widens the kernel by the factor, so fine detail is averaged away instead of aliasing into moiré.

The filter is separable and the grids are fixed, so each axis is one weight matrix, computed once per
(source size, scaled size, crop) and cached: `out = Wy @ image @ Wx^T`, two matrix products that
torch runs at memory speed on CPU or GPU. The crop is folded into the matrices (only the rows and
columns that survive it are computed), so covering 1920x1080 from a square frame never builds the
1920x1920 image first. Edges repeat the border pixel; Lanczos rings a little at hard edges (values
slightly past the input's range), which the conversion to 8 bits clamps.

`fit_frames` in `core.render` and the live stream's sender both scale through here.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

LANCZOS_LOBES = 3  # Lanczos-3: the kernel reaches 3 source pixels either side (when upscaling)
WEIGHT_CACHE_SIZE = 32  # (axis, size) combinations kept; a set uses two or three


def lanczos(x: np.ndarray, lobes: int = LANCZOS_LOBES) -> np.ndarray:
    """The Lanczos kernel sinc(x) * sinc(x / lobes) for |x| < lobes, else 0 (x in source pixels)."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(np.abs(x) < lobes, np.sinc(x) * np.sinc(x / lobes), 0.0)


@functools.lru_cache(maxsize=WEIGHT_CACHE_SIZE)
def axis_weights(source: int, scaled: int, start: int = 0, count: int | None = None) -> torch.Tensor:
    """Weights [count, source] (float32, CPU) that resample one axis of `source` pixels to `scaled`
    pixels and keep output pixels `start` .. `start + count - 1` (default: all of them).

    Pixel centres line up as in `F.interpolate(..., align_corners=False)`. Each row sums to 1, so a
    constant stays constant. Cached: treat the result as read-only.
    """
    count = scaled - start if count is None else count
    if source < 1 or scaled < 1 or count < 1 or start < 0 or start + count > scaled:
        raise ValueError(f"axis_weights: cannot keep pixels {start}..{start + count - 1} of {source} -> {scaled}")
    ratio = scaled / source
    stretch = min(1.0, ratio)  # downscaling widens the kernel: an anti-aliasing low-pass
    support = LANCZOS_LOBES / stretch
    centres = (np.arange(start, start + count) + 0.5) / ratio - 0.5  # in source pixel coordinates
    first = np.floor(centres - support).astype(np.int64) + 1
    taps = int(np.ceil(2 * support)) + 1
    index = first[:, None] + np.arange(taps)[None, :]
    weights = lanczos((index - centres[:, None]) * stretch)
    weights /= weights.sum(axis=1, keepdims=True)
    matrix = np.zeros((count, source), dtype=np.float64)
    # Taps past the border read the border pixel (edge repeat), so they add to its weight.
    np.add.at(matrix, (np.repeat(np.arange(count), taps), np.clip(index, 0, source - 1).ravel()), weights.ravel())
    return torch.from_numpy(matrix.astype(np.float32))


def cover_crop(source_w: int, source_h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """(scaled_w, scaled_h, left, top): scale so that the source covers width x height with its
    aspect kept, then centre-crop to width x height at (left, top)."""
    scale = max(width / source_w, height / source_h)
    scaled_w, scaled_h = max(width, round(source_w * scale)), max(height, round(source_h * scale))
    return scaled_w, scaled_h, (scaled_w - width) // 2, (scaled_h - height) // 2


def _matrices(source_w: int, source_h: int, width: int, height: int, device: torch.device,
              dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    scaled_w, scaled_h, left, top = cover_crop(source_w, source_h, width, height)
    wy = axis_weights(source_h, scaled_h, top, height).to(device, dtype)
    wx = axis_weights(source_w, scaled_w, left, width).to(device, dtype)
    return wy, wx


def scale_to_cover(frames: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Frames [N, C, h, w] (float) scaled with Lanczos-3 to cover width x height, centre-cropped:
    [N, C, height, width]. The same size returns `frames` itself."""
    _, _, h, w = frames.shape
    if (w, h) == (width, height):
        return frames
    wy, wx = _matrices(w, h, width, height, frames.device, frames.dtype)
    # Two orders give the same result; take the one with fewer multiplications.
    if height * h * w + height * w * width <= h * w * width + height * h * width:
        return torch.matmul(torch.matmul(wy, frames), wx.T)
    return torch.matmul(wy, torch.matmul(frames, wx.T))


def scale_rgb_to_cover(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """A uint8 RGB image [h, w, 3] scaled with Lanczos-3 to cover width x height, centre-cropped,
    as uint8 [height, width, 3] (rounded, clamped). The same size returns `image` itself."""
    h, w, _ = image.shape
    if (w, h) == (width, height):
        return image
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).to(torch.float32)
    scaled = scale_to_cover(pixels[None], width, height)[0]
    # Channels first for the products (channels last makes them batched products of width 3, ten
    # times slower), channels last again in the one pass that rounds to 8 bits.
    return scaled.permute(1, 2, 0).add(0.5).clamp_(0, 255).to(torch.uint8).numpy()
