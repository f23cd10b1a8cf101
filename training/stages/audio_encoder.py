"""`soundvj train audio-encoder`: E_A into CLIP space (docs/method.md, "Training", stage 1).

Symmetric InfoNCE between E_A(SpecAugment(mel)) and the frozen CLIP's embedding of the frame that
mel window belongs to (instance pairs), plus the same against the CLIP text embedding of the clip's
class caption (every same-class pair a positive); each pair has its own learnable temperature,
initialised to log(1/0.07).

Decisions where the paper is silent (see docs/method.md, "What the paper leaves open"): AdamW with a
linear warm-up (the authors' CVPR code uses SGD with a cyclic lr over 50 epochs of batch 320, which
does not fit a CPU); the audio-image term (the authors' code has only audio-text).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from core.errors import SoundvjError
from core.sound import AudioEncoderConfig, build_audio_encoder
from core.sound.sound_embedding import mel_config_for, shared_sound_embedding
from training.augment.mel import spec_augment
from training.config import RunConfig
from training.data.stage_datasets import check_classes, frames_to_generator_range, open_stage_datasets
from training.loop import BuildContext, Stage, StepContext
from training.losses import LogitScale, info_nce
from training.models.clip import ClipConfig, build_clip
from training.schedules import warmup_schedule
from training.settings import setting
from training.stages import AUDIO_ENCODER_STAGE
from training.stages.pretrained import frozen, frozen_generator, module_state, read_stage_checkpoint, stage_config_from


@dataclass(frozen=True)
class Config:
    """The `stage:` section of `train audio-encoder`."""

    clip: ClipConfig = setting(default_factory=ClipConfig, help="the frozen CLIP (clip.checkpoint required)")
    generator: str = setting("default", help="generator whose resolution the frames are read at")
    width: int = setting(8, min=4, max=256, help="E_A base channels (64 = ResNet-18; 8 keeps the default live)")
    blocks_per_stage: tuple[int, ...] = setting((2, 2, 2, 2), help="residual blocks per ResNet stage")
    lr: float = setting(1e-3, min=0.0, help="AdamW learning rate (E_A and the temperatures)")
    weight_decay: float = setting(1e-4, min=0.0, help="AdamW weight decay")
    warmup_steps: int = setting(100, min=0, help="linear learning-rate warm-up")
    image_weight: float = setting(1.0, min=0.0, help="weight of the audio-frame InfoNCE")
    text_weight: float = setting(1.0, min=0.0, help="weight of the audio-caption InfoNCE")
    spec_augment: bool = setting(True, help="SpecAugment: 2 masks each of <= 15% of the mel bins and <= 30% of the time")
    backbone: str = setting("resnet", help="resnet: E_A hears the mel window itself; embedding: a head over the "
                            "pretrained sound embedding (its mel settings; width and blocks_per_stage unused)")
    head_hidden: int = setting(512, min=1, max=8192, help="hidden units of the head over the sound embedding")
    remember_windows: int = setting(60000, min=0, max=10_000_000, help="embeddings of distinct windows kept in "
                                    "memory (backbone embedding): later epochs hear the same windows")


def model_config(config: Config) -> AudioEncoderConfig:
    """E_A's core config from the stage config (its embed_dim is CLIP's, recorded in clip.embed_dim)."""
    return AudioEncoderConfig(
        n_mels=mel_config_for(config.backbone).n_mels,
        width=config.width,
        embed_dim=config.clip.embed_dim,
        blocks_per_stage=tuple(config.blocks_per_stage),
        backbone=config.backbone,
        head_hidden=config.head_hidden,
    )


def build(run: RunConfig, ctx: BuildContext) -> Stage:
    config: Config = run.stage
    device = ctx.device
    clip = build_clip(config.clip).freeze().to(device)
    if clip.embed_dim != config.clip.embed_dim:
        raise SoundvjError(
            f"stage.clip.embed_dim: the CLIP in {config.clip.checkpoint} embeds in {clip.embed_dim} dimensions, "
            f"the config says {config.clip.embed_dim}"
        )
    resolution = frozen_generator(config.generator, torch.device("cpu")).img_resolution
    encoder_config = model_config(config)
    dataset, _holdout = open_stage_datasets(run, resolution, need_frames=True, mel=mel_config_for(config.backbone))
    if config.backbone == "embedding" and config.remember_windows:
        shared_sound_embedding(device).remember(config.remember_windows)
    classes = check_classes(dataset)
    with torch.no_grad():
        class_text = clip.encode_labels(classes)  # [num_classes, D], fixed: CLIP is frozen

    encoder = build_audio_encoder(encoder_config).to(device)
    temperatures = LogitScale(count=2).to(device)  # (audio-frame, audio-caption)
    optimizer = torch.optim.AdamW(
        list(encoder.parameters()) + list(temperatures.parameters()), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = warmup_schedule(optimizer, config.warmup_steps)

    def train_step(batch: dict, step: StepContext) -> dict[str, torch.Tensor]:
        mel = batch["mel"][:, 0]  # one frame per item: [B, n_mels, W]
        labels = batch["label"]
        with torch.no_grad(), step.autocast():
            frame_embed = clip.encode_images(frames_to_generator_range(batch["frames"][:, 0]))
        if config.spec_augment:
            mel = spec_augment(mel)  # global RNG: the loop checkpoints it
        with step.autocast():
            audio_embed = step.modules["audio_encoder"](mel).float()
            scales = step.modules["temperatures"]()
        image_loss = info_nce(audio_embed, frame_embed.float(), scales[0])
        text_loss = info_nce(audio_embed, class_text[labels].float(), scales[1], labels=labels)
        loss = config.image_weight * image_loss + config.text_weight * text_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            accuracy = ((audio_embed @ class_text.float().T).argmax(dim=1) == labels).float().mean()
        return {
            "loss": loss.detach(),
            "audio_frame": image_loss.detach(),
            "audio_caption": text_loss.detach(),
            "caption_accuracy": accuracy,
            "logit_scale_frame": scales[0].detach(),
        }

    return Stage(
        modules={"audio_encoder": encoder, "temperatures": temperatures},
        optimizers={"adamw": optimizer},
        schedulers={"warmup": scheduler},
        dataset=dataset,
        train_step=train_step,
    )


def trained_audio_encoder(path: str | Path, key: str, device: torch.device) -> torch.nn.Module:
    """E_A from a `train audio-encoder` checkpoint (named by config field `key`), frozen, on `device`."""
    payload = read_stage_checkpoint(path, AUDIO_ENCODER_STAGE, key)
    config = stage_config_from(payload, Config, path)
    encoder = build_audio_encoder(model_config(config))
    encoder.load_state_dict(module_state(payload, "audio_encoder", path))
    return frozen(encoder.to(device))
