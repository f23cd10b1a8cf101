"""`soundvj train generator`: a StyleGAN3 generator (T, or R) trained from an image folder.

The generator is `core.stylegan3.networks.Generator`, the class every command renders with, so the
result has NVIDIA's parameter names and config and `render`, `live`, `info`, `convert` and the other
training stages load it like any other. A folder per class gives a class-conditional generator
(c_dim = number of classes, in sorted folder order); a flat folder an unconditional one
(`training.data.images`).

NVIDIA's StyleGAN3 recipe (`train.py`, `loss.py`, `training_loop.py`), per step of one minibatch:

* G: non-saturating logistic loss softplus(-D(aug(G(z, c)), c)), c drawn from the training labels;
* D: softplus(D(aug(fake))) + softplus(-D(aug(real))), fakes made with `update_emas=True` (this
  updates the mapping's w_avg, beta `w_avg_beta`, and each layer's magnitude EMA);
* lazy R1 every `r1_interval` steps: (gamma / 2) * |d D(aug(real)) / d real|^2 * r1_interval, a
  separate D update; Adam's lr and beta2 are scaled by interval / (interval + 1) for it, and G's by
  4/5 as NVIDIA's lazy G interval of 4 does with path-length regularisation off (StyleGAN3);
* Adam betas (0, 0.99), eps 1e-8; the mapping's lr multiplier 0.01 (equalised lr inside its layers);
* G_ema: beta = 0.5 ** (batch / (ema_kimg * 1000)), with the ramp-up ema_nimg <= nimg * ema_rampup;
  buffers (w_avg, magnitude EMAs) copied from G.
* magnitude_ema_beta = 0.5 ** (batch / 20000) (total batch over all processes), as NVIDIA sets it;
* optional Gaussian blur of everything D sees, sigma `blur_sigma` fading to 0 over `blur_fade_kimg`
  (NVIDIA uses 10 px over batch x 200/32 kimg for R, none for T).

Decisions of this project: DiffAugment (`training.augment.diff_augment`) on real and fake before D (NVIDIA's
StyleGAN3 uses ADA; DiffAugment has no adaptive state and is cheap on a CPU); optional random x-flips
of the real images. Training runs the ops' pure-PyTorch path (`fast-torch`): the C++ kernel has no
backward, and a kernel build landing mid-run must not change the numbers.

Every checkpoint (and the end of the run) also writes `run_dir/generator.safetensors`: G_ema as a
soundvj model file, the class names in its metadata (`training.classes`, JSON, class-index order).
"""

from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from core.errors import SoundvjError
from core.model_credits import CLASSES_KEY
from core.model_file import save_model
from core.stylegan3.networks import Generator
from core.stylegan3.ops import backend
from training.config import RunConfig
from training.settings import setting
from training.stages import GENERATOR_FILE, GENERATOR_STAGE
from training.data.images import ImageFolderDataset
from training.augment.diff_augment import diff_augment, parse_policy
from training.loop import BuildContext, Stage, StepContext
from training.evaluation.samples import write_grid
from training.models.stylegan_discriminator import Discriminator

# NVIDIA's StyleGAN3 enables lazy G regularisation (interval 4) with path-length weight 0: the only
# effect is Adam's lr x 4/5 and beta2 ** (4/5) for G. Kept, so the numbers match the recipe.
G_REG_INTERVAL = 4


@dataclass(frozen=True)
class Config:
    """The `stage:` section of `train generator`."""

    variant: Literal["T", "R"] = setting("T", help="StyleGAN3-T (translation eq.) or -R (rotation eq.: 1x1 convs, radial filters)")
    resolution: int = setting(64, min=16, max=1024, help="image size in pixels (a power of two)")
    z_dim: int = setting(512, min=1, max=4096, help="latent z size")
    w_dim: int = setting(512, min=1, max=4096, help="intermediate latent w size")
    mapping_layers: int = setting(2, min=1, max=8, help="mapping network depth (StyleGAN3: 2)")
    mapping_lr_multiplier: float = setting(0.01, min=0.0, max=1.0, help="mapping lr relative to the rest")
    channel_base: int = setting(2048, min=16, max=1 << 20, help="G channels: min(channel_base / cutoff, channel_max)")
    channel_max: int = setting(64, min=1, max=2048, help="G channel cap")
    discriminator_channel_base: int = setting(2048, min=16, max=1 << 20, help="D channels at R px: min(base / R, max)")
    discriminator_channel_max: int = setting(64, min=1, max=2048, help="D channel cap")
    mbstd_group: int = setting(4, min=0, max=64, help="minibatch-stddev group size (0: off)")
    g_lr: float = setting(0.0025, min=0.0, help="Adam learning rate of G (StyleGAN3: 0.0025)")
    d_lr: float = setting(0.002, min=0.0, help="Adam learning rate of D (StyleGAN3: 0.002)")
    r1_gamma: float = setting(0.5, min=0.0, help="R1 weight gamma")
    r1_interval: int = setting(16, min=1, max=1000, help="steps between lazy R1 updates of D")
    ema_kimg: float = setting(2.5, min=0.0, help="G_ema half-life in thousands of images (StyleGAN3: batch x 10/32)")
    ema_rampup: float = setting(0.05, min=0.0, max=10.0, help="ema half-life <= images seen x this (0: no ramp)")
    augment: str = setting("color,translation,cutout", help="DiffAugment policy before D (or none)")
    blur_sigma: float = setting(0.0, min=0.0, max=64.0, help="Gaussian blur of D's inputs at the start, in px "
                                "(NVIDIA: 10 for R, 0 for T), fading to 0 over blur_fade_kimg")
    blur_fade_kimg: float = setting(50.0, min=0.0, help="thousands of images over which the blur fades (NVIDIA: batch x 200/32)")
    xflip: bool = setting(True, help="random horizontal flips of the real images")
    threads: int = setting(0, min=0, max=256, resumable=True,
                           help="torch CPU threads (0: torch's default; 1 when other work shares the cores)")
    sample_seed: int = setting(0, min=0, help="seed of the sample grid's fixed latents")
    sample_columns: int = setting(8, min=1, max=64, resumable=True, help="images per row of the sample grid")
    sample_rows: int = setting(4, min=1, max=64, resumable=True, help="rows of an unconditional sample grid")


def generator_kwargs(config: Config, c_dim: int, total_batch: int) -> dict:
    """NVIDIA's Generator kwargs for this config (what the model file stores as generator.config)."""
    kwargs: dict = {
        "z_dim": config.z_dim,
        "c_dim": c_dim,
        "w_dim": config.w_dim,
        "img_resolution": config.resolution,
        "img_channels": 3,
        "mapping_kwargs": {"num_layers": config.mapping_layers, "lr_multiplier": config.mapping_lr_multiplier},
        "channel_base": config.channel_base,
        "channel_max": config.channel_max,
        "magnitude_ema_beta": 0.5 ** (total_batch / 20000),
    }
    if config.variant == "R":
        kwargs.update(conv_kernel=1, use_radial_filters=True)
    else:
        kwargs.update(conv_kernel=3, use_radial_filters=False)
    return kwargs


def check_config(run: RunConfig) -> None:
    config: Config = run.stage
    if config.resolution & (config.resolution - 1):
        raise SoundvjError(f"stage.resolution: expected a power of two, got {config.resolution}")
    group = min(config.mbstd_group, run.loop.batch_size)
    if group and run.loop.batch_size % group:
        raise SoundvjError(
            f"loop.batch_size: {run.loop.batch_size} is not a multiple of stage.mbstd_group={config.mbstd_group} "
            "(real and fake images must fall into separate minibatch-stddev groups)"
        )
    parse_policy(config.augment)


class TrainingStats(torch.nn.Module):
    """Values the log shows between the steps that measure them (checkpointed with the modules)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("last_r1", torch.zeros([]))


def blur_sigma_at(config: Config, images_seen: int) -> float:
    """NVIDIA's fading blur of D's inputs: blur_sigma at the start, 0 after blur_fade_kimg."""
    if config.blur_fade_kimg <= 0:
        return 0.0
    return max(1 - images_seen / (config.blur_fade_kimg * 1e3), 0.0) * config.blur_sigma


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (taps to 3 sigma, zero padding that keeps the size), differentiable."""
    radius = int(sigma * 3)
    if radius < 1:
        return images
    taps = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype).div(sigma).square().neg().exp2()
    taps = taps / taps.sum()
    channels = images.shape[1]
    x = F.conv2d(images, taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1), padding=(0, radius), groups=channels)
    return F.conv2d(x, taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1), padding=(radius, 0), groups=channels)


def ema_beta(config: Config, images_seen: int, total_batch: int) -> float:
    """G_ema's beta for a step that starts after `images_seen` images (NVIDIA's formula with ramp-up)."""
    ema_nimg = config.ema_kimg * 1000
    if config.ema_rampup > 0:
        ema_nimg = min(ema_nimg, images_seen * config.ema_rampup)
    return 0.5 ** (total_batch / max(ema_nimg, 1e-8))


@torch.no_grad()
def sanitize_grads(module: torch.nn.Module) -> None:
    """NaN -> 0 and +-inf -> +-1e5 in the gradients, as NVIDIA's loop does before every optimiser step
    (finite gradients are left bit for bit as they are)."""
    for p in module.parameters():
        if p.grad is not None:
            p.grad.nan_to_num_(nan=0.0, posinf=1e5, neginf=-1e5)


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


def export_generator(path: Path, G_ema: Generator, classes: list[str], dataset: ImageFolderDataset,
                     kimg: float) -> Path:
    """G_ema as a soundvj model file (atomic), with the class names and training facts in its metadata."""
    metadata = {
        "training.stage": GENERATOR_STAGE,
        CLASSES_KEY: json.dumps(classes),
        "training.images": str(len(dataset)),
        "training.kimg": f"{kimg:.3f}",
    }
    what = f"{len(classes)} classes" if classes else "unconditional"
    source = f"soundvj train generator: {dataset.root.name} ({len(dataset)} images, {what}), {kimg:.1f} kimg"
    return save_model(path, G_ema, source=source, metadata=metadata)


def build(run: RunConfig, ctx: BuildContext) -> Stage:
    config: Config = run.stage
    check_config(run)
    device = ctx.device
    backend.set_backend("fast-torch")  # see the module docstring
    if config.threads:
        # When other processes share the cores, OpenMP threads wait for each other: one thread can be
        # several times faster than two (docs/ has the measurement); on idle cores more threads are faster.
        torch.set_num_threads(config.threads)
    dataset = ImageFolderDataset(run.data.path, config.resolution, verbose=ctx.is_main)
    if ctx.is_main:
        print(f"train generator: {dataset.root}: {dataset.describe()}", file=sys.stderr)
    total_batch = run.loop.batch_size * ctx.world_size

    G = Generator(**generator_kwargs(config, dataset.c_dim, total_batch)).to(device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    D = Discriminator(
        c_dim=dataset.c_dim, img_resolution=config.resolution, img_channels=3,
        channel_base=config.discriminator_channel_base, channel_max=config.discriminator_channel_max,
        mbstd_group=config.mbstd_group,
    ).to(device)
    stats = TrainingStats().to(device)

    g_ratio = G_REG_INTERVAL / (G_REG_INTERVAL + 1)
    d_ratio = config.r1_interval / (config.r1_interval + 1)
    optimizers = {
        "G": torch.optim.Adam(G.parameters(), lr=config.g_lr * g_ratio, betas=(0.0, 0.99**g_ratio), eps=1e-8),
        "D": torch.optim.Adam(D.parameters(), lr=config.d_lr * d_ratio, betas=(0.0, 0.99**d_ratio), eps=1e-8),
    }
    training = GeneratorTraining(run, ctx, dataset, G_ema, stats, optimizers)
    return Stage(
        modules={"G": G, "D": D, "G_ema": G_ema, "stats": stats},
        optimizers=optimizers,
        dataset=dataset,
        train_step=training.train_step,
        write_samples=training.write_samples,
    )


class GeneratorTraining:
    """One step of NVIDIA's recipe (see the module docstring): G, D, lazy R1, G_ema; and the sample grid."""

    def __init__(self, run: RunConfig, ctx: BuildContext, dataset: ImageFolderDataset, G_ema: Generator,
                 stats: TrainingStats, optimizers: dict[str, torch.optim.Optimizer]):
        self.run = run
        self.config: Config = run.stage
        self.ctx = ctx
        self.device = ctx.device
        self.dataset = dataset
        self.classes = dataset.classes if dataset.conditional else []
        self.G_ema = G_ema
        self.stats = stats
        self.optimizers = optimizers
        self.policy = parse_policy(self.config.augment)
        self.last_time = time.perf_counter()

    def random_c(self, batch: int) -> torch.Tensor:
        """Class labels as often as the training set has them (NVIDIA draws gen_c from the dataset)."""
        picks = torch.randint(len(self.dataset.labels), [batch])  # global RNG: checkpointed
        return self.dataset.one_hot(self.dataset.labels[picks]).to(self.device)

    def augment(self, images: torch.Tensor, images_seen: int) -> torch.Tensor:
        """What D sees: NVIDIA's fading blur (R), then DiffAugment."""
        images = blur(images, blur_sigma_at(self.config, images_seen))
        return diff_augment(images, self.policy) if self.policy else images

    def train_step(self, batch: dict, step: StepContext) -> dict[str, float | torch.Tensor]:
        config, device = self.config, self.device
        real = batch["image"]
        n = real.shape[0]
        c_real = self.dataset.one_hot(batch["label"]).to(device)
        if config.xflip:
            flip = (torch.rand(n) < 0.5).to(device)  # global RNG: checkpointed
            real = torch.where(flip.view(-1, 1, 1, 1), real.flip(-1), real)
        images_before = step.step * n * step.world_size
        loss_g = self.generator_step(step, n, images_before)
        loss_d, real_logits, fake_logits = self.discriminator_step(step, real, c_real, images_before)
        # Lazy R1: a first-order gradient penalty on real images, every r1_interval steps.
        if step.step % config.r1_interval == 0 and config.r1_gamma > 0:
            self.r1_step(step, real, c_real, images_before)

        update_ema(self.G_ema, step.plain["G"], ema_beta(config, images_before, n * step.world_size))
        images_after = images_before + n * step.world_size
        kimg = images_after / 1000

        last_step = step.step + 1 == step.total_steps
        every = self.run.loop.checkpoint_every
        if self.ctx.is_main and (last_step or (every and (step.step + 1) % every == 0)):
            export_generator(self.ctx.run_dir / GENERATOR_FILE, self.G_ema, self.classes, self.dataset, kimg)

        now = time.perf_counter()
        seconds, self.last_time = now - self.last_time, now
        return {
            "G": loss_g.detach(),
            "D": loss_d.detach(),
            "r1": self.stats.last_r1.clone(),
            "D_real": real_logits.detach().mean(),
            "D_fake": fake_logits.detach().mean(),
            "kimg": kimg,
            "s_per_kimg": seconds / (n * step.world_size / 1000),
        }

    def generator_step(self, step: StepContext, n: int, images_before: int) -> torch.Tensor:
        """G's non-saturating loss on fresh fakes; D only passes gradients through."""
        D_plain = step.plain["D"]
        D_plain.requires_grad_(False)
        z = torch.randn([n, self.config.z_dim]).to(self.device)
        c_gen = self.random_c(n)
        with step.autocast():
            fake = step.modules["G"](z, c_gen)
            gen_logits = D_plain(self.augment(fake, images_before), c_gen).float()
        loss_g = F.softplus(-gen_logits).mean()
        self.optimizers["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        sanitize_grads(step.plain["G"])
        self.optimizers["G"].step()
        D_plain.requires_grad_(True)
        return loss_g

    def discriminator_step(self, step: StepContext, real: torch.Tensor, c_real: torch.Tensor,
                           images_before: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(D's loss, its logits on the real and on the fake images): real and fake in one call (a DDP module
        runs once per backward); the fakes are made with update_emas, which updates G's EMAs."""
        n = real.shape[0]
        z = torch.randn([n, self.config.z_dim]).to(self.device)
        c_gen = self.random_c(n)
        with torch.no_grad(), step.autocast():
            fake = step.plain["G"](z, c_gen, update_emas=True)
        with step.autocast():
            both = self.augment(torch.cat([real, fake.float()]), images_before)
            logits = step.modules["D"](both, torch.cat([c_real, c_gen])).float()
        real_logits, fake_logits = logits[:n], logits[n:]
        loss_d = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        self.optimizers["D"].zero_grad(set_to_none=True)
        loss_d.backward()
        sanitize_grads(step.plain["D"])
        self.optimizers["D"].step()
        return loss_d, real_logits, fake_logits

    def r1_step(self, step: StepContext, real: torch.Tensor, c_real: torch.Tensor, images_before: int) -> None:
        """The lazy R1 update of D (its backward differentiates D twice); the penalty is kept for the log."""
        config = self.config
        real_in = real.detach().requires_grad_(True)
        with step.autocast():
            r1_logits = step.modules["D"](self.augment(real_in, images_before), c_real).float()
        (grad,) = torch.autograd.grad(r1_logits.sum(), real_in, create_graph=True)
        penalty = grad.square().sum(dim=[1, 2, 3])
        loss_r1 = (penalty * (config.r1_gamma / 2)).mean() * config.r1_interval + r1_logits.mean() * 0
        self.optimizers["D"].zero_grad(set_to_none=True)
        loss_r1.backward()
        sanitize_grads(step.plain["D"])
        self.optimizers["D"].step()
        self.stats.last_r1.copy_(penalty.detach().mean())

    def write_samples(self, out_dir: Path, step: int) -> None:
        """A fixed grid from G_ema: one row per class (the same latents in every row), or `sample_rows` rows."""
        config, classes = self.config, self.classes
        rng = torch.Generator().manual_seed(config.sample_seed)
        rows_count = len(classes) if classes else config.sample_rows
        if classes:
            z = torch.randn([config.sample_columns, config.z_dim], generator=rng).repeat(rows_count, 1)
            labels = torch.arange(rows_count).repeat_interleave(config.sample_columns)
        else:
            z = torch.randn([rows_count * config.sample_columns, config.z_dim], generator=rng)
            labels = torch.zeros(rows_count * config.sample_columns, dtype=torch.int64)
        c = self.dataset.one_hot(labels)
        images = torch.cat([self.G_ema(z[i : i + 16].to(self.device), c[i : i + 16].to(self.device)).cpu()
                            for i in range(0, z.shape[0], 16)])
        rows = list(images.split(config.sample_columns))
        write_grid(out_dir / f"generator-{step:07d}.png", rows)


__all__ = ["Config", "GENERATOR_FILE", "build", "export_generator", "generator_kwargs"]
