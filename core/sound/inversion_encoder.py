"""Sound inversion encoder E_I: mel window -> w_hat_a = w_avg + E_I(mel), shape [B, num_ws, w_dim].

Shaped like pSp's GradualStyleEncoder, over a one-channel mel image instead of an RGB face:

    mel [B,1,n_mels,W] -> 3x3 conv -> four residual stages (each halves both sides)
    coarse map = stage 4 output                                   (8w channels, n_mels/16 high)
    middle map = upsample(coarse) + lateral 1x1(stage 3 output)   (n_mels/8 high)
    fine map   = upsample(middle) + lateral 1x1(stage 2 output)   (n_mels/4 high)
    style i    = map2style_i(its group's map)  -> [B, w_dim]

Which styles read which map is `style_groups(num_ws)` (0-2 / 3-6 / 7-15 for 16 styles).
`w_avg` is a buffer copied from the generator's `mapping.w_avg` with `set_w_avg`, never learned.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from core.sound.config import InversionEncoderConfig, style_groups
from core.sound.latent_space import WSpaceModule
from core.sound.resnet import ResidualStages, check_mel_batch, init_resnet_weights

LRELU_SLOPE = 0.2


def halvings_to_one(side: int) -> int:
    """How many stride-2 3x3 convs (padding 1, output ceil(n/2)) take `side` down to 1: ceil(log2(side))."""
    return math.ceil(math.log2(side)) if side > 1 else 0


def stage_heights(n_mels: int) -> list[int]:
    """Mel-axis size after each of the four stride-2 stages."""
    heights, h = [], n_mels
    for _ in range(4):
        h = (h + 1) // 2
        heights.append(h)
    return heights


class MapToStyle(torch.nn.Module):
    """One feature map -> one style offset [B, w_dim]: stride-2 convs down to 1x1, then a linear layer.

    The number of convs is fixed at build time from the map's mel-axis size (the longer side for
    windows of up to n_mels frames). Longer windows leave a time axis > 1, which is averaged.
    """

    def __init__(self, channels: int, w_dim: int, num_convs: int, offset_init_std: float):
        super().__init__()
        layers: list[torch.nn.Module] = []
        for _ in range(num_convs):
            conv = torch.nn.Conv2d(channels, channels, 3, stride=2, padding=1)
            torch.nn.init.kaiming_normal_(conv.weight, a=LRELU_SLOPE, nonlinearity="leaky_relu")
            torch.nn.init.zeros_(conv.bias)
            layers += [conv, torch.nn.LeakyReLU(LRELU_SLOPE)]
        self.convs = torch.nn.Sequential(*layers)
        self.linear = torch.nn.Linear(channels, w_dim)
        # Small init: with a (softly) unit-RMS input, each offset entry has std ~offset_init_std,
        # so an untrained encoder gives sane latents near w_avg that still move with the sound.
        torch.nn.init.normal_(self.linear.weight, std=offset_init_std / math.sqrt(channels))
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x).mean(dim=(2, 3))
        # Soft RMS normalisation: the scale of an untrained backbone's features is arbitrary (BatchNorm
        # in eval mode starts as identity), so this pins the offset scale to offset_init_std for
        # ordinary inputs; the +1 lets near-silent inputs fade smoothly to zero offset instead of
        # being blown up to full size.
        x = x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1.0)
        return self.linear(x)


class FusedStyleHeads:
    """k MapToStyle heads reading one map, run as one network (inference only; same maths, fewer ops).

    Live, E_I runs on one window a frame, where 16 heads of 4-5 small convs each cost more in per-op
    overhead than in arithmetic. The heads' first convs share their input, so they are one conv with
    k x C outputs; each later conv is a grouped conv (groups = k); the linear layers are one batched
    matmul. Only the order of floating-point sums may differ from running the heads one by one.
    """

    def __init__(self, heads: list[MapToStyle]):
        convs = [[m for m in h.convs if isinstance(m, torch.nn.Conv2d)] for h in heads]
        self.k = len(heads)
        self.weights = [torch.cat([c[i].weight for c in convs]).detach() for i in range(len(convs[0]))]
        self.biases = [torch.cat([c[i].bias for c in convs]).detach() for i in range(len(convs[0]))]
        self.linear_weight = torch.stack([h.linear.weight for h in heads]).detach()  # [k, w_dim, C]
        self.linear_bias = torch.stack([h.linear.bias for h in heads]).detach()  # [k, w_dim]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> the k heads' offsets [B, k, w_dim]."""
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            x = F.leaky_relu(F.conv2d(x, weight, bias, stride=2, padding=1, groups=1 if i == 0 else self.k),
                             LRELU_SLOPE)
        if not self.weights:  # a 1x1 map needs no convs: every head reads the same features
            x = x.repeat(1, self.k, 1, 1)
        x = x.mean(dim=(2, 3)).unflatten(1, (self.k, -1))  # [B, k, C]
        x = x * torch.rsqrt(x.square().mean(dim=2, keepdim=True) + 1.0)
        return torch.einsum("bkc,kwc->bkw", x, self.linear_weight) + self.linear_bias


class SoundInversionEncoder(WSpaceModule):
    """pSp-style encoder; parameter names: input_conv, input_bn, body.stages.*, lateral_middle,
    lateral_fine, styles.{i}.convs.*, styles.{i}.linear; buffer w_avg."""

    label = "inversion encoder"

    def __init__(self, config: InversionEncoderConfig | None = None):
        super().__init__()
        self.config = cfg = config if config is not None else InversionEncoderConfig()
        width = cfg.width
        pyramid_channels = 8 * width
        self.input_conv = torch.nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.input_bn = torch.nn.BatchNorm2d(width)
        self.body = ResidualStages(width, width, cfg.blocks_per_stage, strides=(2, 2, 2, 2))
        self.lateral_middle = torch.nn.Conv2d(4 * width, pyramid_channels, 1)
        self.lateral_fine = torch.nn.Conv2d(2 * width, pyramid_channels, 1)
        init_resnet_weights(self)  # before the style heads, which have their own init

        self.coarse_ids, self.middle_ids, self.fine_ids = style_groups(cfg.num_ws)
        heights = stage_heights(cfg.n_mels)
        convs_for_level = {
            "coarse": halvings_to_one(heights[3]),
            "middle": halvings_to_one(heights[2]),
            "fine": halvings_to_one(heights[1]),
        }
        # Which pyramid level style i reads; style ids are contiguous per group, so a flat list works.
        self.style_level = (
            ["coarse"] * len(self.coarse_ids) + ["middle"] * len(self.middle_ids) + ["fine"] * len(self.fine_ids)
        )
        self.styles = torch.nn.ModuleList(
            MapToStyle(pyramid_channels, cfg.w_dim, convs_for_level[level], cfg.offset_init_std)
            for level in self.style_level
        )
        self._register_w_avg()


    def offsets(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, n_mels, W] -> E_I(mel), the per-style offsets from w_avg, [B, num_ws, w_dim]."""
        x = check_mel_batch(mel, self.config.n_mels, "inversion encoder", self.input_conv.weight.dtype)
        x = torch.relu(self.input_bn(self.input_conv(x)))
        _, c_fine, c_middle, c_coarse = self.body(x)
        # Top-down pathway: upsample to the lateral map's exact size (odd sizes from odd W are fine).
        middle = F.interpolate(c_coarse, size=c_middle.shape[2:], mode="bilinear", align_corners=False)
        middle = middle + self.lateral_middle(c_middle)
        fine = F.interpolate(middle, size=c_fine.shape[2:], mode="bilinear", align_corners=False)
        fine = fine + self.lateral_fine(c_fine)
        maps = {"coarse": c_coarse, "middle": middle, "fine": fine}
        if self.training or torch.is_grad_enabled():
            return torch.stack([head(maps[level]) for head, level in zip(self.styles, self.style_level)], dim=1)
        return torch.cat([fused(maps[level]) for level, fused in self._fused_heads()], dim=1)

    def _fused_heads(self) -> list[tuple[str, "FusedStyleHeads"]]:
        """The style heads of each level as one FusedStyleHeads, rebuilt whenever a parameter changed."""
        # `_version` is torch's in-place write counter: the only sign that an optimizer step changed a weight.
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in self.styles.parameters())
        if getattr(self, "_fused_key", None) != key:
            groups: dict[str, list[MapToStyle]] = {}
            for head, level in zip(self.styles, self.style_level):
                groups.setdefault(level, []).append(head)
            # Levels in style order (coarse, middle, fine), so the concatenation is styles 0..num_ws-1.
            self._fused = [(level, FusedStyleHeads(heads)) for level, heads in groups.items()]
            self._fused_key = key
        return self._fused

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, n_mels, W] in [0, 1] -> w_hat_a = w_avg + E_I(mel), [B, num_ws, w_dim]."""
        return self.w_avg + self.offsets(mel)
