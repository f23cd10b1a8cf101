"""Choosing the torch device: CUDA when there is one, else CPU, overridable by name."""

from __future__ import annotations

import torch

from core.errors import SoundvjError


def pick_device(name: str | torch.device | None = None) -> torch.device:
    """`None`/"auto" picks cuda if available, else cpu; anything else must be a valid, present device."""
    if isinstance(name, torch.device):
        return name
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise SoundvjError(f"device {name!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SoundvjError(f"device {name!r}: no CUDA GPU is available on this machine (use --device cpu)")
    if dev.type not in ("cpu", "cuda"):
        raise SoundvjError(f"device {name!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return dev
