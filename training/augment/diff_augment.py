"""Differentiable augmentation for GANs on small data (after Zhao et al. 2020, "DiffAugment").

The discriminator sees every image (real and fake) through the same random transforms, and the
generator's gradient flows through them, so D cannot memorise the few real images and G is not
taught to produce augmented-looking pictures. A policy is a comma-separated list of:

* `color`: per image, brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5);
* `translation`: per image, an integer shift of up to 1/8 of the size in x and y (zeros fill in);
* `cutout`: per image, a square of half the size at a random place set to zero.

Random numbers come from torch's global CPU generator (the training loop checkpoints it), drawn in
a fixed order, so a resumed run augments exactly as an uninterrupted one; they are moved to the
images' device afterwards.
"""

from __future__ import annotations

from typing import Callable

import torch

from core.errors import SoundvjError

TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def _uniform(batch: int, like: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return (torch.rand(batch, 1, 1, 1) * (high - low) + low).to(device=like.device, dtype=like.dtype)


def color(x: torch.Tensor) -> torch.Tensor:
    batch = x.shape[0]
    x = x + _uniform(batch, x, -0.5, 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * _uniform(batch, x, 0.0, 2.0) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * _uniform(batch, x, 0.5, 1.5) + mean


def _gather_shifted(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """out[n, :, i, j] = x[n, :, rows[n, i], cols[n, j]] where both are in range, else 0."""
    batch, channels, height, width = x.shape
    inside = ((rows >= 0) & (rows < height)).unsqueeze(2) & ((cols >= 0) & (cols < width)).unsqueeze(1)  # [N, H, W]
    index = rows.clamp(0, height - 1).unsqueeze(2) * width + cols.clamp(0, width - 1).unsqueeze(1)
    index = index.view(batch, 1, height * width).expand(batch, channels, height * width).to(x.device)
    out = x.flatten(2).gather(2, index).view(batch, channels, height, width)
    return out * inside.unsqueeze(1).to(device=x.device, dtype=x.dtype)


def translation(x: torch.Tensor, ratio: float = TRANSLATION_RATIO) -> torch.Tensor:
    batch, _, height, width = x.shape
    max_y, max_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    shift_y = torch.randint(-max_y, max_y + 1, [batch, 1])
    shift_x = torch.randint(-max_x, max_x + 1, [batch, 1])
    rows = torch.arange(height).unsqueeze(0) - shift_y  # the source row of each output row
    cols = torch.arange(width).unsqueeze(0) - shift_x
    return _gather_shifted(x, rows, cols)


def cutout(x: torch.Tensor, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    batch, _, height, width = x.shape
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    # The square's centre anywhere on the image (it may hang over the edge), as DiffAugment does.
    top = torch.randint(0, height + (1 - size_y % 2), [batch, 1]) - size_y // 2
    left = torch.randint(0, width + (1 - size_x % 2), [batch, 1]) - size_x // 2
    ys, xs = torch.arange(height).unsqueeze(0), torch.arange(width).unsqueeze(0)
    in_rows = (ys >= top) & (ys < top + size_y)  # [N, H]
    in_cols = (xs >= left) & (xs < left + size_x)  # [N, W]
    keep = ~(in_rows.unsqueeze(2) & in_cols.unsqueeze(1))
    return x * keep.unsqueeze(1).to(device=x.device, dtype=x.dtype)


TRANSFORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "color": color,
    "translation": translation,
    "cutout": cutout,
}


def parse_policy(policy: str, key: str = "stage.augment") -> tuple[str, ...]:
    """'color,translation,cutout' -> ('color', 'translation', 'cutout'); '' or 'none' -> (); unknown names raise."""
    text = policy.strip().lower()
    if text in ("", "none"):
        return ()
    names = tuple(part.strip() for part in text.split(","))
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown or len(set(names)) != len(names):
        raise SoundvjError(
            f"{key}: {policy!r}: expected a comma-separated list of {', '.join(TRANSFORMS)} (each once), or none"
        )
    return names


def diff_augment(x: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    """Apply the policy's transforms in order to images [N, C, H, W] (differentiably)."""
    for name in policy:
        x = TRANSFORMS[name](x)
    return x.contiguous()
