"""`soundvj train stepper`: the latent stepper, adversarially (docs/method.md, "Training", stage 3).

For a clip of T frames (supplement A: 10 frames, batch 2) with mel windows a_1..a_T:

    w_0 = mapping(z), z ~ N(0, I)                         (as at inference: the seed's latent)
    w_1..w_T = stepper rollout with w_hat(t) = E_I(a_t), e_t = E_A(a_t), noise n_t ~ N(0, noise_std^2)
    fake frames = G(w_t);  real frames = the clip's frames 1..T

Stepper loss: LSGAN against D_I (per frame) and D_V (the clip) + lambda_enc * L_enc on the generated
frames. Discriminator loss: LSGAN on real vs. (detached) fake. AdamW at lr 1e-4 for the stepper and
both discriminators, 5e-4 for E_I when it is fine-tuned (official code), all decayed x0.98 every
`decay_every` steps (the official code: per epoch). E_A, CLIP and the generator stay frozen.

Decisions (the paper is silent): training alpha 0.4 (the official inference value), noise std 0.3
(the presets' default), lambda_enc 1.0.

Beyond the paper (off by default), as in `train inverter`: with a class-conditional generator whose class
names are the dataset's, `lambda_class_w` adds `||w_tilde_t - w_class(label)||^2` on the stepper's
proposals (w_tilde_t = w_{t-1} + (w_t - w_{t-1}) / alpha, the point each frame moves toward): on the frames
themselves the start from w_0 dominates the distance and the term would teach the stepper to overshoot.
Without it the only pull in W is lambda_b's toward w_avg, the average over all classes, which can draw a
class toward another class's look.

Also beyond the paper (off by default): `lambda_delta` adds `||w_tilde_t - w_hat(t)||^2`, the square of the
stepper's own term d_t, so its proposals stay near what E_I makes of the same window. The GAN and CLIP terms
can pull a class's frames away from E_I's (`soundvj eval --parts` shows which part loses a class); with the
term the frames keep E_I's meaning and the stepper adds motion around it.

Also beyond the paper (off by default): `burn_in_frames` = K runs the stepper, without gradient and without
frames, over up to K windows that come before each training clip (k drawn per step from 0..K), and trains the
clip from the state it reached. The paper trains on 10-frame clips that start from an empty GRU state, but
live, and in `eval`, the stepper runs for hundreds of frames, so without burn-in the states a long rollout
reaches are never trained (`eval --parts` prints the accuracy by time since the clip began).

Also beyond the paper (off by default): `conditional_discriminators` makes D_I and D_V class-conditional
(projection). The paper's discriminators compare a frame with real frames of any class, so once they win
their gradient pulls every class toward whatever look is least fake; conditioned on the clip's class they
compare rain frames with real rain frames.

docs/ records what each of these did on the demo data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from core.errors import SoundvjError
from core.audio.mel import MelConfig
from core.sound import LatentStepper, LatentStepperConfig
from core.sound.embedding_heads import embed_windows
from core.sound.embedding_schedule import embedding_source_frame
from core.sound.sound_embedding import mel_config_for
from core.stylegan3.networks import Generator
from training.config import RunConfig
from training.data.stage_datasets import check_classes, frames_to_generator_range, open_stage_datasets
from training.evaluation.samples import items_per_class, write_grid, write_sample_video
from training.loop import BuildContext, Stage, StepContext
from training.losses import encoder_loss, lsgan_discriminator_loss, lsgan_generator_loss
from training.models.clip import ClipConfig, build_clip
from training.models.discriminators import ImageDiscriminator, VideoDiscriminator
from training.schedules import decay_schedule
from training.settings import setting
from training.stages.audio_encoder import trained_audio_encoder
from training.stages.inverter import check_embed_dims, class_latents, trained_inversion_encoder
from training.stages.pretrained import frozen_generator


@dataclass(frozen=True)
class Config:
    """The `stage:` section of `train stepper`."""

    clip: ClipConfig = setting(default_factory=ClipConfig, help="the frozen CLIP (clip.checkpoint required)")
    generator: str = setting("default", help="the frozen generator: model file, NVIDIA pickle or 'default'")
    audio_encoder: str = setting("", help="run folder (or checkpoint.pt) of `train audio-encoder`")
    inverter: str = setting("", help="run folder (or checkpoint.pt) of `train inverter`")
    hidden: int = setting(512, min=1, max=4096, help="GRU hidden size (paper: 512)")
    num_layers: int = setting(5, min=1, max=16, help="stacked GRU layers (paper: 5)")
    noise_dim: int = setting(512, min=0, max=4096, help="noise vector fed to the last FC (paper: 512)")
    delta_init_std: float = setting(0.05, min=0.0, max=10.0, help="initial std of the stepper's d_t")
    alpha: float = setting(0.4, min=0.0, max=1.0, help="blend toward w_tilde per frame while training")
    noise_std: float = setting(0.3, min=0.0, max=2.0, help="std of the noise vector while training")
    lambda_enc: float = setting(1.0, min=0.0, help="weight of L_enc on the generated frames")
    lambda_b: float = setting(1.0, min=0.0, help="L_enc's weight of ||w - w_avg||^2")
    lambda_class_w: float = setting(0.0, min=0.0, help="weight of ||w_tilde_t - w_class(label)||^2 (class-conditional "
                                    "generators whose class names match the data's; 0: off, as in the paper)")
    class_latent_samples: int = setting(1024, min=1, max=100000, help="mapped latents averaged per class for w_class")
    lambda_delta: float = setting(0.0, min=0.0, help="weight of ||w_tilde_t - w_hat(t)||^2, how far the stepper's proposals "
                                  "leave E_I's latent of the same window (0: off, as in the paper)")
    lr: float = setting(1e-4, min=0.0, help="AdamW learning rate of the stepper")
    discriminator_lr: float = setting(1e-4, min=0.0, help="AdamW learning rate of D_I and D_V")
    finetune_inverter: bool = setting(False, help="train E_I too (at inverter_lr)")
    inverter_lr: float = setting(5e-4, min=0.0, help="AdamW learning rate of E_I when fine-tuned")
    lr_decay: float = setting(0.98, min=0.0, max=1.0, help="learning rates x lr_decay every decay_every steps")
    decay_every: int = setting(1000, min=1, help="steps between learning-rate decays")
    image_discriminator_width: int = setting(64, min=1, max=512, help="D_I first-block channels")
    video_discriminator_width: int = setting(32, min=1, max=512, help="D_V first-block channels")
    temporal_kernel: int = setting(3, min=1, max=9, help="D_V temporal kernel (official code: 1, blind to motion)")
    burn_in_frames: int = setting(0, min=0, max=1000, help="run the stepper (no gradient, no frames) over up to this many "
                                  "windows before each training clip, so it trains on states a long rollout reaches "
                                  "(items get data.clip_frames + this many windows; 0: off, as in the paper)")
    conditional_discriminators: bool = setting(False, help="D_I and D_V judge each clip against real clips of its own "
                                               "class (projection); off: any class, as in the paper")
    sample_seed: int = setting(0, min=0, help="seed of the sample grid's first latent and noise")
    sample_video_seconds: float = setting(2.0, min=0.0, max=60.0, resumable=True,
                                          help="length of the per-class sample videos with sound (0: none)")


def model_config(config: Config, G: Generator, embed_dim: int) -> LatentStepperConfig:
    """The stepper's core config: sizes from the stage config, num_ws/w_dim from G, embed_dim from E_A."""
    return LatentStepperConfig(
        num_ws=G.num_ws,
        w_dim=G.w_dim,
        hidden=config.hidden,
        num_layers=config.num_layers,
        embed_dim=embed_dim,
        noise_dim=config.noise_dim,
        delta_init_std=config.delta_init_std,
    )


@torch.no_grad()
def burn_in(stepper: LatentStepper, w0: torch.Tensor, w_hats: torch.Tensor, embeds: torch.Tensor, alpha: float,
            noise_std: float, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(w_K, hidden_K): the stepper's state after the K frames of w_hats [B, K, num_ws, w_dim] and embeds [B, K, D]
    from w0 and an empty GRU state, as K live steps leave it; no gradient (the burn-in is not trained)."""
    w, hidden = w0, None
    for t in range(w_hats.shape[1]):
        w, hidden = stepper.step(w, w_hats[:, t], embeds[:, t], hidden, alpha, noise_std, generator)
    return w, hidden


def open_clip_data(run: RunConfig, resolution: int, mel: MelConfig | None = None) -> tuple[Dataset, Dataset, list[str]]:
    """(training split, held-out split, class names) of clips of data.clip_frames frames; with burn-in, each
    item also holds the stage.burn_in_frames windows before its clip (the burn-in's sound)."""
    lead = run.stage.burn_in_frames
    if not lead:
        dataset, holdout = open_stage_datasets(run, resolution, need_frames=True, min_clip_frames=2, mel=mel)
        return dataset, holdout, check_classes(dataset)
    if run.data.clip_frames < 2:
        raise SoundvjError(f"data.clip_frames: `train stepper` trains on clips of frames; expected >= 2, "
                           f"got {run.data.clip_frames}")
    longer = dataclasses.replace(run, data=dataclasses.replace(run.data, clip_frames=run.data.clip_frames + lead))
    try:
        dataset, holdout = open_stage_datasets(longer, resolution, need_frames=True, mel=mel)
    except SoundvjError as error:
        raise SoundvjError(f"{error} (data.clip_frames {run.data.clip_frames} + stage.burn_in_frames {lead}: "
                           "every item holds both)") from error
    classes = check_classes(dataset)
    covered = {dataset.labels[clip_index] for clip_index, _ in dataset.items}  # type: ignore[attr-defined]
    short = [c for i, c in enumerate(classes) if i not in covered]
    if short:
        raise SoundvjError(f"stage.burn_in_frames: no training clip of {', '.join(short)} is "
                           f"{run.data.clip_frames + lead} frames long (data.clip_frames + stage.burn_in_frames)")
    return dataset, holdout, classes


def build(run: RunConfig, ctx: BuildContext) -> Stage:
    config: Config = run.stage
    device = ctx.device
    if config.temporal_kernel % 2 == 0:
        raise SoundvjError(f"stage.temporal_kernel: expected an odd number, got {config.temporal_kernel}")
    G = frozen_generator(config.generator, device)
    clip = build_clip(config.clip).freeze().to(device)
    audio_encoder = trained_audio_encoder(config.audio_encoder, "stage.audio_encoder", device)
    check_embed_dims(clip.embed_dim, audio_encoder.embed_dim, config.audio_encoder)
    inverter = trained_inversion_encoder(config.inverter, "stage.inverter", G, device)
    dataset, holdout, classes = open_clip_data(run, G.img_resolution, mel_config_for(audio_encoder.config.backbone))
    with torch.no_grad():
        class_text = clip.encode_labels(classes)
    w_class = class_latents(G, config.generator, classes, config.class_latent_samples) if config.lambda_class_w > 0 else None
    if config.lambda_delta > 0 and config.alpha <= 0:
        raise SoundvjError("stage.lambda_delta: needs stage.alpha > 0 (the term is on the proposals the frames move toward)")
    if w_class is not None and config.alpha <= 0:
        raise SoundvjError("stage.lambda_class_w: needs stage.alpha > 0 (the term is on the proposals the frames move toward)")

    stepper = LatentStepper(model_config(config, G, audio_encoder.embed_dim)).to(device)
    stepper.set_w_avg(G.mapping.w_avg)
    num_classes = len(classes) if config.conditional_discriminators else 0
    image_d = ImageDiscriminator(config.image_discriminator_width, num_classes=num_classes).to(device)
    video_d = VideoDiscriminator(config.video_discriminator_width, config.temporal_kernel, num_classes=num_classes).to(device)
    modules: dict[str, torch.nn.Module] = {
        "latent_stepper": stepper,
        "image_discriminator": image_d,
        "video_discriminator": video_d,
    }
    stepper_groups = [{"params": list(stepper.parameters()), "lr": config.lr}]
    if config.finetune_inverter:
        inverter.requires_grad_(True)
        modules["inversion_encoder"] = inverter
        stepper_groups.append({"params": list(inverter.parameters()), "lr": config.inverter_lr})
    optimizers = {
        "stepper": torch.optim.AdamW(stepper_groups),
        "discriminators": torch.optim.AdamW(
            list(image_d.parameters()) + list(video_d.parameters()), lr=config.discriminator_lr
        ),
    }
    schedulers = {name: decay_schedule(opt, config.lr_decay, config.decay_every) for name, opt in optimizers.items()}
    chain = FrozenChain(G, clip, audio_encoder, inverter, class_text, w_class, run.data.fps)
    training = StepperTraining(run, chain, stepper, (image_d, video_d), optimizers, num_classes, device)
    samples = StepperSamples(run, chain, stepper, holdout, classes, device)
    return Stage(
        modules=modules,
        optimizers=optimizers,
        schedulers=schedulers,
        dataset=dataset,
        train_step=training.train_step,
        write_samples=samples.write,
    )


@dataclass(frozen=True)
class FrozenChain:
    """What the stepper trains against, all frozen: the generator, CLIP, E_A and E_I (unless fine-tuned),
    CLIP's embeddings of the class captions, and the class latents (None when lambda_class_w is off)."""

    G: Generator
    clip: torch.nn.Module
    audio_encoder: torch.nn.Module
    inverter: torch.nn.Module
    class_text: torch.Tensor
    w_class: torch.Tensor | None
    fps: float = 24.0

    def sound(self, mel: torch.Tensor, inversion: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """(E_A embeddings [B, T, D], E_I's w_hat [B, T, num_ws, w_dim]) for mel windows [B, T, n_mels, W]
        of streams that start at their first window. Heads over the sound embedding hear it on the
        frame pipeline's key-frame schedule, as they do live and in `render`."""
        batch, frames = mel.shape[:2]
        if self.audio_encoder.config.backbone == "embedding":
            used = [embedding_source_frame(t, self.fps) for t in range(frames)]
            keys = sorted(set(used))
            key_embeddings = embed_windows(mel[:, keys].flatten(0, 1)).view(batch, len(keys), -1)  # frozen
            per_frame = key_embeddings[:, [keys.index(u) for u in used]].flatten(0, 1)
            with torch.no_grad():
                embeds = self.audio_encoder.from_embedding(per_frame).float().view(batch, frames, -1)
            w_hats = inversion.from_embedding(per_frame).float()
            return embeds, w_hats.view(batch, frames, self.G.num_ws, self.G.w_dim)
        flat = mel.flatten(0, 1)
        with torch.no_grad():
            embeds = self.audio_encoder(flat).float().view(batch, frames, -1)
        return embeds, inversion(flat).float().view(batch, frames, self.G.num_ws, self.G.w_dim)


def rollout(chain: FrozenChain, stepper: LatentStepper, config: Config, mel: torch.Tensor, inversion: torch.nn.Module,
            step_module: torch.nn.Module, rng: torch.Generator | None, context: torch.Tensor | None = None,
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ws [B, T, num_ws, w_dim], E_A embeddings [B, T, D], w_0 [B, num_ws, w_dim], E_I's w_hat [B, T, num_ws,
    w_dim]) for mel windows [B, T, n_mels, W], from w_0 = mapping(z), or with `context` windows [B, K, n_mels, W]
    from the state a rollout over them reached (then w_0 is that rollout's last latent). `step_module` runs
    the rollout (the DDP-wrapped stepper while training); the burn-in runs the plain `stepper`."""
    G = chain.G
    device = mel.device
    with torch.no_grad():
        z = torch.randn([mel.shape[0], G.z_dim], generator=rng).to(device)
        w0 = G.mapping(z, torch.zeros([mel.shape[0], G.c_dim], device=device))
    hidden = None
    if context is not None and context.shape[1]:
        lead = context.shape[1]
        # One stream from the burn-in's first window on: the sound models' schedule runs across both.
        embeds, w_hats = chain.sound(torch.cat([context, mel], dim=1), inversion)
        with torch.no_grad():
            w0, hidden = burn_in(stepper, w0, w_hats[:, :lead].detach(), embeds[:, :lead], config.alpha,
                                 config.noise_std, rng)
        embeds, w_hats = embeds[:, lead:], w_hats[:, lead:]
    else:
        embeds, w_hats = chain.sound(mel, inversion)
    ws = step_module(w0, w_hats, embeds, config.alpha, config.noise_std, rng, hidden=hidden)
    return ws, embeds, w0, w_hats


class StepperTraining:
    """One training step: the stepper against D_I, D_V and L_enc (plus the optional terms), then the
    discriminators on real vs. the step's fake frames."""

    def __init__(self, run: RunConfig, chain: FrozenChain, stepper: LatentStepper,
                 discriminators: tuple[torch.nn.Module, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                 num_classes: int, device: torch.device):
        self.config: Config = run.stage
        self.chain = chain
        self.stepper = stepper
        self.discriminators = discriminators
        self.optimizers = optimizers
        self.num_classes = num_classes
        self.device = device

    def train_step(self, batch: dict, step: StepContext) -> dict[str, torch.Tensor]:
        config, chain = self.config, self.chain
        mel, labels = batch["mel"], batch["label"]
        real = frames_to_generator_range(batch["frames"])  # [B, T, 3, H, W]
        context = None
        lead = config.burn_in_frames
        if lead:
            k = int(torch.randint(0, lead + 1, ()))  # global RNG: checkpointed; k = 0 is the paper's fresh start
            context = mel[:, lead - k : lead]
            mel, real = mel[:, lead:], real[:, lead:]
        b, t = real.shape[:2]
        frame_labels = labels.repeat_interleave(t) if self.num_classes else None
        clip_labels = labels if self.num_classes else None
        inversion = step.modules["inversion_encoder"] if config.finetune_inverter else chain.inverter
        with step.autocast():
            ws, embeds, w0, w_hats = rollout(chain, self.stepper, config, mel, inversion, step.modules["latent_stepper"],
                                             None, context)  # global RNG
            fake = chain.G.synthesis(ws.flatten(0, 1), noise_mode="const").float()  # [B*T, 3, H, W]
            fake_clip = fake.view(b, t, *fake.shape[1:]).transpose(1, 2)  # [B, 3, T, H, W]
            # Stepper side: the discriminators only pass gradients through.
            for d in self.discriminators:
                d.requires_grad_(False)
            adversarial = lsgan_generator_loss(step.plain["image_discriminator"](fake, frame_labels)) + lsgan_generator_loss(
                step.plain["video_discriminator"](fake_clip, clip_labels)
            )
            image_embed = chain.clip.encode_images(fake).float()
            text_embed = chain.class_text[labels].float().repeat_interleave(t, dim=0)
            enc = encoder_loss(image_embed, embeds.flatten(0, 1), text_embed, ws.flatten(0, 1), chain.G.mapping.w_avg,
                               config.lambda_b)
            stepper_loss = adversarial + config.lambda_enc * enc["loss"]
            extra = self.proposal_terms(ws, w0, w_hats, labels)
            for name, value in extra.items():
                weight = config.lambda_class_w if name == "class_latent" else config.lambda_delta
                stepper_loss = stepper_loss + weight * value
        self.optimizers["stepper"].zero_grad(set_to_none=True)
        stepper_loss.backward()
        self.optimizers["stepper"].step()
        for d in self.discriminators:
            d.requires_grad_(True)

        d_loss = self.discriminator_step(step, real, fake, fake_clip, frame_labels, clip_labels)
        with torch.no_grad():
            accuracy = ((image_embed @ chain.class_text.float().T).argmax(dim=1) == labels.repeat_interleave(t)).float().mean()
            motion = (fake_clip[:, :, 1:] - fake_clip[:, :, :-1]).abs().mean()
        logged = {
            "loss": stepper_loss.detach(),
            "adversarial": adversarial.detach(),
            "enc": enc["loss"].detach(),
            "discriminator": d_loss.detach(),
            "zero_shot_accuracy": accuracy,
            "frame_change": motion,
        }
        return {**logged, **{name: value.detach() for name, value in extra.items()}}

    def proposal_terms(self, ws: torch.Tensor, w0: torch.Tensor, w_hats: torch.Tensor,
                       labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The optional terms on the stepper's proposals w_tilde_t (the points the frames move toward):
        "class_latent" (distance to the class's latent) and "delta" (distance to E_I's w_hat, i.e. d_t)."""
        config, w_class = self.config, self.chain.w_class
        terms: dict[str, torch.Tensor] = {}
        if w_class is None and config.lambda_delta <= 0:
            return terms
        previous = torch.cat([w0.unsqueeze(1), ws[:, :-1]], dim=1)
        proposals = previous + (ws - previous) / config.alpha
        if w_class is not None:
            terms["class_latent"] = (proposals - w_class[labels].unsqueeze(1)).square().mean()
        if config.lambda_delta > 0:
            terms["delta"] = (proposals - w_hats).square().mean()  # d_t itself: the proposal is w_hat + d_t
        return terms

    def discriminator_step(self, step: StepContext, real: torch.Tensor, fake: torch.Tensor, fake_clip: torch.Tensor,
                           frame_labels: torch.Tensor | None, clip_labels: torch.Tensor | None) -> torch.Tensor:
        """LSGAN on real vs. the (detached) fake frames and clips; real and fake in one call each (a DDP
        module runs once per backward)."""
        b, t = real.shape[:2]
        with step.autocast():
            image_scores = step.modules["image_discriminator"](
                torch.cat([real.flatten(0, 1), fake.detach()]), None if frame_labels is None else frame_labels.repeat(2)
            )
            video_scores = step.modules["video_discriminator"](
                torch.cat([real.transpose(1, 2), fake_clip.detach()]), None if clip_labels is None else clip_labels.repeat(2)
            )
            n_img = b * t
            d_loss = lsgan_discriminator_loss(image_scores[:n_img].float(), image_scores[n_img:].float()) + (
                lsgan_discriminator_loss(video_scores[:b].float(), video_scores[b:].float())
            )
        self.optimizers["discriminators"].zero_grad(set_to_none=True)
        d_loss.backward()
        self.optimizers["discriminators"].step()
        return d_loss


class StepperSamples:
    """The stage's samples: one row per class of the frames the stepper makes for a held-out clip of that
    class, and per class a short video of the first seconds of that clip with its sound."""

    def __init__(self, run: RunConfig, chain: FrozenChain, stepper: LatentStepper, holdout: Dataset,
                 classes: list[str], device: torch.device):
        self.config: Config = run.stage
        self.fps = run.data.fps
        self.chain = chain
        self.stepper = stepper
        self.holdout = holdout
        self.classes = classes
        self.device = device

    def latents(self, mel: torch.Tensor) -> torch.Tensor:
        """The stepper's latents [T, num_ws, w_dim] for one clip's windows [T, n_mels, W], from the sample seed."""
        rng = torch.Generator().manual_seed(self.config.sample_seed)
        return rollout(self.chain, self.stepper, self.config, mel.unsqueeze(0).to(self.device), self.chain.inverter,
                       self.stepper, rng)[0][0]

    def write(self, out_dir: Path, step: int) -> None:
        G = self.chain.G
        rows = items_per_class(self.holdout, len(self.classes), 1)
        if not any(rows):
            return
        frames = []
        for row in rows:
            if not row:
                frames.append(torch.zeros(0, 3, G.img_resolution, G.img_resolution))
                continue
            frames.append(G.synthesis(self.latents(row[0]["mel"]), noise_mode="const").cpu())
        write_grid(out_dir / f"stepper-{step:07d}.png", frames)
        video_frames = round(self.config.sample_video_seconds * self.fps)
        if video_frames < 1:
            return
        for label, row in enumerate(rows):
            if not row:
                continue
            whole = self.holdout.whole_clip(int(row[0]["clip"]))  # type: ignore[attr-defined]
            ws = self.latents(whole["mel"][:video_frames])
            clip_frames = torch.cat([G.synthesis(ws[i : i + 8], noise_mode="const").cpu() for i in range(0, ws.shape[0], 8)])
            write_sample_video(out_dir / f"stepper-{step:07d}-{self.classes[label]}.mp4", clip_frames, self.fps,
                               whole["path"], clip_frames.shape[0] / self.fps)
