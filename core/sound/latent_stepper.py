"""Latent stepper: the paper's sound-based frame generator, one causal step per video frame.

    h_t         = GRU(in_proj(w_t - w_avg), h_{t-1})           5 stacked layers, unidirectional
    d_t         = out_fc([h_t ; e_{t+1} ; n_t])                 n_t ~ N(0, noise_std^2 I)
    w_tilde_t+1 = w_hat_a(t+1) + d_t
    w_{t+1}     = (1 - alpha) * w_t + alpha * w_tilde_t+1       alpha per style (scalar or 3 groups)

Noise and random streams: every step draws exactly one [B, noise_dim] standard-normal tensor from the
passed `torch.Generator` (or torch's default CPU generator when None), *whatever* noise_std is, and
multiplies it by noise_std. So noise_std=0 gives n_t = 0 exactly, yet turning the noise knob live
never shifts any other random stream that shares the generator. The draw happens on the generator's
own device and is then moved to the model's device, so a CPU generator with a fixed seed gives the
same noise on CPU and CUDA.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from core.errors import SoundvjError
from core.sound.config import LatentStepperConfig, alpha_groups
from core.sound.latent_space import WSpaceModule

AlphaLike = float | Sequence[float] | torch.Tensor


def alpha_per_style(alpha: AlphaLike, num_ws: int) -> torch.Tensor:
    """Interpolation weight per style, float32 [num_ws] on CPU (a tensor input is returned as is).

    `alpha` is one number for all styles, a (coarse, middle, fine) triple spread over
    `alpha_groups(num_ws)`, or num_ws numbers. Every number must lie in [0, 1].
    """
    if isinstance(alpha, torch.Tensor):
        return alpha
    values = list(alpha) if isinstance(alpha, Sequence) and not isinstance(alpha, str) else [alpha]
    if any(isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0.0 <= float(v) <= 1.0 for v in values):
        raise SoundvjError(f"alpha: expected numbers in [0, 1], got {alpha!r}")
    if len(values) == 1:
        return torch.full([num_ws], float(values[0]))
    if len(values) == 3:
        per_style = torch.empty([num_ws])
        for ids, value in zip(alpha_groups(num_ws), values):
            per_style[list(ids)] = float(value)
        return per_style
    if len(values) == num_ws:
        return torch.tensor([float(v) for v in values])
    raise SoundvjError(f"alpha: expected 1, 3 (coarse, middle, fine) or {num_ws} values, got {len(values)}")


class LatentStepper(WSpaceModule):
    """GRU stack proposing the next frame's w; parameter names: in_proj, gru, out_fc; buffer w_avg."""

    label = "latent stepper"

    def __init__(self, config: LatentStepperConfig | None = None):
        super().__init__()
        self.config = cfg = config if config is not None else LatentStepperConfig()
        self.in_proj = torch.nn.Linear(cfg.num_ws * cfg.w_dim, cfg.hidden)
        self.gru = torch.nn.GRU(cfg.hidden, cfg.hidden, num_layers=cfg.num_layers, batch_first=True)
        fc_in = cfg.hidden + cfg.embed_dim + cfg.noise_dim
        self.out_fc = torch.nn.Linear(fc_in, cfg.num_ws * cfg.w_dim)
        # Small init: d_t entries have std ~delta_init_std for a unit-RMS input, so an untrained
        # stepper's w_tilde stays close to the inversion encoder's w_hat.
        torch.nn.init.normal_(self.out_fc.weight, std=cfg.delta_init_std / math.sqrt(fc_in))
        torch.nn.init.zeros_(self.out_fc.bias)
        self._register_w_avg()


    def draw_noise(self, batch: int, noise_std: float, generator: torch.Generator | None) -> torch.Tensor:
        """n_t [batch, noise_dim]; always consumes one draw from `generator` (see module docstring)."""
        if isinstance(noise_std, bool) or not isinstance(noise_std, numbers.Real) or not noise_std >= 0:
            raise SoundvjError(f"noise_std: expected a number >= 0, got {noise_std!r}")
        device = generator.device if generator is not None else torch.device("cpu")
        unit = torch.randn([batch, self.config.noise_dim], generator=generator, device=device)
        ref = self.out_fc.weight
        return unit.to(device=ref.device, dtype=ref.dtype) * float(noise_std)

    def propose(
        self,
        w_prev: torch.Tensor,
        w_hat_next: torch.Tensor,
        embed_next: torch.Tensor,
        hidden: torch.Tensor | None,
        noise_std: float,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(w_tilde_{t+1} = w_hat_next + d_t [B, num_ws, w_dim], hidden_next [num_layers, B, hidden])."""
        self._check_shapes(w_prev, w_hat_next, embed_next)
        batch = w_prev.shape[0]
        x = self.in_proj((w_prev - self.w_avg).flatten(1))
        out, hidden_next = self.gru(x.unsqueeze(1), hidden)  # sequence of length 1: the live path
        noise = self.draw_noise(batch, noise_std, generator)
        delta = self.out_fc(torch.cat([out[:, 0], embed_next.to(out.dtype), noise], dim=1))
        return w_hat_next + delta.view(batch, self.num_ws, self.w_dim), hidden_next

    def step(
        self,
        w_prev: torch.Tensor,
        w_hat_next: torch.Tensor,
        embed_next: torch.Tensor,
        hidden: torch.Tensor | None,
        alpha: AlphaLike,
        noise_std: float,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame: w_prev [B, num_ws, w_dim], w_hat_next = E_I(next window), embed_next = E_A(next
        window) [B, embed_dim], hidden from the previous step or None -> (w_next, hidden_next).

        `alpha`: a number, a (coarse, middle, fine) triple, num_ws numbers, or a [num_ws] / [B, num_ws] tensor.
        """
        w_tilde, hidden_next = self.propose(w_prev, w_hat_next, embed_next, hidden, noise_std, generator)
        weight = alpha_per_style(alpha, self.num_ws).to(device=w_prev.device, dtype=w_prev.dtype)
        weight = weight.unsqueeze(-1)  # [num_ws, 1] or [B, num_ws, 1]: one weight per style vector
        # lerp is exact at both ends: alpha=0 returns w_prev, alpha=1 returns w_tilde bit for bit.
        return torch.lerp(w_prev, w_tilde, weight.expand_as(w_prev)), hidden_next

    def rollout(
        self,
        w0: torch.Tensor,
        w_hat_seq: torch.Tensor,
        embed_seq: torch.Tensor,
        alpha: AlphaLike,
        noise_std: float,
        generator: torch.Generator | None = None,
        hidden: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """T steps from w0 [B, num_ws, w_dim]: w_hat_seq [B, T, num_ws, w_dim] and embed_seq [B, T, embed_dim]
        hold frames 1..T. Returns ws [B, T, num_ws, w_dim] = w_1..w_T (w0 excluded), exactly as T calls to
        `step` would give, noise draws included. Differentiable (for training with BPTT)."""
        if w_hat_seq.ndim != 4 or embed_seq.ndim != 3 or w_hat_seq.shape[:2] != embed_seq.shape[:2]:
            raise ValueError(
                f"latent stepper: w_hat_seq must be [B, T, {self.num_ws}, {self.w_dim}] and embed_seq "
                f"[B, T, {self.config.embed_dim}], got {list(w_hat_seq.shape)} and {list(embed_seq.shape)}"
            )
        ws, w = [], w0
        for t in range(w_hat_seq.shape[1]):
            w, hidden = self.step(w, w_hat_seq[:, t], embed_seq[:, t], hidden, alpha, noise_std, generator)
            ws.append(w)
        return torch.stack(ws, dim=1)

    # DistributedDataParallel syncs gradients through `forward`; training wraps the stepper in DDP.
    forward = rollout

    def _check_shapes(self, w_prev: torch.Tensor, w_hat_next: torch.Tensor, embed_next: torch.Tensor) -> None:
        expected = (self.num_ws, self.w_dim)
        if w_prev.ndim != 3 or tuple(w_prev.shape[1:]) != expected or w_hat_next.shape != w_prev.shape:
            raise ValueError(
                f"latent stepper: w_prev and w_hat_next must be [B, {self.num_ws}, {self.w_dim}], "
                f"got {list(w_prev.shape)} and {list(w_hat_next.shape)}"
            )
        if embed_next.shape != (w_prev.shape[0], self.config.embed_dim):
            raise ValueError(
                f"latent stepper: embed_next must be [{w_prev.shape[0]}, {self.config.embed_dim}], "
                f"got {list(embed_next.shape)}"
            )
