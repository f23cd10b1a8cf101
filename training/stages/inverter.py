"""`soundvj train inverter`: the sound inversion encoder E_I (docs/method.md, "Training", stage 2).

    w_hat = w_avg + E_I(mel)
    L_enc = (1 - cos(CLIP_img(G(w_hat)), E_A(mel))) + (1 - cos(CLIP_img(G(w_hat)), CLIP_txt(caption)))
            + lambda_b * ||w_hat - w_avg||^2          (lambda_b = 1.0, supplement D; mean square per entry)

The generator, CLIP and E_A (from a `train audio-encoder` run, decision: frozen) only pass gradients
through. Decisions: AdamW at the official stage-3 E_I learning rate 5e-4 with a linear warm-up; CLIP
sees the whole generated image once (the authors' code takes 32 random 224-px cut-outs of it).

Beyond the paper (off by default): with a class-conditional generator whose class names are the
dataset's, `lambda_class_w` adds `||w_hat - w_class(label)||^2`, `w_class` the mean mapped latent of the
sound's class. It gives E_I a direct target in W where CLIP's gradient through the generator is weak
(a small CLIP trained on little data), so the picture lands in the sound's class from the first steps.

Also beyond the paper (off by default): with `backbone: embedding`, `prototypes` (the data's class count)
makes E_I choose among kinds of scene by a linear read-out of the embedding and add the chosen scene's
offset, the choice trained by `lambda_kind` times its cross-entropy against the sound's class; the scenes
start at `w_class` when the generator is class-conditional with the data's class names. A linear read-out
is what keeps telling kinds of sound apart on recordings of other sources (docs/sound-embedding.md).
With `kind_fit_steps` the choice is instead fitted once before the loop, on the embeddings of every
training window with each recording weighing the same (`training.read_out`), and then kept fixed: learnt
from a few windows a step, it moved from seed to seed by more than a change of data does.

Also beyond the paper (off by default): `spec_augment` and `level_db` alter the window E_I hears (not the
one E_A turns into the target), so E_I may learn the kind of sound rather than one recording's level and
details; `mix_same_class` makes new recordings of a kind by mixing windows of two clips of the same class
(E_A's target is then the mix's). Trained on a few files per class, E_I maps an unheard recording wherever
its nearest training file's quirks point; these three aim at that (docs/ records what they did on the
demo data).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from core.errors import SoundvjError
from core.model_credits import class_names
from core.sound import InversionEncoderConfig, build_inversion_encoder
from core.sound.embedding_heads import embed_windows
from core.sound.sound_embedding import mel_config_for, shared_sound_embedding
from core.stylegan3.networks import Generator
from training.augment.mel import level_shift, mix_recordings, spec_augment
from training.config import RunConfig
from training.data.clip_sources import clip_sources_path, listed_source, read_clip_sources
from training.data.stage_datasets import check_classes, open_stage_datasets
from training.evaluation.samples import items_per_class, write_grid
from training.loop import BuildContext, Stage, StepContext
from training.losses import encoder_loss
from training.models.clip import ClipConfig, build_clip
from training.read_out import ReadOutFit, fit_read_out
from training.schedules import warmup_schedule
from training.settings import setting
from training.stages import INVERTER_STAGE
from training.stages.audio_encoder import trained_audio_encoder
from training.stages.pretrained import (
    frozen,
    frozen_generator,
    generator_metadata,
    module_state,
    read_stage_checkpoint,
    stage_config_from,
)

KIND_FIT_BATCH = 64  # windows per embedding call while fitting the choice of kind


@dataclass(frozen=True)
class Config:
    """The `stage:` section of `train inverter`."""

    clip: ClipConfig = setting(default_factory=ClipConfig, help="the frozen CLIP (clip.checkpoint required)")
    generator: str = setting("default", help="the frozen generator: model file, NVIDIA pickle or 'default'")
    audio_encoder: str = setting("", help="run folder (or checkpoint.pt) of `train audio-encoder`")
    width: int = setting(8, min=4, max=256, help="E_I base channels (8 keeps the embedded default live)")
    blocks_per_stage: tuple[int, ...] = setting((2, 2, 2, 2), help="residual blocks per backbone stage")
    offset_init_std: float = setting(0.25, min=0.0, max=10.0, help="initial std of E_I's offsets from w_avg")
    lambda_b: float = setting(1.0, min=0.0, help="weight of ||w_hat - w_avg||^2 (supplement D: 1.0)")
    lr: float = setting(5e-4, min=0.0, help="AdamW learning rate")
    weight_decay: float = setting(0.0, min=0.0, help="AdamW weight decay")
    warmup_steps: int = setting(50, min=0, help="linear learning-rate warm-up")
    samples_per_class: int = setting(4, min=1, max=64, help="held-out sounds per class in the sample grid")
    lambda_class_w: float = setting(0.0, min=0.0, help="weight of ||w_hat - w_class(label)||^2 (class-conditional "
                                    "generators whose class names match the data's; 0: off, as in the paper)")
    class_latent_samples: int = setting(1024, min=1, max=100000, help="mapped latents averaged per class for w_class")
    spec_augment: bool = setting(False, help="SpecAugment on E_I's input (2 masks each of <= 15% of the mel bins and "
                                 "<= 30% of the time); E_A still sees the whole window (off: as in the paper)")
    level_db: float = setting(0.0, min=0.0, max=40.0, help="E_I hears each window up to this many dB louder or "
                              "quieter (uniform per window), as another microphone or mix would be (0: off)")
    mix_same_class: float = setting(0.0, min=0.0, max=1.0, help="share of windows heard mixed with a window of "
                                    "another training clip of the same class (a new recording of that kind; 0: off)")
    backbone: str = setting("resnet", help="resnet: E_I hears the mel window itself; embedding: a head over the "
                            "pretrained sound embedding (must match the audio encoder's)")
    head_hidden: int = setting(512, min=1, max=8192, help="hidden units of the head over the sound embedding")
    prototypes: int = setting(0, min=0, max=1024, help="kinds of scene E_I chooses among: the data's class count "
                              "(backbone embedding; 0: off). Each starts at its class's mean latent when the "
                              "generator is class-conditional with the data's class names")
    lr_kind: float = setting(0.0, min=0.0, help="AdamW learning rate of E_I's choice of kind (a linear layer, which "
                             "wants more than the rest of the head; 0: stage.lr)")
    lambda_kind: float = setting(1.0, min=0.0, help="weight of the cross-entropy of E_I's choice of kind against the "
                                 "sound's class (with prototypes, when the choice is learnt in the loop)")
    kind_fit_steps: int = setting(0, min=0, max=1_000_000, help="with prototypes: fit E_I's choice of kind before the "
                                  "loop, on the embeddings of every training window with every recording weighing the "
                                  "same (training.read_out), and keep it and the LayerNorm it reads fixed; 0: learn "
                                  "it in the loop on each step's windows")
    kind_fit_groups: Literal["recording", "source", "class"] = setting(
        "recording", help="what weighs the same within a class in the fit: each recording, each source (package or "
        "author; both from the data's SOURCES.csv, else each class is one group) or each window (class)")
    kind_fit_noise: float = setting(0.5, min=0.0, max=10.0, help="Gaussian noise on the fit's standardised "
                                    "embeddings, in standard deviations")
    kind_fit_lr: float = setting(1e-3, min=1e-9, help="AdamW learning rate of the fit (above 0: a fit that cannot move is refused)")
    kind_fit_weight_decay: float = setting(1e-3, min=0.0, help="AdamW weight decay of the fit")
    remember_windows: int = setting(60000, min=0, max=10_000_000, help="embeddings of distinct windows kept in "
                                    "memory (backbone embedding)")


def generator_classes(spec: str) -> list[str] | None:
    """The class names a trained conditional generator carries in its model file (None: not known)."""
    return class_names(generator_metadata(spec))


@torch.no_grad()
def class_latents(G: Generator, spec: str, classes: tuple[str, ...] | list[str], samples: int, seed: int = 0) -> torch.Tensor:
    """[classes, num_ws, w_dim]: the mean mapped latent of each data class, in the data's class order.

    The generator must be class-conditional with the same class names (in any order); one-line errors."""
    known = generator_classes(spec)
    if G.c_dim == 0 or known is None:
        raise SoundvjError(f"stage.lambda_class_w: the generator {spec!r} is not a class-conditional generator "
                           "with class names (train one with `soundvj train generator` on a folder per class)")
    missing = [c for c in classes if c not in known]
    if missing:
        raise SoundvjError(f"stage.lambda_class_w: the data's classes {missing} are not among the generator's {known}")
    rng = torch.Generator().manual_seed(seed)
    device = G.mapping.w_avg.device
    out = []
    for name in classes:
        z = torch.randn([samples, G.z_dim], generator=rng).to(device)
        c = torch.zeros([samples, G.c_dim], device=device)
        c[:, known.index(name)] = 1
        out.append(G.mapping(z, c).mean(dim=0))
    return torch.stack(out)


def model_config(config: Config, G: Generator) -> InversionEncoderConfig:
    """E_I's core config: sizes from the stage config, num_ws and w_dim from the generator."""
    return InversionEncoderConfig(
        num_ws=G.num_ws,
        w_dim=G.w_dim,
        n_mels=mel_config_for(config.backbone).n_mels,
        width=config.width,
        blocks_per_stage=tuple(config.blocks_per_stage),
        offset_init_std=config.offset_init_std,
        backbone=config.backbone,
        head_hidden=config.head_hidden,
        prototypes=config.prototypes,
    )


def training_window_embeddings(dataset: torch.utils.data.Dataset, data_path: str | Path, device: torch.device,
                                groups_by: str = "recording") -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
    """The sound embedding of every training item's window [N, 512], its class [N] and its clip's group:
    its recording or its source (`groups_by`, from the dataset's `SOURCES.csv`); None when grouping by
    class or when the dataset has no such list."""
    listed = groups_by != "class" and clip_sources_path(data_path).is_file()
    sources = read_clip_sources(data_path) if listed else None
    groups: list[str] | None = [] if sources is not None else None
    embeddings, labels = [], []
    for first in range(0, len(dataset), KIND_FIT_BATCH):
        items = [dataset[k] for k in range(first, min(first + KIND_FIT_BATCH, len(dataset)))]
        with torch.no_grad():
            embeddings.append(embed_windows(torch.stack([item["mel"][0] for item in items]).to(device)).float())
        labels += [int(item["label"]) for item in items]
        if groups is not None:
            for item in items:
                entry = dataset.clips[int(item["clip"])].entry  # type: ignore[attr-defined]
                listed = listed_source(sources, data_path, entry.label, entry.path)
                groups.append(listed.recording if groups_by == "recording" else listed.source)
    return torch.cat(embeddings), torch.tensor(labels, device=device), groups


def fit_kind(encoder: torch.nn.Module, dataset: torch.utils.data.Dataset, run: RunConfig, device: torch.device) -> None:
    """Fit E_I's choice of kind on every training window (`training.read_out`), then fix it and the
    LayerNorm it reads (at rest, as the fit assumed): the rest of E_I learns around a steady choice."""
    config: Config = run.stage
    print(f"train inverter: fitting the choice of kind on {len(dataset)} training windows", file=sys.stderr, flush=True)
    embeddings, labels, groups = training_window_embeddings(dataset, run.data.path, device, config.kind_fit_groups)
    fit = ReadOutFit(steps=config.kind_fit_steps, lr=config.kind_fit_lr, weight_decay=config.kind_fit_weight_decay,
                     noise=config.kind_fit_noise, seed=run.loop.seed)
    read_out = fit_read_out(embeddings, labels, config.prototypes, groups, fit)
    with torch.no_grad():
        encoder.norm.reset_parameters()
        encoder.kind.load_state_dict(read_out.state_dict())
    encoder.norm.requires_grad_(False)
    encoder.kind.requires_grad_(False)


def check_embed_dims(clip_dim: int, audio_dim: int, audio_path: str) -> None:
    if clip_dim != audio_dim:
        raise SoundvjError(
            f"stage.audio_encoder: {audio_path} embeds in {audio_dim} dimensions, the CLIP in {clip_dim}; "
            "train the audio encoder against this CLIP"
        )


def build(run: RunConfig, ctx: BuildContext) -> Stage:
    config: Config = run.stage
    device = ctx.device
    G = frozen_generator(config.generator, device)
    clip = build_clip(config.clip).freeze().to(device)
    audio_encoder = trained_audio_encoder(config.audio_encoder, "stage.audio_encoder", device)
    check_embed_dims(clip.embed_dim, audio_encoder.embed_dim, config.audio_encoder)
    if audio_encoder.config.backbone != config.backbone:
        raise SoundvjError(f"stage.backbone: expected {audio_encoder.config.backbone!r} (the audio encoder's in "
                           f"{config.audio_encoder}), got {config.backbone!r}")
    mel_config = mel_config_for(config.backbone)
    if config.backbone == "embedding" and config.remember_windows:
        shared_sound_embedding(device).remember(config.remember_windows)
    dataset, holdout = open_stage_datasets(run, G.img_resolution, need_frames=False, mel=mel_config)
    classes = check_classes(dataset)
    with torch.no_grad():
        class_text = clip.encode_labels(classes)
    if config.prototypes and config.prototypes != len(classes):
        raise SoundvjError(f"stage.prototypes: expected the data's class count {len(classes)} ({list(classes)}), "
                           f"got {config.prototypes}")
    w_class = class_latents(G, config.generator, classes, config.class_latent_samples) if config.lambda_class_w > 0 else None

    encoder = build_inversion_encoder(model_config(config, G)).to(device)
    encoder.set_w_avg(G.mapping.w_avg)
    if config.prototypes:
        if w_class is None and G.c_dim and generator_classes(config.generator) is not None:
            w_class = class_latents(G, config.generator, classes, config.class_latent_samples)
        if w_class is not None:  # a resumed run's checkpoint replaces them
            encoder.set_scenes(w_class - G.mapping.w_avg)
    if config.kind_fit_steps:
        if not config.prototypes:
            raise SoundvjError("stage.kind_fit_steps: fits E_I's choice among kinds of scene; set stage.prototypes")
        fit_kind(encoder, dataset, run, device)
    trainable = [(name, p) for name, p in encoder.named_parameters() if p.requires_grad]
    kind = [p for name, p in trainable if name.startswith("kind.")]
    rest = [p for name, p in trainable if not name.startswith("kind.")]
    groups = [{"params": rest}] + ([{"params": kind, "lr": config.lr_kind or config.lr}] if kind else [])
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = warmup_schedule(optimizer, config.warmup_steps)

    top_db = mel_config.top_db
    items_of_class = [[k for k, (clip, _) in enumerate(dataset.items) if dataset.labels[clip] == c]
                      for c in range(len(classes))]

    def mix(mel: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Some windows as heard together with a random window of their class (from any training clip)."""
        if config.mix_same_class <= 0:
            return mel
        chosen = (torch.rand(mel.shape[0]) < config.mix_same_class).nonzero().flatten().tolist()
        if not chosen:
            return mel
        partners = []
        for i in chosen:
            pool = items_of_class[int(labels[i])]
            partners.append(dataset[pool[int(torch.randint(len(pool), (1,)))]]["mel"][0])
        mel = mel.clone()
        mel[chosen] = mix_recordings(mel[chosen], torch.stack(partners).to(mel.device, mel.dtype), top_db)
        return mel

    def augment(mel: torch.Tensor) -> torch.Tensor:
        # Global RNG, as in `train audio-encoder`: the loop checkpoints it, so a resumed run repeats.
        if config.level_db > 0:
            mel = level_shift(mel, config.level_db, top_db)
        return spec_augment(mel) if config.spec_augment else mel

    def train_step(batch: dict, step: StepContext) -> dict[str, torch.Tensor]:
        labels = batch["label"]
        mel = mix(batch["mel"][:, 0], labels)
        with torch.no_grad(), step.autocast():
            audio_embed = audio_encoder(mel).float()  # the target: what the whole, unaltered window means
        heard = augment(mel)
        inverter = step.modules["inversion_encoder"]
        with step.autocast():
            if config.prototypes:
                embedding = embed_windows(heard)
                w_hat = inverter.from_embedding(embedding).float()
                if not config.kind_fit_steps:
                    kind_logits = inverter.kind_logits(embedding).float()
            else:
                w_hat = inverter(heard).float()
            images = G.synthesis(w_hat, noise_mode="const")
            image_embed = clip.encode_images(images).float()
        parts = encoder_loss(image_embed, audio_embed, class_text[labels].float(), w_hat, G.mapping.w_avg, config.lambda_b)
        if w_class is not None and config.lambda_class_w > 0:
            parts["class_latent"] = (w_hat - w_class[labels]).square().mean()
            parts["loss"] = parts["loss"] + config.lambda_class_w * parts["class_latent"]
        if config.prototypes and not config.kind_fit_steps:
            parts["kind"] = torch.nn.functional.cross_entropy(kind_logits, labels)
            parts["loss"] = parts["loss"] + config.lambda_kind * parts["kind"]
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        optimizer.step()
        with torch.no_grad():
            accuracy = ((image_embed @ class_text.float().T).argmax(dim=1) == labels).float().mean()
        return {**{k: v.detach() for k, v in parts.items()}, "zero_shot_accuracy": accuracy}

    def write_samples(out_dir: Path, step: int) -> None:
        """One row per class: G(E_I(window)) for held-out sounds of that class."""
        rows = items_per_class(holdout, len(classes), config.samples_per_class)
        if not any(rows):
            return
        frames = []
        for row in rows:
            if not row:
                frames.append(torch.zeros(0, 3, G.img_resolution, G.img_resolution))
                continue
            mel = torch.stack([item["mel"][0] for item in row]).to(device)
            frames.append(G.synthesis(encoder(mel), noise_mode="const").cpu())
        write_grid(out_dir / f"inverter-{step:07d}.png", frames)

    return Stage(
        modules={"inversion_encoder": encoder},
        optimizers={"adamw": optimizer},
        schedulers={"warmup": scheduler},
        dataset=dataset,
        train_step=train_step,
        write_samples=write_samples,
    )


def trained_inversion_encoder(path: str | Path, key: str, G: Generator, device: torch.device) -> torch.nn.Module:
    """E_I from a `train inverter` checkpoint (named by config field `key`), sized for `G`, frozen, on `device`."""
    payload = read_stage_checkpoint(path, INVERTER_STAGE, key)
    config = stage_config_from(payload, Config, path)
    encoder = build_inversion_encoder(model_config(config, G))
    state = module_state(payload, "inversion_encoder", path)
    if tuple(state["w_avg"].shape) != (G.w_dim,):
        raise SoundvjError(f"{key}: {path} was trained for w_dim {state['w_avg'].shape[0]}, the generator has {G.w_dim}")
    encoder.load_state_dict(state)
    return frozen(encoder.to(device))
