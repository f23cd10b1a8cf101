"""The demo recipe makes the shipped default from nothing: data, generator, CLIP, sound stages, export, eval.

Run by hand (about four hours on 2 CPU cores, in pieces of at most two):

    SOUNDVJ_RECIPE_REPRODUCE=/some/dir ./dev.sh test tests/test_recipe_reproduces.py -s

DIR holds the data and run folders, DIR/state the pieces' small checkpoints (or SOUNDVJ_RECIPE_STATE,
a folder carried between pieces so that the run continues on another machine: the same as `soundvj train
recipe training/recipes/demo.yaml --state S --var runs=DIR/runs --var data=DIR/data`). The recipe's own
state folder (training/recipes/demo-state) is not used, so every stage trains from step 0. Then the exported model must come near the shipped model: at most 25 MB, and on every frame of the
held-out recordings (both splits) zero-shot accuracy >= 0.67 with the project's CLIP and >= 0.66 with
the classifier trained only on real images (the shipped default: 0.734 and 0.728; docs/default-model.md).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"zero_shot_accuracy": 0.67, "classifier_accuracy": 0.66}  # the shipped default's, less a run's noise

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("SOUNDVJ_RECIPE_REPRODUCE"),
                       reason="about 4 h on 2 cores, run by hand: SOUNDVJ_RECIPE_REPRODUCE=DIR ./dev.sh test "
                              "tests/test_recipe_reproduces.py -s"),
]


def pooled_accuracy(rows: list[dict], column: str) -> float:
    frames = sum(int(r["frames"]) for r in rows)
    return sum(float(r[column]) * int(r["frames"]) for r in rows) / frames


@pytest.mark.timeout(8 * 3600)
def test_the_demo_recipe_reproduces_the_default_from_nothing():
    work = Path(os.environ["SOUNDVJ_RECIPE_REPRODUCE"]).resolve()
    state = Path(os.environ.get("SOUNDVJ_RECIPE_STATE") or work / "state").resolve()
    runs, data = work / "runs", work / "data"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = [sys.executable, "-m", "core.cli", "train", "recipe", str(REPO / "training" / "recipes" / "demo.yaml"),
            "--state", str(state), "--var", f"data={data}", "--var", f"runs={runs}"]
    started = time.monotonic()
    for piece in range(1, 7):
        t0 = time.monotonic()
        result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
        print(f"piece {piece}: {time.monotonic() - t0:.0f} s, exit {result.returncode}: {result.stdout.strip()[-200:]}")
        assert result.returncode == 0, result.stderr[-3000:]
        if "steps done" in result.stdout:
            break
    else:
        pytest.fail("the recipe did not finish in 6 pieces")
    print(f"whole recipe in this test: {time.monotonic() - started:.0f} s")

    model = runs / "demo.safetensors"
    assert model.stat().st_size <= 25 * 2**20
    rows = [r for r in csv.DictReader((runs / "eval.csv").open()) if r["models"] == "trained" and r["label"]]
    zero_shot, classifier = pooled_accuracy(rows, "zero_shot_accuracy"), pooled_accuracy(rows, "classifier_accuracy")
    print(f"held-out frames: zero-shot {zero_shot:.3f}, classifier {classifier:.3f}")
    assert zero_shot >= TARGETS["zero_shot_accuracy"] and classifier >= TARGETS["classifier_accuracy"]
