"""`soundvj eval MODEL DATASET`: does the picture follow the sound's meaning?

For held-out labelled clips, frames are generated exactly as `soundvj render` makes them (the same
per-frame pipeline, windows, stepper, noise and psi) and measured with a CLIP:

* clip_cosine: cosine between each frame's CLIP image embedding and its sound's embedding E_A(window),
  E_A being the evaluated model's trained audio encoder (also for the baseline row, so both rows are
  measured against the same CLIP-space target);
* zero_shot_accuracy: how often the frame's CLIP embedding is nearest to its own class caption;
* frame_change: mean absolute change between consecutive frames (pixels in [0, 1]), the temporal side.

The baseline row runs the same generator with the seeded, untrained sound models every model file
without sound models gets (`core.model.seeded_sound_models`); chance is 1 / number of classes.
A CSV with the same rows is written beside the model (or to `--output`).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from core.errors import SoundvjError

TRAINED = "trained"
BASELINE = "untrained baseline"


@dataclass(frozen=True)
class EvalRow:
    models: str
    clips: int
    frames: int
    clip_cosine: float
    zero_shot_accuracy: float
    frame_change: float
    chance: float


@dataclass(frozen=True)
class EvalSettings:
    fps: float = 24.0
    window_seconds: float = 1.0
    split: str = "holdout"  # "holdout" (the training split's held-out clips) or "all"
    holdout_fraction: float = 0.1
    max_frames_per_clip: int = 48
    seed: int = 0
    batch: int = 8


def _open_clips(dataset: str, settings: EvalSettings):
    from core.audio.mel import MelConfig
    from training.config import from_dict
    from training.data.config import DataConfig
    from training.data.datasets import open_datasets

    if settings.split not in ("holdout", "all"):
        raise SoundvjError(f"--split: expected holdout or all, got {settings.split!r}")
    data = from_dict(
        DataConfig,
        {
            "path": str(dataset),
            "kind": "audio",  # the sounds and their labels are all eval needs
            "fps": settings.fps,
            "window_seconds": settings.window_seconds,
            "holdout_fraction": settings.holdout_fraction if settings.split == "holdout" else 0.0,
        },
        "data",
    )
    train, holdout, _ = open_datasets(data, MelConfig(), verbose=False)
    clips = holdout if settings.split == "holdout" else train
    if not clips.clips:
        raise SoundvjError(f"{dataset}: no held-out clips (use --split all to evaluate every clip)")
    return clips


@torch.no_grad()
def _measure(model, clip, reference_encoder, clips, class_text: torch.Tensor, settings: EvalSettings, name: str) -> EvalRow:
    from core.params import Params
    from core.pipeline import FramePipeline

    device = model.device
    params = Params(seed=settings.seed, fps=settings.fps, window_seconds=settings.window_seconds)
    cosines, hits, changes = [], [], []
    for index in range(len(clips.clips)):
        whole = clips.whole_clip(index)
        windows = whole["mel"][: settings.max_frames_per_clip].to(device)
        label = int(whole["label"])
        pipeline = FramePipeline(model, params)  # a fresh sequence per clip: the seed's first latent
        frames = torch.cat([pipeline.step_batch(windows[i : i + settings.batch])
                            for i in range(0, windows.shape[0], settings.batch)])
        image_embed = clip.encode_images(frames.clamp(-1, 1)).float()
        sound_embed = reference_encoder(windows).float()
        cosines.append(torch.nn.functional.cosine_similarity(image_embed, sound_embed, dim=1))
        hits.append((image_embed @ class_text.T).argmax(dim=1) == label)
        if frames.shape[0] > 1:
            changes.append(((frames[1:] - frames[:-1]).abs() / 2).mean(dim=(1, 2, 3)))
    cos, hit = torch.cat(cosines), torch.cat(hits)
    change = torch.cat(changes).mean().item() if changes else 0.0
    return EvalRow(name, len(clips.clips), int(cos.numel()), cos.mean().item(), hit.float().mean().item(),
                   change, 1.0 / len(clips.classes))


def evaluate(
    model_path: str | Path,
    dataset: str | Path,
    clip_checkpoint: str,
    settings: EvalSettings = EvalSettings(),
    device: str | None = None,
) -> list[EvalRow]:
    """[trained row, untrained baseline row] for `model_path` on `dataset`'s held-out clips."""
    from core.model import SoundvjModel, load_model, seeded_sound_models
    from training.clip_model import ClipConfig, build_clip

    model = load_model(model_path, device=device)
    if model.sound_is_seeded:
        raise SoundvjError(
            f"{model_path}: holds no trained sound models (eval compares trained ones with the untrained baseline; "
            "make one with `soundvj train export`)"
        )
    clip = build_clip(ClipConfig(checkpoint=str(clip_checkpoint))).freeze().to(model.device)
    encoder = model.sound.audio_encoder
    if clip.embed_dim != encoder.embed_dim:
        raise SoundvjError(
            f"--clip: the CLIP embeds in {clip.embed_dim} dimensions, the model's audio encoder in {encoder.embed_dim}"
        )
    clips = _open_clips(str(dataset), settings)
    class_text = clip.encode_labels(list(clips.classes)).float()
    trained = _measure(model, clip, encoder, clips, class_text, settings, TRAINED)
    seeded = seeded_sound_models(model.generator.cpu()).to(model.device)
    model.generator.to(model.device)
    baseline_model = SoundvjModel(model.generator, seeded, model.mel_config, "seeded", True)
    baseline = _measure(baseline_model, clip, encoder, clips, class_text, settings, BASELINE)
    return [trained, baseline]


def format_table(rows: list[EvalRow]) -> str:
    lines = [f"{'models':<20} {'clips':>5} {'frames':>6} {'clip_cosine':>11} {'zero_shot_acc':>13} {'frame_change':>12}"]
    for r in rows:
        lines.append(f"{r.models:<20} {r.clips:>5} {r.frames:>6} {r.clip_cosine:>11.4f} {r.zero_shot_accuracy:>13.3f} "
                     f"{r.frame_change:>12.4f}")
    lines.append(f"{'chance':<20} {'':>5} {'':>6} {'':>11} {rows[0].chance:>13.3f}")
    return "\n".join(lines)


def write_csv(path: Path, rows: list[EvalRow]) -> Path:
    from training.loop import atomic_write_bytes

    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow([f.name for f in fields(EvalRow)])
    for row in rows:
        writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in asdict(row).values()])
    atomic_write_bytes(path, text.getvalue().encode("utf-8"))
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `soundvj eval` (the CLI module adds the parser, this fills it)."""
    parser.add_argument("model", help="model file from `soundvj train export`")
    parser.add_argument("dataset", help="labelled clips: a folder per class, or a CSV of path,label")
    parser.add_argument("--clip", required=True, help="CLIP: a `train clip` run folder or a CLIP checkpoint")
    parser.add_argument("--split", default="holdout", choices=["holdout", "all"],
                        help="holdout: the clips training held out (default); all: every clip (a separate test set)")
    parser.add_argument("--holdout-fraction", type=float, default=0.1, help="as data.holdout_fraction in training (0.1)")
    parser.add_argument("--fps", type=float, default=24.0, help="frames per second (default 24)")
    parser.add_argument("--window-seconds", type=float, default=1.0, help="audio each frame hears (default 1.0)")
    parser.add_argument("--max-frames", type=int, default=48, help="frames per clip at most (default 48)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first latent and the noise (default 0)")
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda")
    parser.add_argument("--output", default=None, help="CSV to write (default: MODEL-eval.csv beside the model)")


def run(args: argparse.Namespace) -> int:
    if args.max_frames < 1:
        raise SoundvjError(f"--max-frames: expected a positive integer, got {args.max_frames}")
    settings = EvalSettings(fps=args.fps, window_seconds=args.window_seconds, split=args.split,
                            holdout_fraction=args.holdout_fraction, max_frames_per_clip=args.max_frames, seed=args.seed)
    rows = evaluate(args.model, args.dataset, args.clip, settings, device=args.device)
    model = Path(args.model)
    out = Path(args.output) if args.output else model.with_name(f"{model.stem}-eval.csv")
    print(format_table(rows))
    write_csv(out, rows)
    print(f"soundvj: wrote {out}", file=sys.stderr)
    return 0
