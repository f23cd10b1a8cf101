"""Bias, upsample, leaky ReLU, clamp, downsample: the alias-free nonlinearity of StyleGAN3.

`filtered_lrelu` runs the implementation `backend` has chosen: NVIDIA's reference composition
(`filtered_lrelu_reference`) or the fast path (`filtered_lrelu_fast`, with or without its C++
kernel). The imports point one way: this dispatcher -> `backend` (which one) -> `backend_choice`
(measuring them) -> the implementations.
"""

from __future__ import annotations

import torch

from core.stylegan3.ops import backend
from core.stylegan3.ops.backend import set_backend
from core.stylegan3.ops.filtered_lrelu_fast import filtered_lrelu_fast
from core.stylegan3.ops.filtered_lrelu_reference import filtered_lrelu_reference

__all__ = ["filtered_lrelu", "filtered_lrelu_reference", "set_backend"]


def filtered_lrelu(x: torch.Tensor, **kwargs) -> torch.Tensor:
    """The implementation in use (see `core.stylegan3.ops.backend`); same arguments as the reference."""
    name = backend.active_backend()
    if name == "reference":
        return filtered_lrelu_reference(x, **kwargs)
    return filtered_lrelu_fast(x, allow_cpp=(name == "fast"), **kwargs)
