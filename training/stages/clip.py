"""`soundvj train clip`: a small open_clip model trained contrastively on a dataset's frames and their
class captions, because no pretrained CLIP can be fetched here (a real one is a path in `clip:`).

Loss: symmetric InfoNCE between frame embeddings and the embeddings of their class captions, every
same-class pair a positive (a batch holds each class several times), with CLIP's learnable
temperature. Augmentation: random horizontal flips. The later stages read the trained CLIP straight
from this run's folder (`clip.checkpoint: runs/clip`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch

from training.config import RunConfig
from training.data.stage_datasets import check_classes, frames_to_generator_range, open_stage_datasets
from training.loop import BuildContext, Stage, StepContext
from training.losses import info_nce
from training.models.clip import ClipConfig, build_clip, caption
from training.schedules import warmup_schedule
from training.settings import setting
from training.stages.pretrained import frozen_generator


@dataclass(frozen=True)
class Config:
    """The `stage:` section of `train clip`."""

    clip: ClipConfig = setting(default_factory=ClipConfig, help="sizes; clip.checkpoint set = fine-tune it")
    generator: str = setting("default", help="generator whose resolution the frames are read at")
    lr: float = setting(5e-4, min=0.0, help="AdamW learning rate")
    weight_decay: float = setting(0.1, min=0.0, help="AdamW weight decay")
    warmup_steps: int = setting(50, min=0, help="linear learning-rate warm-up")
    flip: bool = setting(True, help="random horizontal flips of the frames")


def build(run: RunConfig, ctx: BuildContext) -> Stage:
    config: Config = run.stage
    device = ctx.device
    resolution = frozen_generator(config.generator, torch.device("cpu")).img_resolution
    dataset, holdout = open_stage_datasets(run, resolution, need_frames=True)
    classes = check_classes(dataset)
    clip = build_clip(config.clip, require_checkpoint=False).to(device)
    class_tokens = clip.tokenize([caption(c, clip.config.caption_template) for c in classes])
    optimizer = torch.optim.AdamW(clip.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = warmup_schedule(optimizer, config.warmup_steps)

    def train_step(batch: dict, step: StepContext) -> dict[str, torch.Tensor]:
        images = frames_to_generator_range(batch["frames"][:, 0])
        labels = batch["label"]
        if config.flip:
            flip = torch.rand(images.shape[0]) < 0.5  # global RNG: the loop checkpoints it
            images = torch.where(flip.view(-1, 1, 1, 1).to(images.device), images.flip(-1), images)
        with step.autocast():
            image_embed, class_embed, scale = step.modules["clip"](images, class_tokens)
        image_embed, class_embed = image_embed.float(), class_embed.float()
        loss = info_nce(image_embed, class_embed[labels], scale.float(), labels=labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            accuracy = ((image_embed @ class_embed.T).argmax(dim=1) == labels).float().mean()
        return {"loss": loss.detach(), "zero_shot_accuracy": accuracy, "logit_scale": scale.detach()}

    def write_samples(out_dir: Path, step: int) -> None:
        """Zero-shot class accuracy of the held-out frames, appended to samples/clip_holdout.csv."""
        if len(holdout) == 0:
            return
        clip.eval()
        texts = clip.model.encode_text(class_tokens, normalize=True)
        correct = total = 0
        for start in range(0, len(holdout), 32):
            items = [holdout[i] for i in range(start, min(start + 32, len(holdout)))]
            frames = torch.stack([it["frames"][0] for it in items]).to(device)
            labels = torch.tensor([int(it["label"]) for it in items], device=device)
            predicted = (clip.encode_images(frames_to_generator_range(frames)) @ texts.T).argmax(dim=1)
            correct += int((predicted == labels).sum())
            total += len(items)
        path = out_dir / "clip_holdout.csv"
        new = not path.exists()
        with open(path, "a", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["step", "holdout_frames", "zero_shot_accuracy", "chance"])
            writer.writerow([step, total, f"{correct / total:.4f}", f"{1 / len(classes):.4f}"])

    return Stage(
        modules={"clip": clip},
        optimizers={"adamw": optimizer},
        schedulers={"warmup": scheduler},
        dataset=dataset,
        train_step=train_step,
        write_samples=write_samples,
    )
