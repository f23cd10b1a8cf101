"""`soundvj data folds`: every (class, source) pair of a dataset held out in turn, a linear read-out of the
sound embedding trained on the rest and judged on it; per class the mean over its sources and the worst."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training_chain import make_data

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sourced_data(tmp_path_factory):
    """The procedural five-class clips, each clip of a class from its own 'package' (three per class)."""
    base = make_data(tmp_path_factory.getbasetemp() / "training_chain")
    root = tmp_path_factory.mktemp("sourced")
    rows = []
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        (root / folder.name).symlink_to(folder)
        for i, clip in enumerate(sorted(folder.glob("*.mp4"))):
            rows.append([f"{folder.name}/{clip.name}", folder.name, f"pkg{i}", "train"])
    with open(root / "SOURCES.csv", "w", newline="") as f:
        csv.writer(f).writerows([["clip", "class", "source", "use"], *rows])
    return root


def test_every_source_of_every_class_is_held_out_once_and_the_kinds_carry_over(sourced_data):
    from training.evaluation.source_folds import class_summary, source_folds, source_windows
    from training.read_out import ReadOutFit

    windows = source_windows(sourced_data, per_second=8.0)
    assert windows.embeddings.shape == (len(windows.labels), 512)
    results = source_folds(windows, ReadOutFit(steps=200))
    assert [(r.label, r.source) for r in results] == [(c, f"pkg{i}") for c in windows.classes for i in range(3)]
    assert all(r.windows > 0 and 0.0 <= r.accuracy <= 1.0 for r in results)
    summary = class_summary(results)
    for label, (mean, worst, n) in summary.items():
        accs = [r.accuracy for r in results if r.label == label]
        assert n == 3 and mean == pytest.approx(sum(accs) / 3) and worst == min(accs)
    # Procedural kinds of sound differ by far more than their recordings do: chance is 0.2.
    assert sum(m for m, _, _ in summary.values()) / len(summary) > 0.6


def test_the_command_prints_the_table_and_writes_the_csv(sourced_data, tmp_path):
    out = tmp_path / "folds.csv"
    r = subprocess.run([sys.executable, "-m", "core.cli", "data", "folds", str(sourced_data), "--per-second", "8",
                        "--steps", "50", "--csv", str(out)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "class mean" in r.stdout and "pkg2" in r.stdout
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 15 and {row["source"] for row in rows} == {"pkg0", "pkg1", "pkg2"}


def test_a_clip_missing_from_the_sources_list_is_a_one_line_error(sourced_data, tmp_path):
    for folder in sourced_data.iterdir():
        if folder.is_dir():
            (tmp_path / folder.name).symlink_to(folder.resolve())
    lines = (sourced_data / "SOURCES.csv").read_text().splitlines()
    (tmp_path / "SOURCES.csv").write_text("\n".join(lines[:-1]) + "\n")
    r = subprocess.run([sys.executable, "-m", "core.cli", "data", "folds", str(tmp_path)],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "is not in SOURCES.csv" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bad_counts_are_refused(sourced_data):
    for flag, value in (("--steps", "0"), ("--per-second", "0")):
        r = subprocess.run([sys.executable, "-m", "core.cli", "data", "folds", str(sourced_data), flag, value],
                           capture_output=True, text=True, cwd=REPO)
        assert r.returncode == 2 and flag in r.stderr and "Traceback" not in r.stderr


def test_each_clip_is_listed_with_its_recording_and_a_list_without_recordings_names_the_source(tmp_path):
    """E_I's choice of kind weighs recordings alike: the list's `sound` column names them; an older list
    without it gives each clip's source instead, so a fit by recording falls back to one by source."""
    from training.data.clip_sources import read_clip_sources

    (tmp_path / "SOURCES.csv").write_text("clip,class,source,use,sound\nrain/a.mp4,rain,pkg0,train,rain-long\n"
                                          "rain/b.mp4,rain,pkg0,heldout,rain-short\n")
    table = read_clip_sources(tmp_path)
    assert table[("rain", "a.mp4")] == ("pkg0", "train", "rain-long")
    assert table[("rain", "b.mp4")].recording == "rain-short" and table[("rain", "b.mp4")].use == "heldout"
    (tmp_path / "SOURCES.csv").write_text("clip,class,source,use\nrain/a.mp4,rain,pkg0,train\n")
    assert read_clip_sources(tmp_path)[("rain", "a.mp4")].recording == "pkg0"


def test_the_inverter_groups_its_training_windows_by_recording_source_or_class(sourced_data):
    """The stage's kind fit reads each training window's group from the data's SOURCES.csv."""
    import torch

    from training.data.datasets import open_datasets
    from training.evaluation.evaluate import data_config
    from training.stages.inverter import training_window_embeddings
    from core.sound.sound_embedding import MEL

    data = data_config(sourced_data, ["data.holdout_fraction=0"])
    clips, _, _ = open_datasets(data, MEL, verbose=False)
    _, labels, by_source = training_window_embeddings(clips, sourced_data, torch.device("cpu"), "source")
    assert set(by_source) == {"pkg0", "pkg1", "pkg2"} and len(by_source) == len(labels) == len(clips)
    _, _, by_recording = training_window_embeddings(clips, sourced_data, torch.device("cpu"), "recording")
    assert by_recording == by_source  # this list has no `sound` column
    assert training_window_embeddings(clips, sourced_data, torch.device("cpu"), "class")[2] is None
