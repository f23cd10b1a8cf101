"""`soundvj eval MODEL DATASET`: does the picture follow the sound's meaning?

For held-out labelled clips, frames are generated exactly as `soundvj render` makes them (the same
per-frame pipeline, windows, stepper, noise and psi) and measured with a CLIP:

* clip_cosine: cosine between each frame's CLIP image embedding and its sound's embedding E_A(window),
  E_A being the evaluated model's trained audio encoder (also for the baseline row, so both rows are
  measured against the same CLIP-space target);
* zero_shot_accuracy: how often the frame's CLIP embedding is nearest to its own class caption;
* frame_change: mean absolute change between consecutive frames (pixels in [0, 1]), the temporal side;
* classifier_accuracy (with `--classifier RUN`): how often an image classifier trained only on real
  pictures (`soundvj train classifier`, it never saw a generated frame) puts the frame in its sound's
  class; empty without a classifier.

With `--parts`, each clip also says where its class is kept or lost along the chain, for the model's
own sound models: audio_zero_shot (how often E_A(window) is nearest its class caption: the sound side),
inverter_zero_shot and inverter_classifier_accuracy (frames G(E_I(window)) with no stepper, judged as
above: the inversion side). Against the frames' own accuracies they show whether E_A, E_I or the stepper
loses a class. It also prints the frames' accuracies per class by time since the clip began (frames 0-9, the
stepper's training clip length; 10-29; 30 on): a stepper whose GRU state drifts on long rollouts keeps the
class at first and loses it later.

With `--by-source` (a dataset whose `SOURCES.csv`, next to `HOLDOUT.txt`, names each clip's source and
use, as `soundvj data demo` writes in `clips/`), every row also says its split: `heldout-source`, clips of
sources (packages) the class never trained on, or `heldout`, held-out spans/files of training sources;
summary rows per split follow the overall ones, and a per-class table shows both judges on both splits,
so a meaning that holds only on the sources trained on shows as a gap between them.

The baseline row runs the same generator with the seeded, untrained sound models every model file
without sound models gets (`core.model.seeded_sound_models`); chance is 1 / number of classes.
Data settings (fps, window_seconds, holdout_fraction, max_seconds, ...) are the `data:` keys of a
training config, set with `--set data.KEY=VALUE`; use the training run's values so the held-out clips
are the ones training never saw (`--set data.holdout_fraction=0` evaluates every clip of DATASET).
A CSV beside the model (or `--csv`) holds one row per clip and model, then the two summary rows.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import torch

from core.atomic_write import write_bytes_atomic
from core.audio.mel import MelConfig
from core.errors import SoundvjError
from core.model import SoundvjModel, load_model, seeded_sound_models
from core.params import Params
from core.pipeline import FramePipeline
from training.data.clip_sources import SOURCES_LIST, read_clip_sources
from training.data.config import DataConfig
from training.data.datasets import ClipDataset, open_datasets
from training.evaluation.samples import grid_image
from training.models.clip import ClipConfig, build_clip
from training.settings import apply_overrides, from_dict
from training.stages.classifier import trained_classifier

TRAINED = "trained"
BASELINE = "untrained baseline"
ALL_CLIPS = "ALL"
FRAMES_PER_BATCH = 8
TIME_SPANS = ((0, 10), (10, 30), (30, None))  # frame index ranges of the --parts timeline
SPLITS = {"heldout-source": "held-out sources", "heldout": "same-source held out"}  # --by-source, in print order


@dataclass(frozen=True)
class EvalRow:
    """Scores of one model on one clip (or, with clip == ALL, on all of them, frame-weighted)."""

    models: str
    clip: str
    label: str
    frames: int
    clip_cosine: float
    zero_shot_accuracy: float
    frame_change: float
    chance: float
    classifier_accuracy: float | None = None  # None without --classifier (NaN would break row equality)
    audio_zero_shot: float | None = None  # the --parts columns (None without --parts)
    inverter_zero_shot: float | None = None
    inverter_classifier_accuracy: float | None = None
    split: str = ""  # --by-source: "heldout-source" or "heldout" ("" on the overall summary rows)


def _split_rows(rows: list[EvalRow], sources: dict[tuple[str, str], tuple[str, str]]) -> list[EvalRow]:
    """Per-clip rows with their split set, then per model and split a frame-weighted summary row."""
    from dataclasses import replace

    per_clip, overall = [], [r for r in rows if r.clip == ALL_CLIPS]
    for r in rows:
        if r.clip == ALL_CLIPS:
            continue
        key = (r.label, Path(r.clip).name)
        if key not in sources or sources[key][1] not in SPLITS:
            raise SoundvjError(f"--by-source: held-out clip {key[0]}/{key[1]} is not listed as held out in {SOURCES_LIST}")
        per_clip.append(replace(r, split=sources[key][1]))
    summaries = []
    for model in dict.fromkeys(r.models for r in per_clip):
        for split in SPLITS:
            mine = [r for r in per_clip if r.models == model and r.split == split]
            if not mine:
                continue
            frames = sum(r.frames for r in mine)

            def mean(key: str) -> float | None:
                values = [getattr(r, key) for r in mine]
                return None if any(v is None for v in values) else sum(v * r.frames for v, r in zip(values, mine)) / frames

            summaries.append(EvalRow(model, ALL_CLIPS, "", frames, mean("clip_cosine"), mean("zero_shot_accuracy"),
                                     mean("frame_change"), mine[0].chance, mean("classifier_accuracy"),
                                     mean("audio_zero_shot"), mean("inverter_zero_shot"),
                                     mean("inverter_classifier_accuracy"), split))
    return per_clip + overall + summaries


def format_by_source(rows: list[EvalRow]) -> str:
    """Per class, both judges' accuracy on each split (held-out sources, same-source held out) for the
    trained model (the baseline when the model has none); "n" is the clips (classes on the class-mean row)."""
    per_clip = [r for r in rows if r.clip != ALL_CLIPS and r.split]
    if not per_clip:
        return ""
    model = TRAINED if any(r.models == TRAINED for r in per_clip) else BASELINE
    per_clip = [r for r in per_clip if r.models == model]
    judged = any(r.classifier_accuracy is not None for r in per_clip)
    cell = 24 if judged else 16
    head = "zero-shot / classifier" if judged else "zero-shot"
    lines = [f"{model}: per class on clips of held-out sources and on same-source held-out clips ({head}; n clips)",
             f"{'sound':<10}" + "".join(f"{title:>{cell}}" for title in SPLITS.values())]

    def scores(mine: list[EvalRow]) -> tuple[float, float]:
        frames = sum(r.frames for r in mine)
        clip_acc = sum(r.zero_shot_accuracy * r.frames for r in mine) / frames
        return clip_acc, sum((r.classifier_accuracy or 0.0) * r.frames for r in mine) / frames

    def text(values: list[tuple[float, float]], count: int) -> str:
        if not values:
            return "-"
        clip_acc = sum(v[0] for v in values) / len(values)
        judge = sum(v[1] for v in values) / len(values)
        return f"{clip_acc:.2f} / {judge:.2f} ({count})" if judged else f"{clip_acc:.2f} ({count})"

    labels = sorted({r.label for r in per_clip})
    per_class = {split: {} for split in SPLITS}
    for label in labels:
        cells = []
        for split in SPLITS:
            mine = [r for r in per_clip if r.split == split and r.label == label]
            if mine:
                per_class[split][label] = scores(mine)
            cells.append(text([per_class[split][label]] if mine else [], len(mine)))
        lines.append(f"{label:<10}" + "".join(f"{c:>{cell}}" for c in cells))
    # Every frame counts once ("all"); every class counts once ("class mean", the headline number).
    lines.append(f"{'all':<10}" + "".join(
        f"{text([scores(m)] if (m := [r for r in per_clip if r.split == split]) else [], len(m)):>{cell}}"
        for split in SPLITS))
    lines.append(f"{'class mean':<10}" + "".join(
        f"{text(list(per_class[split].values()), len(per_class[split])):>{cell}}" for split in SPLITS))
    return "\n".join(lines)


def data_config(dataset: str | Path, overrides: list[str] = ()) -> Any:
    """The `data:` settings of the evaluation: training's defaults, audio only, `--set data.*` applied."""
    base = {"data": {"path": str(dataset), "kind": "audio"}}  # sounds and labels are all eval needs
    for item in overrides:
        if not item.strip().startswith("data."):
            raise SoundvjError(f"--set {item!r}: eval takes data settings only (data.KEY=VALUE)")
    data = apply_overrides(base, list(overrides))
    return from_dict(DataConfig, data["data"], "data")


def evaluation_clips(data: Any, mel: MelConfig | None = None) -> ClipDataset:
    """The clips `eval` judges, windows in `mel`'s settings (the model's): the held-out split of the data
    (every clip with data.holdout_fraction=0)."""
    train, holdout, _ = open_datasets(data, mel or MelConfig(), verbose=False)
    clips = holdout if data.holdout_fraction > 0 else train
    if not clips.clips:
        raise SoundvjError(
            f"data.path {data.path!r}: no held-out clips (too few clips per class for "
            f"data.holdout_fraction={data.holdout_fraction:g}; --set data.holdout_fraction=0 evaluates every clip)"
        )
    return clips


@torch.no_grad()
def _measure(model: Any, clip: Any, reference_encoder: Any, clips: Any, class_text: torch.Tensor, data: Any,
             seed: int, name: str, judge: Any = None, keep: dict[str, list[torch.Tensor]] | None = None,
             confusion: dict[str, Any] | None = None, parts: bool = False,
             timeline: dict[str, torch.Tensor] | None = None,
             sheet_clip: Callable[[str, str], bool] | None = None) -> list[EvalRow]:
    """Per-clip rows and the summary row (last) for one model. With `confusion`, frame counts per (sound's
    class, class the frame was called) are added under "clip" and, with a judge, "classifier" (rows in
    the order of "classes", columns of "judge_classes"). With `timeline`, per class name a tensor [len(TIME_SPANS),
    3]: per span of frame indices, the frames the CLIP and the judge put in the class, and the frames."""
    device = model.device
    params = Params(seed=seed, fps=data.fps, window_seconds=data.window_seconds)
    chance = 1.0 / len(clips.classes)
    rows, cosines, hits, changes, judged = [], [], [], [], []
    part_hits: dict[str, list[torch.Tensor]] = {"audio": [], "inverter": [], "inverter_judge": []}
    for index in range(len(clips.clips)):
        whole = clips.whole_clip(index)
        windows = whole["mel"].to(device)
        label = int(whole["label"])
        pipeline = FramePipeline(model, params)  # a fresh sequence per clip: the seed's first latent
        frames = torch.cat([pipeline.step_batch(windows[i : i + FRAMES_PER_BATCH])
                            for i in range(0, windows.shape[0], FRAMES_PER_BATCH)])
        image_embed = clip.encode_images(frames.clamp(-1, 1)).float()
        if keep is not None and (sheet_clip is None or sheet_clip(clips.classes[label], str(whole["path"]))):
            keep.setdefault(clips.classes[label], []).append(frames.cpu())
        reference = reference_encoder(windows).float()
        cos = torch.nn.functional.cosine_similarity(image_embed, reference, dim=1)
        called = (image_embed @ class_text.T).argmax(dim=1)
        hit = (called == label).float()
        change = ((frames[1:] - frames[:-1]).abs() / 2).mean(dim=(1, 2, 3))  # [0, 1] pixel units
        cosines.append(cos)
        hits.append(hit)
        changes.append(change)
        judge_hit = None
        if judge is not None:
            judge_called = _judge(judge, frames)
            judge_hit = (judge_called == judge.classes.index(clips.classes[label])).float()
            judged.append(judge_hit)
        if timeline is not None:
            spans = timeline.setdefault(clips.classes[label], torch.zeros(len(TIME_SPANS), 3))
            for i, (lo, hi) in enumerate(TIME_SPANS):
                spans[i] += torch.tensor([hit[lo:hi].sum().item(),
                                          judge_hit[lo:hi].sum().item() if judge_hit is not None else 0.0,
                                          hit[lo:hi].numel()])
        if confusion is not None:
            confusion["classes"] = list(clips.classes)
            n = len(clips.classes)
            counts = confusion.setdefault("clip", torch.zeros(n, n, dtype=torch.long))
            counts[label] += torch.bincount(called.cpu(), minlength=n)
            if judge is not None:
                confusion["judge_classes"] = list(judge.classes)
                m = len(judge.classes)
                counts = confusion.setdefault("classifier", torch.zeros(n, m, dtype=torch.long))
                counts[label] += torch.bincount(judge_called, minlength=m)
        # --parts measures the trained model only, whose E_A is the reference encoder: its embedding is reused.
        clip_parts = _part_hits(model, clip, windows, reference, label, class_text, judge, clips.classes) if parts else {}
        for key, value in clip_parts.items():
            part_hits[key].append(value)
        rows.append(EvalRow(name, str(whole["path"]), clips.classes[label], int(cos.numel()), cos.mean().item(),
                            hit.mean().item(), change.mean().item() if change.numel() else 0.0, chance,
                            judge_hit.mean().item() if judge_hit is not None else None,
                            **_part_columns(clip_parts)))
    cos, hit, change = torch.cat(cosines), torch.cat(hits), torch.cat(changes)
    rows.append(EvalRow(name, ALL_CLIPS, "", int(cos.numel()), cos.mean().item(), hit.mean().item(),
                        change.mean().item() if change.numel() else 0.0, chance,
                        torch.cat(judged).mean().item() if judged else None,
                        **_part_columns({k: torch.cat(v) for k, v in part_hits.items() if v})))
    return rows


@torch.no_grad()
def _part_hits(model: Any, clip: Any, windows: torch.Tensor, audio: torch.Tensor, label: int, class_text: torch.Tensor,
               judge: Any, classes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Per window, 1.0 where a part of the chain keeps the sound's class: E_A's embedding `audio` nearest
    the class caption ("audio"); the frame G(E_I(window)), no stepper, nearest it ("inverter") and, with a
    judge, put in the class by it ("inverter_judge")."""
    sound = model.sound
    out = {"audio": ((audio @ class_text.T).argmax(dim=1) == label).float()}
    frames = torch.cat([model.generator.synthesis(sound.inversion_encoder(windows[i : i + FRAMES_PER_BATCH]),
                                                  noise_mode="const", force_fp32=True)
                        for i in range(0, windows.shape[0], FRAMES_PER_BATCH)]).clamp(-1, 1)
    out["inverter"] = ((clip.encode_images(frames).float() @ class_text.T).argmax(dim=1) == label).float()
    if judge is not None:
        out["inverter_judge"] = (_judge(judge, frames) == judge.classes.index(classes[label])).float()
    return out


def _part_columns(hits: dict[str, torch.Tensor]) -> dict[str, float | None]:
    def mean(key: str) -> float | None:
        return hits[key].mean().item() if key in hits and hits[key].numel() else None

    return {"audio_zero_shot": mean("audio"), "inverter_zero_shot": mean("inverter"),
            "inverter_classifier_accuracy": mean("inverter_judge")}


def _judge(classifier: Any, frames: torch.Tensor) -> torch.Tensor:
    """The real-image classifier's class index (into classifier.classes) for each frame ([T] long, CPU)."""
    size = classifier.resolution
    x = frames.clamp(-1, 1).to(next(classifier.parameters()).device)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="area" if x.shape[-1] > size else "bilinear")
    return classifier(x).argmax(dim=1).cpu()


def format_confusion(confusion: dict[str, Any]) -> str:
    """Per judge, one row per sound class: the share of its frames called each class (rows sum to 1)."""
    blocks = []
    classes = confusion.get("classes", [])
    for key, title, columns in (("clip", "zero-shot CLIP", classes),
                                ("classifier", "classifier", confusion.get("judge_classes"))):
        if key not in confusion or columns is None:
            continue
        counts = confusion[key].float()
        shares = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
        width = max(7, *(len(c) + 1 for c in columns))
        lines = [f"{title}: what the frames of each sound class were called (share of its frames)",
                 f"{'sound':<10}" + "".join(f"{c:>{width}}" for c in columns)]
        for i, name in enumerate(classes):
            lines.append(f"{name:<10}" + "".join(f"{float(v):>{width}.2f}" for v in shares[i]))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def evaluate(
    model_path: str | Path,
    dataset: str | Path,
    clip_checkpoint: str,
    overrides: list[str] = (),
    seed: int = 0,
    device: str | None = None,
    classifier: str | Path | None = None,
    keep_frames: dict[str, list[torch.Tensor]] | None = None,
    confusion: dict[str, Any] | None = None,
    parts: bool = False,
    timeline: dict[str, torch.Tensor] | None = None,
    by_source: bool = False,
) -> list[EvalRow]:
    """Per-clip and summary rows of the model's sound models and of the untrained baseline.

    With `by_source`, each per-clip row carries its split and per-split summary rows follow the overall
    ones (see the module docstring).

    The summary rows (clip == ALL) come last: the model's, then the baseline's. A model without trained
    sound models (e.g. "default") has only the baseline rows. `confusion` (a dict to fill) receives the
    frame counts per (sound's class, class called) of the model's own sound models (see `_measure`).
    `parts` adds the per-part columns (see the module docstring) to the rows of the model's own trained sound
    models (the baseline's seeded E_A does not embed in the CLIP's space).
    """

    data = data_config(dataset, list(overrides))
    sources = read_clip_sources(data.path) if by_source else None  # checked before any model is loaded
    model = load_model(model_path, device=device)
    clip = build_clip(ClipConfig(checkpoint=str(clip_checkpoint))).freeze().to(model.device)
    encoder = model.sound.audio_encoder
    if clip.embed_dim != encoder.embed_dim:
        raise SoundvjError(
            f"--clip: the CLIP embeds in {clip.embed_dim} dimensions, the model's audio encoder in {encoder.embed_dim}"
        )
    clips = evaluation_clips(data, model.mel_config)
    judge = None
    if classifier is not None:
        judge = trained_classifier(classifier, model.device)
        missing = [c for c in clips.classes if c not in judge.classes]
        if missing:
            raise SoundvjError(f"--classifier {str(classifier)!r}: knows classes {judge.classes}, not the data's {missing}")
    class_text = clip.encode_labels(list(clips.classes)).float()
    rows: list[EvalRow] = []
    sheet_clip = None
    if sources is not None:  # the contact sheet shows sounds of the held-out sources: other recordings than training's
        def sheet_clip(label: str, path: str) -> bool:
            return sources.get((label, Path(path).name), ("", ""))[1] == "heldout-source"
    if not model.sound_is_seeded:
        rows += _measure(model, clip, encoder, clips, class_text, data, seed, TRAINED, judge, keep_frames, confusion,
                         parts, timeline, sheet_clip)
        keep_frames = confusion = None  # the sheet and the confusion show the model's own sound models
        seeded = seeded_sound_models(model.generator.cpu(), mel=model.mel_config).to(model.device)
        model.generator.to(model.device)
        model = SoundvjModel(model.generator, seeded, model.mel_config, "seeded", True)
    rows += _measure(model, clip, encoder, clips, class_text, data, seed, BASELINE, judge, keep_frames, confusion)
    per_clip = [r for r in rows if r.clip != ALL_CLIPS]
    rows = per_clip + [r for r in rows if r.clip == ALL_CLIPS]
    return _split_rows(rows, sources) if sources is not None else rows


def write_contact_sheet(path: str | Path, frames: dict[str, list[torch.Tensor]], fps: float, columns: int = 8,
                        skip_seconds: float = 1.0) -> Path:
    """One row per class (sorted by name, the name on the left): `columns` frames spread evenly over
    that class's held-out clips, after the first `skip_seconds` of each clip (the window filling and
    the first latent settling). Frames under 128 px are enlarged (nearest) so a person can see them."""
    from PIL import Image, ImageDraw

    if not frames:
        raise SoundvjError("--sheet: no frames were generated (no held-out clips)")
    rows, names = [], sorted(frames)
    for name in names:
        skip = int(round(skip_seconds * fps))
        usable = [f[skip:] if f.shape[0] > skip else f for f in frames[name]]
        pool = torch.cat(usable)
        picks = [(k * pool.shape[0] + pool.shape[0] // 2) // columns for k in range(min(columns, pool.shape[0]))]
        row = pool[picks]
        if row.shape[-1] < 128:
            row = torch.nn.functional.interpolate(row, scale_factor=128 // row.shape[-1] or 1, mode="nearest")
        rows.append(row)
    grid = Image.fromarray(grid_image(rows))
    label_width = 8 + 7 * max(len(n) for n in names)
    sheet = Image.new("RGB", (grid.width + label_width, grid.height), (40, 40, 40))
    sheet.paste(grid, (label_width, 0))
    draw = ImageDraw.Draw(sheet)
    row_height = (grid.height - 2) / len(names)
    for i, name in enumerate(names):
        draw.text((4, int(2 + (i + 0.5) * row_height) - 6), name, fill=(230, 230, 230))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    write_bytes_atomic(Path(path), buffer.getvalue())
    return Path(path)


def summary_rows(rows: list[EvalRow]) -> list[EvalRow]:
    """The overall summary rows (one per model; the per-split ones of --by-source are left out)."""
    return [r for r in rows if r.clip == ALL_CLIPS and not r.split]


def format_table(rows: list[EvalRow]) -> str:
    """The summary rows as a table, with chance."""
    summary = summary_rows(rows)
    judged = any(r.classifier_accuracy is not None for r in summary)
    extra = f" {'classifier_acc':>14}" if judged else ""
    lines = [f"{'models':<20} {'frames':>6} {'clip_cosine':>11} {'zero_shot_acc':>13} {'frame_change':>12}{extra}"]
    for r in summary:
        extra = f" {r.classifier_accuracy:>14.3f}" if judged else ""
        lines.append(f"{r.models:<20} {r.frames:>6} {r.clip_cosine:>11.4f} {r.zero_shot_accuracy:>13.3f} "
                     f"{r.frame_change:>12.4f}{extra}")
    extra = f" {summary[0].chance:>14.3f}" if judged else ""
    lines.append(f"{'chance':<20} {'':>6} {'':>11} {summary[0].chance:>13.3f} {'':>12}{extra}")
    return "\n".join(lines)


def format_parts(rows: list[EvalRow]) -> str:
    """Per class (frame-weighted over its clips) for the trained model: the share of windows each part of
    the chain keeps in the class, the sound side first, the whole pipeline last ("" without parts)."""
    per_clip = [r for r in rows if r.models == TRAINED and r.clip != ALL_CLIPS and r.audio_zero_shot is not None]
    if not per_clip:
        return ""
    judged = any(r.classifier_accuracy is not None for r in per_clip)
    columns = [("E_A zero-shot", "audio_zero_shot"), ("G(E_I) zero-shot", "inverter_zero_shot")]
    columns += [("G(E_I) classifier", "inverter_classifier_accuracy")] if judged else []
    columns += [("frames zero-shot", "zero_shot_accuracy")] + ([("frames classifier", "classifier_accuracy")] if judged else [])
    lines = [f"{TRAINED}: where each class is kept (share of its windows; E_A: the sound side, G(E_I): the inverter "
             "without the stepper, frames: the whole pipeline)",
             f"{'sound':<10}" + "".join(f"{title:>19}" for title, _ in columns)]
    for label in sorted({r.label for r in per_clip}):
        mine = [r for r in per_clip if r.label == label]
        frames = sum(r.frames for r in mine)
        values = [sum(getattr(r, key) * r.frames for r in mine) / frames for _, key in columns]
        lines.append(f"{label:<10}" + "".join(f"{v:>19.2f}" for v in values))
    return "\n".join(lines)


def format_timeline(timeline: dict[str, torch.Tensor], judged: bool) -> str:
    """Per class, the whole pipeline's accuracy in each span of frames since the clip began (CLIP / classifier)."""
    if not timeline:
        return ""
    names = [f"frames {lo}-{hi - 1}" if hi else f"frames {lo}+" for lo, hi in TIME_SPANS]
    lines = [f"{TRAINED}: the frames' accuracy by time since the clip began (zero-shot{' / classifier' if judged else ''}"
             "; a stepper that drifts on long rollouts loses the class later)",
             f"{'sound':<10}" + "".join(f"{name:>19}" for name in names)]
    for label in sorted(timeline):
        cells = []
        for clip_hits, judge_hits, frames in timeline[label].tolist():
            if not frames:
                cells.append("-")
            else:
                cells.append(f"{clip_hits / frames:.2f}" + (f" / {judge_hits / frames:.2f}" if judged else "")
                             + f" ({int(frames)})")
        lines.append(f"{label:<10}" + "".join(f"{cell:>19}" for cell in cells))
    return "\n".join(lines)


def write_csv(path: Path, rows: list[EvalRow]) -> Path:
    """All rows as CSV, written atomically."""

    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow([f.name for f in fields(EvalRow)])
    for row in rows:
        writer.writerow(["" if v is None else f"{v:.6g}" if isinstance(v, float) else v for v in asdict(row).values()])
    write_bytes_atomic(Path(path), text.getvalue().encode("utf-8"))
    return Path(path)


def default_csv_path(model: str | Path) -> Path:
    model = Path(model)
    if str(model) == "default":
        return Path("default.eval.csv")
    return model.with_name(f"{model.name}.eval.csv")


def run_cli(args: argparse.Namespace) -> int:
    """`soundvj eval MODEL DATASET --clip CKPT [--csv PATH] [--set data.K=V] [--device D] [--seed N]`
    (arguments defined in training.cli)."""
    sheet = getattr(args, "sheet", None)
    if sheet and not 1 <= args.sheet_columns <= 64:
        raise SoundvjError(f"--sheet-columns {args.sheet_columns}: expected 1 .. 64")
    keep: dict[str, list[torch.Tensor]] | None = {} if sheet else None
    confusion: dict[str, Any] | None = {} if getattr(args, "confusion", False) else None
    parts = bool(getattr(args, "parts", False))
    timeline: dict[str, torch.Tensor] | None = {} if parts else None
    by_source = bool(getattr(args, "by_source", False))
    rows = evaluate(args.model, args.dataset, args.clip, list(args.overrides), seed=args.seed, device=args.device,
                    classifier=getattr(args, "classifier", None), keep_frames=keep, confusion=confusion, parts=parts,
                    timeline=timeline, by_source=by_source)
    out = Path(args.csv) if args.csv else default_csv_path(args.model)
    print(format_table(rows))
    if by_source:
        print("\n" + format_by_source(rows))
    if confusion:
        print("\n" + format_confusion(confusion))
    if parts:
        print("\n" + (format_parts(rows) or "--parts: the model has no trained sound models to measure"))
        if timeline:
            print("\n" + format_timeline(timeline, judged=getattr(args, "classifier", None) is not None))
    write_csv(out, rows)
    print(f"soundvj: wrote {out}", file=sys.stderr)
    if sheet:
        data = data_config(args.dataset, list(args.overrides))
        write_contact_sheet(sheet, keep or {}, data.fps, columns=args.sheet_columns)
        print(f"soundvj: wrote {sheet} (one row per class, frames from its held-out recordings)", file=sys.stderr)
    return 0
