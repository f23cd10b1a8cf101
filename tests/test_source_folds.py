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

    windows = source_windows(sourced_data, per_second=8.0)
    assert windows.embeddings.shape == (len(windows.labels), 512)
    results = source_folds(windows, steps=200)
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
