"""Recipes: checked YAML, steps run in order, paused by a signal or the piece's deadline, resumed,
and carried to a fresh machine through the state folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.cli import main
from core.errors import SoundvjError
from training.recipes.recipe import load_recipe, run_recipe

ROOT = Path(__file__).resolve().parent.parent


def _images(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(("dark", "light")):
        (root / name).mkdir(parents=True)
        for i in range(12):
            base = np.full((16, 16, 3), 40 + 150 * k, np.float64) + rng.normal(0, 20, (16, 16, 3))
            Image.fromarray(base.clip(0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def _recipe(tmp: Path, steps: int, piece_hours: float = 1.0, width: int = 4, extra: str = "") -> Path:
    text = f"""
name: toy
vars: {{data: {tmp}/images, runs: {tmp}/runs}}
state: toy-state
piece_hours: {piece_hours}
steps:
  - name: presets
    command: [presets]
  - name: judge
    stage: classifier
    args: [--data, "{{data}}"]
    set: {{loop.steps: {steps}, loop.batch_size: 4, loop.checkpoint_every: 2, loop.progress: false,
           stage.resolution: 16, stage.width: {width}, stage.holdout_every: 4}}
{extra}"""
    path = tmp / "toy.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("body, message", [
    ("name: x\nsteps: []\n", "'steps' must be a non-empty list"),
    ("name: x\nbogus: 1\nsteps: [{name: a, command: [presets]}]\n", "unknown key 'bogus'"),
    ("name: x\nsteps: [{name: a}]\n", "give exactly one of 'stage' or 'command'"),
    ("name: x\nsteps: [{name: a, stage: nope}]\n", "unknown stage 'nope'"),
    ("name: x\nsteps: [{name: a, command: [presets]}, {name: a, command: [presets]}]\n", "used twice"),
    ("name: x\npiece_hours: 0\nsteps: [{name: a, command: [presets]}]\n", "'piece_hours' must be"),
    ("name: x\nsteps: [{name: a, command: ['{nowhere}']}]\n", "cannot expand '{nowhere}'"),
    ("name: x\nsteps: [{name: a, command: [presets], set: {loop.steps: 3}}]\n", "'set' is for stages"),
])
def test_bad_recipes_are_one_line_errors(tmp_path, body, message):
    path = tmp_path / "r.yaml"
    path.write_text(body)
    with pytest.raises(SoundvjError, match=message) as info:
        load_recipe(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_list_shows_the_commands(tmp_path, capsys):
    _images(tmp_path / "images")
    assert main(["train", "recipe", str(_recipe(tmp_path, steps=6)), "--list"]) == 0
    out = capsys.readouterr().out
    assert "presets        to do   soundvj presets" in out
    assert f"soundvj train classifier --out {tmp_path}/runs/judge --data {tmp_path}/images" in out


def test_a_signal_pauses_the_piece_and_the_next_call_resumes_it(tmp_path, capsys):
    _images(tmp_path / "images")
    recipe = _recipe(tmp_path, steps=100000)
    run = tmp_path / "runs" / "judge"
    proc = subprocess.Popen([sys.executable, "-m", "core.cli", "train", "recipe", str(recipe)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoint.pt").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert (run / "checkpoint.pt").exists(), "the stage never wrote a checkpoint"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, out
    assert "stopped by signal" in out and "Traceback" not in out
    state = tmp_path / "toy-state" / "judge" / "checkpoint.pt"
    assert state.exists() and not (tmp_path / "toy-state" / "judge" / "DONE").exists()
    assert (tmp_path / "runs" / "presets" / "DONE").exists()  # the command step ran first

    import torch

    paused_step = torch.load(state, weights_only=True)["step"]
    assert paused_step >= 2 and "optimizers" in torch.load(state, weights_only=True)

    # --list counts what the state folder carries: a fresh machine (no run folder) still sees the pause.
    import shutil

    shutil.move(run, tmp_path / "run-aside")
    assert main(["train", "recipe", str(recipe), "--list"]) == 0
    assert "judge          started soundvj train classifier" in capsys.readouterr().out
    shutil.move(tmp_path / "run-aside", run)

    # The next piece resumes the stage (loop.steps may change on resume) and finishes it.
    result = run_recipe(load_recipe(_recipe(tmp_path, steps=paused_step + 4)), log=lambda _: None)
    assert result.finished and result.ran == ("judge",)
    payload = torch.load(state, weights_only=True)
    assert payload["step"] == paused_step + 4 and payload.get("finished") and "optimizers" not in payload

    # A fresh machine: the run folders are gone; the state folder restores what later steps read.
    import shutil

    shutil.rmtree(tmp_path / "runs")
    lines: list[str] = []
    result = run_recipe(load_recipe(_recipe(tmp_path, steps=paused_step + 4)), log=lines.append)
    assert result.finished and result.ran == ()  # both steps' DONE markers came back with the state
    assert any("[judge] restored" in line for line in lines) and any("[presets] restored" in line for line in lines)
    from training.stages.classifier import trained_classifier

    assert trained_classifier(tmp_path / "runs" / "judge").classes == ["dark", "light"]


def test_the_pieces_deadline_pauses_a_long_stage(tmp_path):
    _images(tmp_path / "images")
    recipe = load_recipe(_recipe(tmp_path, steps=100000))
    started = time.monotonic()
    result = run_recipe(recipe, hours=8 / 3600, log=lambda _: None)
    assert not result.finished and result.paused_at == "judge" and result.stopped_by is None
    assert time.monotonic() - started < 8 + 60


def test_state_carries_small_unfinished_checkpoints_and_half_precision_finished_ones(tmp_path):
    import torch

    from training.loop import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, save_checkpoint
    from training.recipes.recipe import save_state

    path = tmp_path / "r.yaml"
    path.write_text(f"""
name: r
vars: {{runs: {tmp_path}/runs}}
max_state_mb: 0.1
steps:
  - {{name: big, stage: classifier}}
  - {{name: small, stage: classifier}}
  - {{name: judge, stage: classifier, state_precision: half}}
""")
    recipe = load_recipe(path)
    for name, n in (("big", 100_000), ("small", 1000), ("judge", 1000)):
        (tmp_path / "runs" / name).mkdir(parents=True)
        save_checkpoint(tmp_path / "runs" / name / "checkpoint.pt", {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "stage_name": "classifier", "step": 3,
            "modules": {"classifier": {"w": torch.randn(n)}}, "optimizers": {"adamw": {"state": {}}}})
    (tmp_path / "runs" / "judge" / "DONE").write_text("")
    lines: list[str] = []
    for step in recipe.steps:
        save_state(recipe, step, lines.append)
    state = tmp_path / "r-state"
    assert not (state / "big" / "checkpoint.pt").exists() and any("[big] not carried" in x for x in lines)
    small = torch.load(state / "small" / "checkpoint.pt", weights_only=True)
    assert "optimizers" in small and small["modules"]["classifier"]["w"].dtype == torch.float32
    judge = torch.load(state / "judge" / "checkpoint.pt", weights_only=True)
    assert "optimizers" not in judge and judge["modules"]["classifier"]["w"].dtype == torch.float16
    assert (state / "judge" / "DONE").exists()


def test_state_option_keeps_a_second_run_of_the_recipe_apart(tmp_path):
    import shutil

    import torch

    from training.loop import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, save_checkpoint
    from training.recipes.recipe import restore_state, save_state

    path = tmp_path / "r.yaml"
    path.write_text(f"name: r\nvars: {{runs: {tmp_path}/runs}}\nsteps: [{{name: a, stage: classifier}}]\n")
    assert load_recipe(path).state_dir == tmp_path / "r-state"
    other = load_recipe(path, {"runs": str(tmp_path / "runs2")}, state_dir=tmp_path / "elsewhere")
    assert other.state_dir == tmp_path / "elsewhere" and other.run_dir(other.steps[0]) == tmp_path / "runs2" / "a"
    (tmp_path / "runs2" / "a").mkdir(parents=True)
    save_checkpoint(tmp_path / "runs2" / "a" / "checkpoint.pt", {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "stage_name": "classifier", "step": 2,
        "modules": {"classifier": {"w": torch.ones(3)}}, "optimizers": {}})
    save_state(other, other.steps[0])
    assert (tmp_path / "elsewhere" / "a" / "checkpoint.pt").exists() and not (tmp_path / "r-state").exists()
    shutil.rmtree(tmp_path / "runs2")  # a fresh machine: the run folder is gone, the state folder is not
    assert restore_state(other, other.steps[0]) and (tmp_path / "runs2" / "a" / "checkpoint.pt").exists()


def _status(recipe_path: Path, capsys) -> dict[str, str]:
    capsys.readouterr()
    assert main(["train", "recipe", str(recipe_path), "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    return {line.split()[0]: line.split()[1] for line in lines if not line.startswith(" ")}


def test_a_changed_setting_trains_the_stage_again_and_keeps_the_old_run(tmp_path, capsys):
    import torch

    _images(tmp_path / "images")
    assert run_recipe(load_recipe(_recipe(tmp_path, steps=4)), log=lambda _: None).finished
    assert _status(_recipe(tmp_path, steps=4), capsys)["judge"] == "done"
    changed = _recipe(tmp_path, steps=4, width=8)
    assert _status(changed, capsys)["judge"] == "stale"
    assert main(["train", "recipe", str(changed), "--list"]) == 0
    assert "(stage.width: 4 in the checkpoint, 8 now)" in capsys.readouterr().out
    lines: list[str] = []
    result = run_recipe(load_recipe(changed), log=lines.append)
    assert result.finished and result.ran == ("judge",), lines
    assert any("stage.width: 4 in the checkpoint, 8 now" in x for x in lines), lines
    kept = list((tmp_path / "runs").glob("judge.replaced-*"))
    assert len(kept) == 1 and torch.load(kept[0] / "checkpoint.pt", weights_only=True)["config"]["stage"]["width"] == 4
    for where in (tmp_path / "runs" / "judge", tmp_path / "toy-state" / "judge"):
        payload = torch.load(where / "checkpoint.pt", weights_only=True)
        assert payload["config"]["stage"]["width"] == 8 and payload["step"] == 4
    assert _status(changed, capsys)["judge"] == "done"


def test_more_steps_resume_a_finished_stage(tmp_path, capsys):
    import torch

    _images(tmp_path / "images")
    assert run_recipe(load_recipe(_recipe(tmp_path, steps=4)), log=lambda _: None).finished
    longer = _recipe(tmp_path, steps=6)
    assert _status(longer, capsys)["judge"] == "more"
    lines: list[str] = []
    assert run_recipe(load_recipe(longer), log=lines.append).finished
    assert any("resuming it for the extra steps" in x for x in lines) and "--resume" in " ".join(lines), lines
    assert torch.load(tmp_path / "runs" / "judge" / "checkpoint.pt", weights_only=True)["step"] == 6
    assert not list((tmp_path / "runs").glob("judge.replaced-*"))


def test_a_step_older_than_what_it_reads_runs_again(tmp_path):
    from training.recipes.recipe import newer_inputs, refresh_stale, step_status

    extra = """  - name: listing
    command: [presets, "{runs}/judge"]
    creates: "{runs}/listing.txt"
  - name: unrelated
    command: [presets]
    creates: "{runs}/other.txt"
"""
    _images(tmp_path / "images")
    recipe = load_recipe(_recipe(tmp_path, steps=4, extra=extra))
    assert run_recipe(recipe, only="judge", log=lambda _: None).ran == ("judge",)
    listing, other = tmp_path / "runs" / "listing.txt", tmp_path / "runs" / "other.txt"
    for path in (listing, other):
        path.write_text("made before the judge\n")
        done = (tmp_path / "runs" / "judge" / "DONE").stat().st_mtime
        os.utime(path, (done - 60, done - 60))
    by_name = {s.name: s for s in recipe.steps}
    assert newer_inputs(recipe, by_name["listing"]) == ["judge"] and step_status(recipe, by_name["listing"]) == "stale"
    assert newer_inputs(recipe, by_name["unrelated"]) == [] and step_status(recipe, by_name["unrelated"]) == "done"
    lines: list[str] = []
    refresh_stale(recipe, by_name["listing"], lines.append)
    assert not listing.exists() and list((tmp_path / "runs").glob("listing.txt.replaced-*")), lines
    assert step_status(recipe, by_name["listing"]) == "to do"


def test_settings_added_to_the_code_later_do_not_make_old_checkpoints_differ():
    from training.settings import identity_differences

    defaults = {"stage": {"lr": 0.1, "new_flag": False}}
    saved = {"stage": {"lr": 0.1}}  # written before new_flag existed
    assert identity_differences(saved, {"stage": {"lr": 0.1, "new_flag": False}}, defaults=defaults) == []
    assert identity_differences(saved, {"stage": {"lr": 0.1, "new_flag": True}}, defaults=defaults) == [
        "stage.new_flag: False in the checkpoint, True now"]
    assert identity_differences(saved, {"stage": {"lr": 0.1, "new_flag": False}}) == [
        "stage.new_flag: '<absent>' in the checkpoint, False now"]


def test_a_path_setting_naming_the_same_folder_is_the_same_setting(tmp_path):
    from training.settings import identity_differences

    (tmp_path / "runs" / "clip").mkdir(parents=True)
    (tmp_path / "moved").symlink_to(tmp_path / "runs")
    saved = {"stage": {"clip": str(tmp_path / "runs" / "clip")}}
    assert identity_differences(saved, {"stage": {"clip": str(tmp_path / "moved" / "clip")}}) == []
    assert identity_differences(saved, {"stage": {"clip": str(tmp_path / "runs" / "other")}})  # not there: differs


def test_the_demo_recipes_seed_var_seeds_every_stage():
    """`--var seed=N` trains a sibling of the shipped run: every stage gets loop.seed=N; the default, 0, is
    loop.seed's own default, so runs made before the var existed stay done."""
    from training.config import LoopConfig
    from training.recipes.recipe import step_argv

    demo = Path(__file__).resolve().parents[1] / "training" / "recipes" / "demo.yaml"
    for seed, recipe in (("0", load_recipe(demo)), ("7", load_recipe(demo, {"seed": "7"}))):
        stages = [s for s in recipe.steps if s.stage is not None]
        assert len(stages) == 6
        for step in stages:
            argv = step_argv(recipe, step)
            seeds = [argv[i + 1] for i, a in enumerate(argv) if a == "--set" and argv[i + 1].startswith("loop.seed=")]
            assert seeds == [f"loop.seed={seed}"], (step.name, argv)
    assert LoopConfig().seed == 0
