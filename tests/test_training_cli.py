"""`soundvj train` / `data` end to end: config errors exit 2, resume, SIGKILL, and torchrun with 2 gloo ranks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import training.stages
from core.cli import main
from training.stages import StageEntry
from training.loop import CHECKPOINT_NAME, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
TOY_ARGS = ["--set", "loop.batch_size=4", "--set", "loop.progress=false", "--set", "loop.device=cpu"]


@pytest.fixture()
def toy_stage(monkeypatch):
    """`soundvj train toy` runs the loop's test stage through the real CLI path."""
    monkeypatch.setitem(training.stages.STAGES, "toy", StageEntry("tests.training_toy", "no-such-file.yaml", "test stage"))


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def python_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def test_train_runs_and_resumes_with_the_checkpoints_config(toy_stage, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "toy", "--out", str(run), "--set", "loop.steps=3", *TOY_ARGS], capsys)
    assert code == 0, err
    assert load_checkpoint(run)["step"] == 3
    assert f"step 3; checkpoint {run / CHECKPOINT_NAME}" in err
    # --resume without --config: the checkpoint's config, with loop.steps raised.
    code, _, err = run_cli(["train", "toy", "--out", str(run), "--resume", "--set", "loop.steps=5"], capsys)
    assert code == 0, err
    payload = load_checkpoint(run)
    assert payload["step"] == 5 and payload["config"]["loop"]["batch_size"] == 4


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("loop.stepz=3", "soundvj: error: loop: unknown key(s) stepz; expected some of"),
        ("stage.lr=fast", "soundvj: error: stage.lr: expected a number, got 'fast'"),
        ("loop.batch_size=0", "soundvj: error: loop.batch_size: expected a value >= 1, got 0"),
        ("model.width=3", "soundvj: error: config: unknown section(s) model"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(toy_stage, tmp_path, capsys, override, message):
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "toy", "--out", str(run), *TOY_ARGS, "--set", override], capsys)
    assert code == 2
    assert err.startswith(message) and err.count("\n") == 1
    assert not (run / CHECKPOINT_NAME).exists()


def test_resume_with_another_config_is_refused_and_leaves_the_checkpoint(toy_stage, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli(["train", "toy", "--out", str(run), "--set", "loop.steps=2", *TOY_ARGS], capsys)[0] == 0
    before = (run / CHECKPOINT_NAME).read_bytes()
    code, _, err = run_cli(["train", "toy", "--out", str(run), "--resume", "--set", "stage.width=3"], capsys)
    assert code == 2 and "written with another config: stage.width: 16 in the checkpoint, 3 now" in err
    assert err.count("\n") == 1
    assert (run / CHECKPOINT_NAME).read_bytes() == before
    code, _, err = run_cli(["train", "toy", "--out", str(tmp_path / "new"), "--resume"], capsys)
    assert code == 2 and "checkpoint.pt': not found" in err


def test_unavailable_stage_module_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(training.stages.STAGES, "ghost", StageEntry("training.stages.ghost", "ghost.yaml", "absent"))
    code, _, err = run_cli(["train", "ghost", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "train ghost: this stage is not available" in err


def test_sigkill_mid_run_leaves_a_whole_checkpoint_and_resume_is_bitwise(tmp_path):
    """kill -9 while a run checkpoints every step; the checkpoint is whole and resuming loses nothing."""
    run, whole = tmp_path / "run", tmp_path / "whole"
    args = ["--set", "loop.steps=40", "--set", "loop.checkpoint_every=1", "--set", "stage.width=256", *TOY_ARGS]
    child = subprocess.Popen([sys.executable, "-m", "tests.training_toy", str(run), *args,
                              "--set", "stage.step_sleep=0.03"], cwd=REPO, env=python_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (run / CHECKPOINT_NAME).exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.02)
    time.sleep(0.4)  # some steps into the run
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()[-2000:]
    killed_at = load_checkpoint(run)["step"]  # a whole checkpoint, never a torn one
    assert 1 <= killed_at < 40
    # Resume (which also clears any temp file the kill left) and finish; compare with an uninterrupted run.
    resumed = subprocess.run([sys.executable, "-m", "tests.training_toy", str(run), "--resume", *args],
                             cwd=REPO, env=python_env(), capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert not list(run.glob("*.partial"))
    straight = subprocess.run([sys.executable, "-m", "tests.training_toy", str(whole), *args],
                              cwd=REPO, env=python_env(), capture_output=True, timeout=300)
    assert straight.returncode == 0, straight.stderr.decode()[-2000:]
    a, b = load_checkpoint(run), load_checkpoint(whole)
    assert a["step"] == b["step"] == 40
    for key, value in a["modules"]["net"].items():
        assert torch.equal(value, b["modules"]["net"][key]), key


KILL_DURING_WRITE = """
import sys, time, torch
from pathlib import Path
from training.loop import save_checkpoint
path = Path(sys.argv[1])
save_checkpoint(path, {"format": "soundvj-train-checkpoint", "version": 1, "step": 1, "w": torch.ones(4)})
print("first", flush=True)
big = {"format": "soundvj-train-checkpoint", "version": 1, "step": 2, "w": torch.zeros(60_000_000)}
while True:
    save_checkpoint(path, big)
"""


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    child = subprocess.Popen([sys.executable, "-c", KILL_DURING_WRITE, str(path)], cwd=REPO, env=python_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout.readline().strip() == b"first"
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("*.partial")) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert list(tmp_path.glob("*.partial")), "the writer never started the big checkpoint"
    child.send_signal(signal.SIGKILL)  # mid-write: a temp file exists beside the checkpoint
    child.wait(timeout=30)
    payload = load_checkpoint(path)
    assert payload["step"] in (1, 2)  # the old one, or a whole new one if the rename won the race
    assert payload["w"].numel() in (4, 60_000_000)


@pytest.mark.timeout(300)
def test_torchrun_two_gloo_ranks_agree_and_write_the_same_checkpoint_format(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    run, dumps = tmp_path / "ddp", tmp_path / "dumps"
    dumps.mkdir()
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "tests.training_toy", str(run),
         "--set", "loop.steps=6", "--set", "loop.checkpoint_every=4", *TOY_ARGS, "--dump-params", str(dumps)],
        cwd=REPO, env=python_env(), capture_output=True, timeout=280,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    ddp = load_checkpoint(run)
    single_run = tmp_path / "single"
    single = subprocess.run([sys.executable, "-m", "tests.training_toy", str(single_run), "--set", "loop.steps=1",
                             *TOY_ARGS], cwd=REPO, env=python_env(), capture_output=True, timeout=120)
    assert single.returncode == 0, single.stderr.decode()[-2000:]
    plain = load_checkpoint(single_run)
    assert set(ddp) == set(plain)
    assert ddp["world_size"] == 2 and plain["world_size"] == 1
    assert len(ddp["rng"]) == 2 and not torch.equal(ddp["rng"][0]["torch"], ddp["rng"][1]["torch"])
    rank0, rank1 = (torch.load(dumps / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for key, value in ddp["modules"]["net"].items():
        assert torch.equal(rank0[key], rank1[key]), f"ranks disagree on {key}"
        assert torch.equal(value, rank0[key])
        assert not torch.equal(value, plain["modules"]["net"][key])  # it trained: 6 steps, not 1
    assert ddp["step"] == 6


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="lists threads through /proc")
def test_torchrun_ranks_end_their_gloo_threads_before_the_interpreter_exits(tmp_path):
    """train() destroys the process group for real: no gloo thread is left to be torn down at exit."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    dumps = tmp_path / "threads"
    dumps.mkdir()
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "tests.training_toy", str(tmp_path / "ddp"),
         "--set", "loop.steps=2", *TOY_ARGS, "--dump-threads", str(dumps)],
        cwd=REPO, env=python_env(), capture_output=True, timeout=280,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    for rank in (0, 1):
        left = (dumps / f"threads{rank}.txt").read_text().split()
        assert not [name for name in left if "gloo" in name], f"rank {rank} still runs {left}"


def test_data_scan_names_bad_clips(tmp_path, capsys):
    from training.data.synth import SynthSettings, write_dataset

    write_dataset(tmp_path, SynthSettings(clips_per_class=1, seconds=1.5, size=16))
    (tmp_path / "rain" / "broken.mp4").write_bytes(b"\x00\x01 not a video")
    import numpy as np

    from core.video_writer import Mp4Writer

    for name, seconds, level in (("quiet.mp4", 1.5, 0.0), ("short.mp4", 0.5, 0.5)):
        with Mp4Writer(tmp_path / "hum" / name, 24, 16, 16, audio=np.full((1, int(seconds * 44100)), level, np.float32)
                       * np.sin(np.arange(int(seconds * 44100)) / 10.0, dtype=np.float32), sample_rate=44100) as w:
            for _ in range(int(seconds * 24)):
                w.write(np.zeros((16, 16, 3), np.uint8))
    code, out, err = run_cli(["data", "scan", str(tmp_path)], capsys)
    assert code == 0, err
    assert f"{tmp_path}: 5 classes, 8 video clips, 5 usable" in out
    assert "rain         2       1" in out and "hum          3       1" in out
    assert "skipped 3 (1 silent, 1 too-short, 1 unreadable):" in out and "broken.mp4: unreadable:" in out
    assert "quiet.mp4: silent: digital silence, below data.silence_db=-60" in out
    assert re.search(r"short.mp4: too short: 0\.5\d s, expected at least 1 s", out)
    code, out, err = run_cli(["data", "scan", str(tmp_path / "missing")], capsys)
    assert code == 2 and "not found" in err and err.count("\n") == 1


TINY_CLIP = ["stage.clip.embed_dim=16", "stage.clip.image_size=16", "stage.clip.patch_size=8",
             "stage.clip.vision_width=32", "stage.clip.vision_layers=1", "stage.clip.vision_head_width=16",
             "stage.clip.text_width=32", "stage.clip.text_layers=1", "stage.clip.text_heads=2",
             "stage.clip.context_length=8", "loop.batch_size=4", "loop.steps=1", "loop.progress=false",
             "loop.device=cpu", "data.fps=8", "data.holdout_fraction=0"]


def test_train_counts_skipped_clips_and_refuses_a_one_class_dataset(tmp_path, capsys):
    pytest.importorskip("open_clip", reason="the train extra (open_clip) is not installed")
    from training.data.synth import SynthSettings, write_dataset

    data = tmp_path / "data"
    write_dataset(data, SynthSettings(clips_per_class=1, seconds=1.5, size=16, fps=8.0))
    (data / "rain" / "broken.mp4").write_bytes(b"\x00" * 64)
    sets = [a for kv in TINY_CLIP for a in ("--set", kv)]
    code, _, err = run_cli(["train", "clip", "--data", str(data), "--out", str(tmp_path / "run"), *sets], capsys)
    assert code == 0, err
    assert "data: 5 classes, 5 of 6 clips usable" in err and "skipped 1 unreadable" in err
    assert load_checkpoint(tmp_path / "run")["step"] == 1

    one = tmp_path / "one"
    write_dataset(one, SynthSettings(clips_per_class=2, seconds=1.5, size=16, fps=8.0))
    for folder in ("hum", "chirps", "crackle", "wind"):
        for clip in (one / folder).iterdir():
            clip.unlink()
    code, _, err = run_cli(["train", "clip", "--data", str(one), "--out", str(tmp_path / "run1"), *sets], capsys)
    assert code == 2 and "1 class (rain); expected at least 2 classes" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "run1" / CHECKPOINT_NAME).exists()


def test_print_config_shows_the_resolved_config(toy_stage, tmp_path, capsys):
    import yaml

    code, out, err = run_cli(["train", "toy", "--print-config", "--set", "stage.width=5", "--data", "/some/where"],
                             capsys)
    assert code == 0, err
    resolved = yaml.safe_load(out)
    assert resolved["stage"]["width"] == 5 and resolved["data"]["path"] == "/some/where"
    assert resolved["loop"]["steps"] == 1000  # the default
    assert not (REPO / "runs" / "toy").exists()


CLI_WITH_TOY = """
import sys
import training.stages
from core.cli import main
training.stages.STAGES["toy"] = training.stages.StageEntry("tests.training_toy", "none.yaml", "test stage")
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(("sig", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_checkpoint_and_exit_with_the_signal_code(tmp_path, sig, exit_code):
    run = tmp_path / "run"
    child = subprocess.Popen(
        [sys.executable, "-c", CLI_WITH_TOY, "train", "toy", "--out", str(run), "--set", "loop.steps=100000",
         "--set", "loop.checkpoint_every=0", "--set", "stage.step_sleep=0.01", *TOY_ARGS],
        cwd=REPO, env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not (run / "scalars.csv").exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    assert not (run / CHECKPOINT_NAME).exists()  # checkpoint_every 0: only at the end (or on a signal)
    child.send_signal(sig)
    _, err = child.communicate(timeout=60)
    assert child.returncode == exit_code, err.decode()[-2000:]
    step = load_checkpoint(run)["step"]
    assert 0 < step < 100000
    assert f"{signal.Signals(sig).name}: stopped at step {step}; checkpoint" in err.decode()


def test_data_synth_writes_the_dataset_and_checks_its_arguments(tmp_path, capsys):
    out = tmp_path / "synth"
    code, stdout, err = run_cli(["data", "synth", str(out), "--clips-per-class", "1", "--seconds", "1",
                                 "--size", "16", "-q"], capsys)
    assert code == 0, err
    assert len(list(out.glob("*/*.mp4"))) == 5
    assert stdout.startswith("wrote 5 clips (5 classes: rain, hum, chirps, crackle, wind; 1 s, 16x16 px, 24 fps)")
    code, _, err = run_cli(["data", "synth", str(out), "--size", "15"], capsys)
    assert code == 2 and err.startswith("soundvj: error: --size 15: expected an even number") and err.count("\n") == 1


DDP_STAGE_DRIVER = """
import sys
from pathlib import Path
import torch
sys.path.insert(0, {repo!r})
from tests.training_chain import stage_overrides
from training.config import load_run_config
from training.loop import train
from training.stages import stage_module

stage, root, run_dir, dumps = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
module = stage_module(stage)
config = load_run_config(stage, module.Config, None, stage_overrides(stage, root) + sys.argv[5:])
built = []
def keep(config, ctx):
    built.append((module.build(config, ctx), ctx.rank))
    return built[-1][0]
train(config, keep, run_dir)
stage_obj, rank = built[0]
torch.save({{n: m.state_dict() for n, m in stage_obj.modules.items()}}, dumps / f"rank{{rank}}.pt")
"""


@pytest.mark.timeout(600)
def test_torchrun_trains_the_gan_stage_and_ranks_agree(tmp_path, tmp_path_factory):
    """The stepper (stepper + two discriminators, each DDP-wrapped) under 2 gloo ranks."""
    pytest.importorskip("open_clip", reason="the train extra (open_clip) is not installed")
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    from tests.training_chain import build_chain

    root = build_chain(tmp_path_factory.getbasetemp() / "training_chain")  # shared with the stage tests
    script, dumps, run = tmp_path / "driver.py", tmp_path / "dumps", tmp_path / "stepper-ddp"
    script.write_text(DDP_STAGE_DRIVER.format(repo=str(REPO)))
    dumps.mkdir()
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), "stepper", str(root), str(run),
         str(dumps), "loop.steps=2"],
        cwd=REPO, env=python_env(), capture_output=True, timeout=580,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    saved = load_checkpoint(run)
    assert saved["step"] == 2 and saved["world_size"] == 2
    rank0, rank1 = (torch.load(dumps / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert set(rank0) == set(saved["modules"]) and len(rank0) >= 3
    for name, state in saved["modules"].items():
        for key, value in state.items():
            assert torch.equal(rank0[name][key], rank1[name][key]), f"ranks disagree on {name}.{key}"
            assert torch.equal(value, rank0[name][key])
