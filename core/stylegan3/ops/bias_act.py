"""Bias, activation, gain and clamp in one call (NVIDIA's `bias_act` semantics)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# name -> (default alpha, default gain); only what StyleGAN3 uses.
_ACTIVATIONS = {
    "linear": (0.0, 1.0),
    "relu": (0.0, math.sqrt(2)),
    "lrelu": (0.2, math.sqrt(2)),
}


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """`clamp(act(x + b) * gain)`, with `b` broadcast along `dim`."""
    if act not in _ACTIVATIONS:
        raise ValueError(f"bias_act: unknown activation {act!r}")
    def_alpha, def_gain = _ACTIVATIONS[act]
    alpha = def_alpha if alpha is None else float(alpha)
    gain = def_gain if gain is None else float(gain)
    if b is not None:
        x = x + b.to(x.dtype).reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    if act == "lrelu":
        x = F.leaky_relu(x, alpha)
    elif act == "relu":
        x = F.relu(x)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x
