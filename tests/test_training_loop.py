"""The shared training loop and its configs: overrides and errors, checkpoints, bitwise resume, signals."""

from __future__ import annotations

import csv
import os
import signal
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from core.errors import SoundvjError
from core.atomic_write import write_bytes_atomic
from tests import training_toy
from training.config import identity, load_run_config
from training.loop import CHECKPOINT_NAME, Stage, load_checkpoint, save_checkpoint, train
from training.settings import apply_overrides, from_dict, read_yaml, setting


def toy_config(*overrides: str):
    base = ["loop.batch_size=4", "loop.log_every=2", "loop.progress=false", "loop.device=cpu"]
    return load_run_config("toy", training_toy.ToyConfig, None, base + list(overrides))


def scalars(run_dir: Path) -> list[tuple[str, str, str]]:
    with open(run_dir / "scalars.csv", newline="") as f:
        return [(r[0], r[2], r[3]) for r in csv.reader(f)][1:]  # without wall_time


def assert_same_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    for name, state in a["modules"].items():
        for key, value in state.items():
            assert torch.equal(value, b["modules"][name][key]), f"{name}.{key} differs"
    opt_a, opt_b = a["optimizers"]["adamw"]["state"], b["optimizers"]["adamw"]["state"]
    for index in opt_a:
        for key in opt_a[index]:
            assert torch.equal(opt_a[index][key], opt_b[index][key]), f"optimiser {index}.{key} differs"
    assert a["schedulers"] == b["schedulers"]
    assert torch.equal(a["rng"][0]["torch"], b["rng"][0]["torch"])


# ---------------------------------------------------------------------------------------------
# Configs


@dataclass(frozen=True)
class Inner:
    rate: float = setting(0.5, min=0.0, max=1.0)


@dataclass(frozen=True)
class Example:
    count: int = setting(3, min=1)
    name: str = "x"
    flag: bool = False
    sizes: tuple[int, ...] = (1, 2)
    inner: Inner = setting(default_factory=Inner)


def test_config_from_dict_checks_keys_types_and_ranges():
    cfg = from_dict(Example, {"count": 5, "sizes": [4, 5, 6], "inner": {"rate": 1}}, "stage")
    assert cfg == Example(count=5, sizes=(4, 5, 6), inner=Inner(rate=1.0))
    assert isinstance(cfg.inner.rate, float)
    cases = [
        ({"cuont": 1}, "stage: unknown key(s) cuont"),
        ({"count": "many"}, "stage.count: expected an integer, got 'many'"),
        ({"count": 2.5}, "stage.count: expected an integer"),
        ({"count": True}, "stage.count: expected an integer"),
        ({"count": 0}, "stage.count: expected a value >= 1, got 0"),
        ({"flag": "yes"}, "stage.flag: expected true or false"),
        ({"sizes": [1, "a"]}, "stage.sizes: expected a list of"),
        ({"inner": {"rate": 2}}, "stage.inner.rate: expected a value in [0, 1], got 2"),
        ({"inner": {"speed": 2}}, "stage.inner: unknown key(s) speed"),
        ([1, 2], "stage: expected a mapping"),
    ]
    for data, message in cases:
        with pytest.raises(SoundvjError) as err:
            from_dict(Example, data, "stage")
        assert message in str(err.value)
        assert "\n" not in str(err.value)


def test_overrides_are_yaml_values_and_numeric_strings_count_as_floats():
    data = apply_overrides({"loop": {"steps": 3}}, ["loop.steps=7", "stage.lr=1e-4", "data.path=/x y", "stage.on=true"])
    assert data == {"loop": {"steps": 7}, "stage": {"lr": "1e-4", "on": True}, "data": {"path": "/x y"}}
    config = load_run_config("toy", training_toy.ToyConfig, None, ["stage.lr=1e-4", "data.path=2024"])
    assert config.stage.lr == 1e-4
    assert config.data.path == "2024"  # a folder named like a number is still a path
    for bad in ["nokey", "=3", "loop..steps=1"]:
        with pytest.raises(SoundvjError, match="expected SECTION.KEY=VALUE"):
            apply_overrides({}, [bad])
    with pytest.raises(SoundvjError, match="config: unknown section"):
        load_run_config("toy", training_toy.ToyConfig, None, ["optimizer.lr=1"])
    with pytest.raises(SoundvjError, match="loop: unknown key"):
        load_run_config("toy", training_toy.ToyConfig, None, ["loop.stepz=1"])


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("loop:\n  steps: 50\n  batch_size: 2\nstage:\n  width: 3\n")
    config = load_run_config("toy", training_toy.ToyConfig, path, ["loop.steps=9"])
    assert (config.loop.steps, config.loop.batch_size, config.stage.width) == (9, 2, 3)
    path.write_text("loop: [1, 2\n")
    with pytest.raises(SoundvjError, match=r"c.yaml.*line"):
        read_yaml(path)
    path.write_text("- 1\n")
    with pytest.raises(SoundvjError, match="expected a mapping of sections"):
        read_yaml(path)
    with pytest.raises(SoundvjError, match="not found"):
        read_yaml(tmp_path / "missing.yaml")


def test_identity_leaves_out_resumable_keys():
    a = toy_config("loop.steps=5")
    b = toy_config("loop.steps=50", "loop.log_every=7", "stage.step_sleep=0.5")
    c = toy_config("stage.lr=0.5")
    assert identity(a) == identity(b)
    assert identity(a) != identity(c)


# ---------------------------------------------------------------------------------------------
# Checkpoints


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint.pt"
    write_bytes_atomic(target, b"old")

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        write_bytes_atomic(target, b"new" * 1000)
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temp file left


def test_load_checkpoint_rejects_garbage_truncation_and_other_files(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SoundvjError, match="not a readable soundvj training checkpoint"):
        load_checkpoint(bad)
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"format": "soundvj-train-checkpoint", "version": 1, "w": torch.randn(1000)})
    assert load_checkpoint(good)["w"].shape == (1000,)
    data = good.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(SoundvjError, match="not a readable"):
        load_checkpoint(bad)
    save_checkpoint(bad, {"weights": torch.zeros(2)})
    with pytest.raises(SoundvjError, match="not a soundvj training checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(SoundvjError, match="not found"):
        load_checkpoint(tmp_path / "nothing.pt")


# ---------------------------------------------------------------------------------------------
# The loop


def test_resumed_run_is_bitwise_equal_to_an_uninterrupted_one(tmp_path):
    # 40 items, batch 4: 10 steps per epoch, so the resumed part crosses an epoch boundary mid-way.
    whole, split = tmp_path / "whole", tmp_path / "split"
    result = train(toy_config("loop.steps=13"), training_toy.build, whole)
    assert result.step == 13 and result.interrupted_by is None

    first = train(toy_config("loop.steps=6", "loop.checkpoint_every=4"), training_toy.build, split)
    assert load_checkpoint(split)["step"] == 6
    assert (split / "samples" / "sample-000006.txt").exists()  # samples at the end; they must not move the RNG
    assert first.last_losses and "loss" in first.last_losses
    second = train(toy_config("loop.steps=13"), training_toy.build, split, resume=split)
    assert second.step == 13

    assert_same_state(load_checkpoint(whole), load_checkpoint(split))
    assert scalars(whole) == scalars(split)  # same losses, same data order, each step logged once
    assert (split / "tensorboard").is_dir() and any((split / "tensorboard").iterdir())


def test_training_changes_the_parameters_and_lowers_the_loss(tmp_path):
    config = toy_config("loop.steps=60", "loop.log_every=10")
    train(config, training_toy.build, tmp_path / "run")
    losses = [float(v) for s, name, v in scalars(tmp_path / "run") if name == "loss/loss"]
    assert len(losses) == 6
    assert losses[-1] < 0.5 * losses[0]


def test_resume_refuses_another_config_or_stage(tmp_path):
    run = tmp_path / "run"
    train(toy_config("loop.steps=2"), training_toy.build, run)
    with pytest.raises(SoundvjError) as err:
        train(toy_config("loop.steps=4", "stage.lr=0.5"), training_toy.build, run, resume=run)
    message = str(err.value)
    assert "written with another config" in message and "stage.lr" in message and "\n" not in message
    other = replace(toy_config("loop.steps=4"), stage_name="other")
    with pytest.raises(SoundvjError, match="written by `train toy`"):
        train(other, training_toy.build, run, resume=run)
    # Resumable keys may change: more steps, other logging.
    assert train(toy_config("loop.steps=4", "loop.log_every=1"), training_toy.build, run, resume=run).step == 4


def test_fresh_run_does_not_overwrite_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    train(toy_config("loop.steps=1"), training_toy.build, run)
    before = (run / CHECKPOINT_NAME).read_bytes()
    with pytest.raises(SoundvjError, match="already holds checkpoint.pt; pass --resume"):
        train(toy_config("loop.steps=1"), training_toy.build, run)
    assert (run / CHECKPOINT_NAME).read_bytes() == before


def test_too_little_data_for_a_batch_is_an_error(tmp_path):
    with pytest.raises(SoundvjError, match=r"data: 3 training items are fewer than loop.batch_size=4"):
        train(toy_config("stage.items=3"), training_toy.build, tmp_path / "run")
    assert not (tmp_path / "run" / CHECKPOINT_NAME).exists()


def test_sigterm_checkpoints_the_finished_step_and_resume_completes_bitwise(tmp_path):
    def build_killed_at_step_5(config, ctx):
        stage: Stage = training_toy.build(config, ctx)
        inner = stage.train_step

        def train_step(batch, sctx):
            out = inner(batch, sctx)
            if sctx.step == 4:  # the 5th step: the signal arrives while it runs
                os.kill(os.getpid(), signal.SIGTERM)
            return out

        stage.train_step = train_step
        return stage

    run, whole = tmp_path / "run", tmp_path / "whole"
    previous = signal.getsignal(signal.SIGTERM)
    result = train(toy_config("loop.steps=12"), build_killed_at_step_5, run)
    assert signal.getsignal(signal.SIGTERM) == previous  # handlers restored
    assert result.interrupted_by == signal.SIGTERM and result.step == 5
    assert load_checkpoint(run)["step"] == 5
    train(toy_config("loop.steps=12"), training_toy.build, run, resume=run)
    train(toy_config("loop.steps=12"), training_toy.build, whole)
    assert_same_state(load_checkpoint(whole), load_checkpoint(run))
    # Stopped between two log rows (log_every 2, step 5): the half-summed losses were checkpointed.
    assert scalars(whole) == scalars(run)


def test_stale_partial_files_are_removed_and_periodic_checkpoints_written(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / f".{CHECKPOINT_NAME}.abc123.partial").write_bytes(b"half")
    steps_seen = []
    original = save_checkpoint

    def recording_save(path, payload):
        steps_seen.append(payload["step"])
        original(path, payload)

    import training.loop as loop_module

    loop_module.save_checkpoint = recording_save
    try:
        train(toy_config("loop.steps=7", "loop.checkpoint_every=3"), training_toy.build, run)
    finally:
        loop_module.save_checkpoint = original
    assert steps_seen == [3, 6, 7]
    assert not list(run.glob("*.partial"))


def autocast_recording_build(seen: list):
    def build(config, ctx):
        stage: Stage = training_toy.build(config, ctx)
        inner = stage.train_step

        def train_step(batch, sctx):
            with sctx.autocast():
                seen.append((torch.is_autocast_enabled(sctx.device.type), torch.get_autocast_dtype(sctx.device.type),
                             batch["x"].device.type))
            return inner(batch, sctx)

        stage.train_step = train_step
        return stage

    return build


def test_bf16_autocast_is_a_no_op_on_cpu(tmp_path):
    seen: list = []
    train(toy_config("loop.steps=2", "loop.bf16=true"), autocast_recording_build(seen), tmp_path / "run")
    assert [s[0] for s in seen] == [False, False] and seen[0][2] == "cpu"


@pytest.mark.cuda
def test_bf16_autocast_on_cuda(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    seen: list = []
    config = load_run_config("toy", training_toy.ToyConfig, None,
                             ["loop.batch_size=4", "loop.progress=false", "loop.device=cuda", "loop.steps=2", "loop.bf16=true"])
    train(config, autocast_recording_build(seen), tmp_path / "run")
    assert seen == [(True, torch.bfloat16, "cuda")] * 2
    assert load_checkpoint(tmp_path / "run")["step"] == 2


def test_tensorboard_and_csv_after_a_resume_from_an_older_checkpoint(tmp_path):
    """Rows the interrupted run logged after its last checkpoint are dropped (CSV) or purged (TensorBoard)."""
    pytest.importorskip("tensorboard", reason="the train extra (tensorboard) is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    whole, run = tmp_path / "whole", tmp_path / "run"
    train(toy_config("loop.steps=12"), training_toy.build, whole)
    train(toy_config("loop.steps=4"), training_toy.build, run)
    at_step_4 = (run / CHECKPOINT_NAME).read_bytes()
    train(toy_config("loop.steps=8"), training_toy.build, run, resume=run)  # logs steps 5..8 ...
    (run / CHECKPOINT_NAME).write_bytes(at_step_4)  # ... but dies before checkpointing them
    train(toy_config("loop.steps=12"), training_toy.build, run, resume=run)
    assert scalars(run) == scalars(whole)

    def series(folder: Path) -> list[tuple[int, float]]:
        events = EventAccumulator(str(folder / "tensorboard"))
        events.Reload()
        return [(e.step, e.value) for e in events.Scalars("loss/loss")]

    assert series(run) == series(whole)
    assert [s for s, _ in series(whole)] == [2, 4, 6, 8, 10, 12]
