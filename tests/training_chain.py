"""A tiny trained chain for the stage, export and eval tests: procedural clips, a 32-px generator, a
tiny CLIP, and a few steps of each stage, built once per pytest run (idempotent per folder)."""

from __future__ import annotations

from pathlib import Path

import torch

STAGE_ORDER = ("clip", "audio-encoder", "inverter", "stepper")
CHAIN_STEPS = 4

TINY_CLIP_KEYS = {
    "embed_dim": 16,
    "image_size": 16,
    "patch_size": 8,
    "vision_width": 32,
    "vision_layers": 1,
    "vision_head_width": 16,
    "text_width": 32,
    "text_layers": 1,
    "text_heads": 2,
    "context_length": 8,
}


def make_data(root: Path) -> Path:
    from training.data.synth import SynthSettings, write_dataset

    data = root / "data"
    if not (data / ".complete").exists():
        write_dataset(data, SynthSettings(clips_per_class=3, seconds=1.5, size=32, fps=8.0))
        (data / ".complete").write_text("")
    return data


def make_generator(root: Path) -> Path:
    """A 32-px StyleGAN3-T with 6 style vectors of 32 dims, w_avg from its own mapping, as a model file."""
    from core.model_file import save_model
    from core.stylegan3.networks import Generator

    path = root / "tiny-generator.safetensors"
    if not path.exists():
        state = torch.random.get_rng_state()
        torch.manual_seed(0)
        G = Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3,
                      channel_base=512, channel_max=16, num_layers=4).eval()
        with torch.no_grad():
            G.mapping.w_avg.copy_(G.mapping(torch.randn(256, 32), None)[:, 0].mean(0))
        torch.random.set_rng_state(state)
        save_model(path, G)
    return path


def stage_overrides(stage: str, root: Path) -> list[str]:
    """`--set` overrides of a tiny run of `stage` in the chain under `root`."""
    common = [
        f"data.path={root / 'data'}", "data.fps=8", "data.window_seconds=0.5", "data.min_seconds=1.0",
        "data.holdout_fraction=0.34", "data.clip_frames=1", "data.item_stride=2",
        "loop.batch_size=4", f"loop.steps={CHAIN_STEPS}", "loop.checkpoint_every=2", "loop.log_every=1",
        "loop.progress=false", "loop.device=cpu", f"stage.generator={root / 'tiny-generator.safetensors'}",
    ]
    clip_run = f"stage.clip.checkpoint={root / 'clip'}"
    if stage == "clip":
        return common + [f"stage.clip.{k}={v}" for k, v in TINY_CLIP_KEYS.items()] + ["stage.warmup_steps=1"]
    if stage == "audio-encoder":
        return common + [clip_run, "stage.clip.embed_dim=16", "stage.width=4", "stage.warmup_steps=1"]
    if stage == "inverter":
        return common + [clip_run, "stage.clip.embed_dim=16", "stage.width=4", "stage.warmup_steps=1",
                         f"stage.audio_encoder={root / 'audio-encoder'}", "stage.samples_per_class=2"]
    if stage == "stepper":
        return common + [clip_run, "stage.clip.embed_dim=16", "data.clip_frames=3", "loop.batch_size=2",
                         f"stage.audio_encoder={root / 'audio-encoder'}", f"stage.inverter={root / 'inverter'}",
                         "stage.hidden=16", "stage.num_layers=2", "stage.noise_dim=8",
                         "stage.image_discriminator_width=4", "stage.video_discriminator_width=4"]
    raise ValueError(stage)


def run_stage(stage: str, root: Path, run_dir: Path, extra: list[str] = (), resume: bool = False):
    """Train `stage` in `run_dir` through the same calls `soundvj train` makes."""
    from training.config import load_run_config
    from training.loop import train
    from training.stages import stage_module

    module = stage_module(stage)
    config = load_run_config(stage, module.Config, None, stage_overrides(stage, root) + list(extra))
    return train(config, module.build, run_dir, resume=run_dir if resume else None)


def build_chain(root: Path) -> Path:
    """Data, generator and a CHAIN_STEPS-step run of every stage under `root` (skips what exists)."""
    root.mkdir(parents=True, exist_ok=True)
    make_data(root)
    make_generator(root)
    for stage in STAGE_ORDER:
        if not (root / stage / "checkpoint.pt").exists():
            run_stage(stage, root, root / stage)
    return root


def assert_same_state(a, b, where: str = "") -> None:
    """Nested dicts/lists of tensors and values are equal, tensors bit for bit (dtype too)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def kill_after_first_checkpoint(argv: list[str], run: Path, cwd: Path, env: dict, settle: float = 0.0,
                                wait: float = 240.0) -> int:
    """Start a training run as a child process, SIGKILL it once `run/checkpoint.pt` exists (after `settle`
    seconds more), and return the step of the checkpoint it left; fails the test if it ended first."""
    import signal
    import subprocess
    import time

    import pytest

    from training.loop import CHECKPOINT_NAME, load_checkpoint

    child = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + wait
    while not (run / CHECKPOINT_NAME).exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.01)
    time.sleep(settle)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    if child.returncode != -signal.SIGKILL:
        pytest.fail(f"the run ended before the kill (exit {child.returncode}): {child.stderr.read().decode()[-2000:]}")
    return int(load_checkpoint(run)["step"])
