"""`soundvj data folds DATASET`: how far the sound embedding carries each class to sources it never heard.

One held-out source per class says little: it may be an easy or a strange recording. Here every source
of every class is held out in turn. For each (class, source) pair the linear read-out E_I's choice of
kind is fitted with (`training.read_out`, the same settings as `train inverter`'s `kind_fit_*`) is fitted
on the windows of every other clip of the dataset, training and held-out alike, and judged on that
source's windows of that class. It is cheap: the embedding of each window is computed once, and each
fold fits only the read-out.

Windows: `per_second` a second of every clip from its second second on (the first hears part of a
window), in the embedding's mel settings. Sources come from the dataset's `SOURCES.csv` (as `soundvj
data demo` writes it in `clips/`). The result is per pair, per class (the mean over its sources, every
source counting once, and the worst), and the class mean (every class counting once).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from core.atomic_write import write_bytes_atomic
from core.errors import SoundvjError
from core.sound.sound_embedding import EMBED_DIM, MEL, shared_sound_embedding
from training.data.datasets import open_datasets
from training.data.clip_sources import listed_source, read_clip_sources
from training.evaluation.evaluate import data_config
from training.read_out import ReadOutFit, fit_read_out

BATCH = 256  # windows per embedding call


@dataclass(frozen=True)
class FoldResult:
    """One held-out (class, source) pair: how many of its windows the read-out put in the class."""

    label: str
    source: str
    windows: int
    accuracy: float


@dataclass(frozen=True)
class SourceWindows:
    """Embeddings [N, 512] of the dataset's windows, each with its class index, its source and its
    recording."""

    classes: tuple[str, ...]
    embeddings: torch.Tensor
    labels: torch.Tensor
    sources: list[str]
    recordings: list[str]


def source_windows(dataset: str | Path, per_second: float = 2.0, overrides: list[str] = ()) -> SourceWindows:
    """The embedding of `per_second` windows a second of every clip (from its second second on)."""
    if not 0 < per_second <= 24:
        raise SoundvjError(f"--per-second: expected a number in (0, 24], got {per_second!r}")
    data = data_config(dataset, ["data.holdout_fraction=0", *overrides])
    sources = read_clip_sources(data.path)
    clips, _, _ = open_datasets(data, MEL, verbose=False)
    stride = max(1, round(data.fps / per_second))
    skip = round(data.fps * data.window_seconds)
    embed = shared_sound_embedding("cpu")
    embeddings, labels, names, recordings = [], [], [], []
    for index in range(len(clips.clips)):
        whole = clips.whole_clip(index)
        label = clips.classes[int(whole["label"])]
        listed = listed_source(sources, data.path, label, whole["path"])
        mel = whole["mel"][skip::stride]
        if not len(mel):
            continue
        embeddings += [embed(mel[i : i + BATCH]) for i in range(0, len(mel), BATCH)]
        labels += [int(whole["label"])] * len(mel)
        names += [listed.source] * len(mel)
        recordings += [listed.recording] * len(mel)
    if not labels:
        raise SoundvjError(f"{data.path}: no clip is longer than {data.window_seconds:g} s; nothing to judge")
    return SourceWindows(clips.classes, torch.cat(embeddings), torch.tensor(labels), names, recordings)


def source_folds(windows: SourceWindows, fit: ReadOutFit = ReadOutFit()) -> list[FoldResult]:
    """Every (class, source) pair held out in turn, in class then source order."""
    results = []
    names = sorted(set(windows.sources))
    sources = torch.tensor([names.index(s) for s in windows.sources])
    for k, label in enumerate(windows.classes):
        in_class = windows.labels == k
        for source in sorted({s for s, c in zip(windows.sources, windows.labels.tolist()) if c == k}):
            held = in_class & (sources == names.index(source))
            kept = [r for r, h in zip(windows.recordings, held.tolist()) if not h]
            read_out = fit_read_out(windows.embeddings[~held], windows.labels[~held], len(windows.classes), kept, fit)
            with torch.no_grad():
                called = read_out(F.layer_norm(windows.embeddings[held], (EMBED_DIM,))).argmax(dim=1)
            results.append(FoldResult(label, source, int(held.sum()), (called == k).float().mean().item()))
    return results


def class_summary(results: list[FoldResult]) -> dict[str, tuple[float, float, int]]:
    """Per class: (mean over its sources, worst source, number of sources)."""
    out = {}
    for label in dict.fromkeys(r.label for r in results):
        accs = [r.accuracy for r in results if r.label == label]
        out[label] = (sum(accs) / len(accs), min(accs), len(accs))
    return out


def format_folds(results: list[FoldResult]) -> str:
    lines = [f"{'sound':<10}{'held-out source':<28}{'windows':>8}{'accuracy':>10}"]
    lines += [f"{r.label:<10}{r.source:<28}{r.windows:>8}{r.accuracy:>10.2f}" for r in results]
    summary = class_summary(results)
    lines += ["", f"{'sound':<10}{'sources':>8}{'mean':>8}{'worst':>8}"]
    lines += [f"{label:<10}{n:>8}{mean:>8.2f}{worst:>8.2f}" for label, (mean, worst, n) in summary.items()]
    lines.append(f"{'class mean':<18}{sum(m for m, _, _ in summary.values()) / len(summary):>8.2f}")
    return "\n".join(lines)


def write_folds_csv(path: str | Path, results: list[FoldResult]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["class", "source", "windows", "accuracy"])
    writer.writerows([r.label, r.source, r.windows, f"{r.accuracy:.6f}"] for r in results)
    write_bytes_atomic(Path(path), buffer.getvalue().encode())
    return Path(path)


def run_cli(args: argparse.Namespace) -> int:
    windows = source_windows(args.dataset, args.per_second, args.overrides)
    results = source_folds(windows, ReadOutFit(steps=args.steps))
    print(format_folds(results))
    if args.csv:
        print(f"soundvj: wrote {write_folds_csv(args.csv, results)}", file=sys.stderr)
    return 0
