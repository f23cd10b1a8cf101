"""`soundvj train classifier`: an image classifier trained only on real images, the second judge of
`soundvj eval --classifier RUN`.

It learns the classes from a folder of real pictures (a folder per class, the generator's training images)
and never sees a generated frame, so when it puts a generated frame in the sound's class, the frame
looks like the real pictures of that class. CLIP is the first judge; this one does not share CLIP's
text side, so the two fail in different ways.

Model: four stride-2 conv blocks (3x3 conv, GroupNorm, SiLU) doubling the width, global average pool,
a linear head. Augmentation: flips, shifts of up to 1/8 of the size, brightness/contrast jitter.
Every `holdout_every`-th image of each class is kept for validation (`samples/classifier_val.csv`).
The class names are stored inside the module (a buffer), so a checkpoint is all `eval` needs.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from core.errors import SoundvjError
from training.config import RunConfig
from training.data.images import ImageFolderDataset
from training.loop import BuildContext, Stage, StepContext
from training.schedules import warmup_schedule
from training.settings import setting
from training.stages import CLASSIFIER_STAGE
from training.stages.pretrained import module_state, read_stage_checkpoint, stage_config_from

@dataclass(frozen=True)
class Config:
    """The `stage:` section of `train classifier`."""

    resolution: int = setting(64, min=8, max=1024, help="images are resized to this (use the generator's)")
    width: int = setting(32, min=4, max=512, help="channels of the first block (doubling per block)")
    lr: float = setting(1e-3, min=0.0, help="AdamW learning rate")
    weight_decay: float = setting(1e-4, min=0.0, help="AdamW weight decay")
    warmup_steps: int = setting(50, min=0, help="linear learning-rate warm-up")
    holdout_every: int = setting(10, min=2, max=1000, help="every N-th image per class is kept for validation")
    shift: float = setting(0.125, min=0.0, max=0.5, help="largest random shift, as a fraction of the size")
    jitter: float = setting(0.2, min=0.0, max=1.0, help="largest brightness / contrast change")


class ImageClassifier(torch.nn.Module):
    """Images [N, 3, R, R] in [-1, 1] -> class logits [N, classes]; knows its class names."""

    def __init__(self, classes: list[str], width: int = 32):
        super().__init__()
        if len(classes) < 2:
            raise ValueError("ImageClassifier: needs at least two classes")
        blocks, channels = [], 3
        for i in range(4):
            out = width * 2**i
            blocks += [torch.nn.Conv2d(channels, out, 3, stride=2, padding=1),
                       torch.nn.GroupNorm(min(8, out), out), torch.nn.SiLU()]
            channels = out
        self.features = torch.nn.Sequential(*blocks)
        self.head = torch.nn.Linear(channels, len(classes))
        names = json.dumps(list(classes)).encode("utf-8")
        self.register_buffer("class_names_json", torch.tensor(list(names), dtype=torch.uint8))
        self.classes = list(classes)
        self.width = width

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).mean(dim=(2, 3)))


def classes_from_state(state: dict[str, torch.Tensor]) -> list[str]:
    return list(json.loads(bytes(state["class_names_json"].tolist()).decode("utf-8")))


def augment(images: torch.Tensor, shift: float, jitter: float) -> torch.Tensor:
    """Random flip, shift (wrapping) and brightness/contrast change, per image (global RNG)."""
    n, _, h, w = images.shape
    flip = torch.rand(n) < 0.5
    images = torch.where(flip.view(-1, 1, 1, 1).to(images.device), images.flip(-1), images)
    if shift > 0:
        most = max(1, int(round(shift * h)))
        dy, dx = torch.randint(-most, most + 1, (2,)).tolist()  # one shift per batch keeps it cheap
        images = images.roll((dy, dx), dims=(2, 3))
    if jitter > 0:
        gain = 1 + (torch.rand(n, 1, 1, 1) * 2 - 1).to(images.device) * jitter
        offset = (torch.rand(n, 1, 1, 1) * 2 - 1).to(images.device) * jitter
        images = (images * gain + offset).clamp(-1, 1)
    return images


def _split(labels: torch.Tensor, every: int) -> tuple[list[int], list[int]]:
    train, val = [], []
    seen: dict[int, int] = {}
    for i, label in enumerate(labels.tolist()):
        k = seen.get(label, 0)
        (val if k % every == every - 1 else train).append(i)
        seen[label] = k + 1
    return train, val


def build(run: RunConfig, ctx: BuildContext) -> Stage:
    config: Config = run.stage
    device = ctx.device
    images = ImageFolderDataset(run.data.path, config.resolution, verbose=ctx.is_main)
    if not images.conditional:
        raise SoundvjError(f"data.path {run.data.path!r}: the classifier needs a folder per class, found a flat folder")
    train_idx, val_idx = _split(images.labels, config.holdout_every)
    model = ImageClassifier(images.classes, config.width).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = warmup_schedule(optimizer, config.warmup_steps)

    def train_step(batch: dict, step: StepContext) -> dict[str, torch.Tensor]:
        x = augment(batch["image"], config.shift, config.jitter)
        with step.autocast():
            logits = step.modules["classifier"](x).float()
        loss = torch.nn.functional.cross_entropy(logits, batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        accuracy = (logits.argmax(dim=1) == batch["label"]).float().mean()
        return {"loss": loss.detach(), "train_accuracy": accuracy}

    @torch.no_grad()
    def write_samples(out_dir: Path, step: int) -> None:
        """Validation accuracy on the held-back real images, appended to samples/classifier_val.csv."""
        if not val_idx:
            return
        hits = 0
        for start in range(0, len(val_idx), 256):
            part = val_idx[start : start + 256]
            x = images.images[part].float().div(127.5).sub(1).to(device)
            hits += int((model(x).argmax(dim=1).cpu() == images.labels[part]).sum())
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "classifier_val.csv"
        new = not path.exists()
        with open(path, "a", newline="") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(["step", "val_images", "val_accuracy"])
            writer.writerow([step, len(val_idx), f"{hits / len(val_idx):.4f}"])

    return Stage(
        modules={"classifier": model},
        optimizers={"adamw": optimizer},
        schedulers={"warmup": scheduler},
        dataset=torch.utils.data.Subset(images, train_idx),
        train_step=train_step,
        write_samples=write_samples,
    )


def trained_classifier(path: str | Path, device: torch.device | str = "cpu") -> ImageClassifier:
    """The classifier of a `train classifier` run folder (or checkpoint), in eval mode; one-line errors."""
    payload = read_stage_checkpoint(path, CLASSIFIER_STAGE, "--classifier")
    config = stage_config_from(payload, Config, path)
    state = module_state(payload, "classifier", path)
    model = ImageClassifier(classes_from_state(state), config.width)
    model.load_state_dict(state)
    model.resolution = config.resolution  # type: ignore[attr-defined]
    return model.to(device).eval().requires_grad_(False)
