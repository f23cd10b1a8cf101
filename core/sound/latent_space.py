"""What the two sound models that speak in W space share: sizes from their config and a copy of w_avg."""

from __future__ import annotations

import torch


class WSpaceModule(torch.nn.Module):
    """Base for modules whose outputs are offsets from the generator's `w_avg` (E_I, the stepper).

    Subclasses set `self.config` (with `num_ws`, `w_dim`) before calling `_register_w_avg()`.
    """

    label = "module"

    def _register_w_avg(self) -> None:
        self.register_buffer("w_avg", torch.zeros([self.config.w_dim]))

    @property
    def num_ws(self) -> int:
        return self.config.num_ws

    @property
    def w_dim(self) -> int:
        return self.config.w_dim

    def set_w_avg(self, w_avg: torch.Tensor) -> None:
        """Copy the generator's `mapping.w_avg` [w_dim] in (keeps this module's device and dtype)."""
        if w_avg.shape != (self.w_dim,):
            raise ValueError(f"{self.label}: w_avg must be [{self.w_dim}], got {list(w_avg.shape)}")
        with torch.no_grad():
            self.w_avg.copy_(w_avg.detach())
