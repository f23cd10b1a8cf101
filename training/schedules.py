"""Per-step learning-rate schedules shared by the stages (the loop steps every scheduler once per step)."""

from __future__ import annotations

import torch


def warmup_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from lr / (warmup_steps + 1) to lr over `warmup_steps`, then constant."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (warmup_steps + 1)))


def decay_schedule(optimizer: torch.optim.Optimizer, factor: float, every: int) -> torch.optim.lr_scheduler.LambdaLR:
    """lr x factor every `every` steps (the authors' stepper decays x0.98 per epoch)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: factor ** (step // every))
