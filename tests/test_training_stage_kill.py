"""kill -9 in the middle of a sound stage, then `--resume`: the run ends where an uninterrupted one ends.

Each stage runs as `soundvj train STAGE` in a child process on the tiny chain (procedural clips, 32-px
generator, tiny CLIP), checkpointing every step; SIGKILL lands after the first checkpoint, mid-run.
The resumed run's modules and optimiser states equal, bit for bit, those of a run never interrupted.
(The generator's own kill -9 test is in test_training_generator.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("open_clip", reason="open_clip_torch is in the train extra (pip install -e '.[train]')")

from training.loop import load_checkpoint  # noqa: E402
from tests.training_chain import assert_same_state, build_chain, kill_after_first_checkpoint, stage_overrides  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STEPS = 8


@pytest.fixture(scope="session")
def chain(tmp_path_factory):
    return build_chain(tmp_path_factory.getbasetemp() / "training_chain")


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"  # the same thread count in every run, so results compare bit for bit
    return env


def train_args(stage: str, chain: Path, run: Path, *extra: str) -> list[str]:
    overrides = [*stage_overrides(stage, chain), f"loop.steps={STEPS}", "loop.checkpoint_every=1", *extra]
    return [sys.executable, "-m", "core.cli", "train", stage, "--out", str(run),
            *[a for kv in overrides for a in ("--set", kv)]]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("stage", ["audio-encoder", "inverter", "stepper"])
def test_sound_stage_resumes_after_sigkill(stage, chain, tmp_path):
    run, whole = tmp_path / "killed", tmp_path / "whole"
    killed_at = kill_after_first_checkpoint(train_args(stage, chain, run), run, REPO, child_env())
    assert 1 <= killed_at < STEPS

    resumed = subprocess.run([*train_args(stage, chain, run), "--resume"], cwd=REPO, env=child_env(),
                             capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    straight = subprocess.run(train_args(stage, chain, whole), cwd=REPO, env=child_env(), capture_output=True,
                              timeout=300)
    assert straight.returncode == 0, straight.stderr.decode()[-2000:]

    a, b = load_checkpoint(run), load_checkpoint(whole)
    assert a["step"] == b["step"] == STEPS
    for section in ("modules", "optimizers"):
        assert set(a[section]) == set(b[section])
        for name in a[section]:
            assert_same_state(a[section][name], b[section][name], f"{section}.{name}")
