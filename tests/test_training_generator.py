"""`soundvj train generator`: the image folder, the discriminator, DiffAugment, the stage's training,
bitwise resume (G, D, G_ema, R1 counting), the exported model file and `render --model` with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.cli import main
from core.errors import SoundvjError
from core.model_file import load_generator, read_model_file
from core.stylegan3.ops import backend
from training.config import load_run_config
from training.data.images import ImageFolderDataset
from training.augment.diff_augment import diff_augment, parse_policy
from training.loop import CHECKPOINT_NAME, load_checkpoint, train
from training.stages.pretrained import frozen_generator
from training.stages import generator as stage
from training.models.stylegan_discriminator import Discriminator
from tests.training_chain import kill_after_first_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "stage.resolution=16", "stage.channel_base=256", "stage.channel_max=16", "stage.discriminator_channel_base=128",
    "stage.discriminator_channel_max=16", "stage.z_dim=32", "stage.w_dim=32", "loop.batch_size=4",
    "loop.progress=false", "loop.device=cpu", "loop.log_every=1", "stage.threads=1",
]


@pytest.fixture(autouse=True)
def _restore_process_settings():
    """The stage forces the pure-PyTorch ops and (stage.threads) torch's thread count; other tests in
    this process must not inherit them."""
    threads = torch.get_num_threads()
    yield
    backend.set_backend("auto")
    torch.set_num_threads(threads)


def write_toy_folder(root: Path, per_class: int = 6, size: int = 20, classes: bool = True) -> Path:
    """Solid colours vs vertical black/white stripes (non-square, so cropping matters)."""
    rng = np.random.default_rng(0)
    for name in (["solid", "stripes"] if classes else [""]):
        folder = root / name if name else root
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = np.zeros((size, size + 6, 3), np.uint8)
            if name == "stripes":
                a[:, (np.arange(size + 6) // 3) % 2 == 0] = 255
            else:
                a[:] = rng.integers(30, 225, 3)
            Image.fromarray(a).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def run_config(data: Path, *overrides: str):
    return load_run_config("generator", stage.Config, None, [f"data.path={data}", *TINY, *overrides])


# ---------------------------------------------------------------------------------------------
# Image folder


def test_class_folders_are_conditional_and_a_flat_folder_is_not(tmp_path, capsys):
    cond = write_toy_folder(tmp_path / "cond")
    (cond / "stripes" / "broken.png").write_bytes(b"not an image")
    (cond / "notes").mkdir()  # a folder without images is not a class
    (cond / "notes" / "readme.txt").write_text("hello")
    ds = ImageFolderDataset(cond, 16)
    assert ds.conditional and ds.classes == ["solid", "stripes"] and ds.c_dim == 2
    assert len(ds) == 12 and ds.skipped == [cond / "stripes" / "broken.png"]
    err = capsys.readouterr().err
    assert "skipped 1 unreadable" in err and "broken.png" in err
    item = ds[7]
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    assert -1.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert int(item["label"]) == 1  # sorted folder names: solid 0, stripes 1
    assert ds.one_hot(torch.tensor([0, 1])).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    # A stripes image keeps its stripes after the centre crop and resize.
    stripes = ds[11]["image"]
    assert (stripes[:, :, 1:] - stripes[:, :, :-1]).abs().mean() > 0.3

    flat = write_toy_folder(tmp_path / "flat", classes=False)
    ds = ImageFolderDataset(flat, 16)
    assert not ds.conditional and ds.c_dim == 0 and ds.classes == [] and len(ds) == 6
    assert ds.one_hot(torch.tensor([0, 0])).shape == (2, 0)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("empty", "no .png/.jpg/.jpeg/.webp files"),
        ("broken", "1 image file(s), none readable"),
        ("mixed", "expected one layout"),
        ("missing", "not a folder"),
    ],
)
def test_unusable_image_folders_are_one_line_errors(tmp_path, layout, message):
    root = tmp_path / "d"
    if layout != "missing":
        root.mkdir()
    if layout == "broken":
        (root / "a.png").write_bytes(b"\x89PNG garbage")
    if layout == "mixed":
        write_toy_folder(root)
        write_toy_folder(root, classes=False)
    with pytest.raises(SoundvjError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        ImageFolderDataset(root, 16, verbose=False)
    assert "\n" not in str(info.value)


def test_bad_image_folder_exits_2_with_one_line(tmp_path, capsys):
    root = tmp_path / "d"
    root.mkdir()
    (root / "a.webp").write_bytes(b"RIFF....WEBPjunk")
    code = main(["train", "generator", "--data", str(root), "--out", str(tmp_path / "run"), "--set", "loop.progress=false"])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("soundvj: error")]
    assert len(lines) == 1 and "none readable" in lines[0] and str(root) in lines[0]
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------------
# Discriminator and augmentation


def test_discriminator_has_nvidias_block_names_and_projects_onto_the_class():
    torch.manual_seed(0)
    D = Discriminator(c_dim=3, img_resolution=32, channel_base=256, channel_max=16, mbstd_group=2)
    names = set(D.state_dict())
    for key in ("b32.fromrgb.weight", "b32.conv0.weight", "b32.conv1.weight", "b32.skip.weight", "b16.conv0.bias",
                "b8.skip.weight", "b4.conv.weight", "b4.fc.weight", "b4.out.weight", "mapping.embed.weight",
                "mapping.fc7.weight"):
        assert key in names, key
    assert "b16.fromrgb.weight" not in names and "b32.skip.bias" not in names
    x = torch.randn(4, 3, 32, 32)
    c = torch.eye(3)[[0, 1, 2, 0]]
    out = D(x, c)
    assert out.shape == (4, 1) and torch.isfinite(out).all()
    assert not torch.allclose(D(x, torch.eye(3)[[1, 1, 1, 1]]), out)  # the class changes the score


def test_minibatch_stddev_keeps_real_and_fake_halves_apart():
    """[real; fake] in one call: the real half's scores do not depend on the fake half."""
    torch.manual_seed(0)
    D = Discriminator(c_dim=0, img_resolution=16, channel_base=128, channel_max=16, mbstd_group=4)
    real = torch.randn(4, 3, 16, 16)
    a = D(torch.cat([real, torch.randn(4, 3, 16, 16)]))[:4]
    b = D(torch.cat([real, 5 * torch.randn(4, 3, 16, 16)]))[:4]
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="multiple of the group size"):
        D(torch.randn(6, 3, 16, 16))


def test_r1_penalty_differentiates_through_the_discriminator():
    torch.manual_seed(0)
    D = Discriminator(c_dim=2, img_resolution=16, channel_base=128, channel_max=16, mbstd_group=2)
    real = torch.randn(4, 3, 16, 16, requires_grad=True)
    logits = D(diff_augment(real, parse_policy("color,translation,cutout")), torch.eye(2)[[0, 1, 0, 1]])
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    grad.square().sum().backward()
    grads = {name: p.grad for name, p in D.named_parameters()}
    # Only the last bias cannot move the input gradient (the stage adds logits * 0 for DDP's sake).
    assert [name for name, g in grads.items() if g is None] == ["b4.out.bias"]
    assert all(torch.isfinite(g).all() for g in grads.values() if g is not None)
    # Every weight moves; biases after the (nonlinear) minibatch-stddev only shift a piecewise-linear
    # function, so the input gradient, and the penalty, do not depend on them.
    assert all(g.abs().sum() > 0 for name, g in grads.items() if name.endswith("weight"))


def test_diff_augment_policies():
    assert parse_policy("color, translation,cutout") == ("color", "translation", "cutout")
    assert parse_policy("none") == () and parse_policy("") == ()
    for bad in ("colour", "color,color"):
        with pytest.raises(SoundvjError, match="stage.augment"):
            parse_policy(bad)
    x = torch.rand(8, 3, 16, 16, requires_grad=True)
    torch.manual_seed(3)
    shifted = diff_augment(x, ("translation",))
    # Each image is its input shifted by whole pixels (what is inside stays bit-exact) with zeros filling in.
    for n in range(8):
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                expect = torch.zeros(3, 16, 16)
                ys, xs = slice(max(dy, 0), 16 + min(dy, 0)), slice(max(dx, 0), 16 + min(dx, 0))
                src_ys, src_xs = slice(max(-dy, 0), 16 + min(-dy, 0)), slice(max(-dx, 0), 16 + min(-dx, 0))
                expect[:, ys, xs] = x[n, :, src_ys, src_xs].detach()
                found |= torch.equal(shifted[n].detach(), expect)
        assert found, n
    cut = diff_augment(torch.ones(8, 3, 16, 16), ("cutout",))
    zeros = (cut == 0).float().mean(dim=[1, 2, 3])
    assert ((zeros > 0) & (zeros <= 0.25)).all()  # an 8x8 square, possibly clipped at the border
    torch.manual_seed(3)
    assert torch.equal(diff_augment(x, ("translation",)), shifted)  # the global RNG decides
    diff_augment(x, ("color", "translation", "cutout")).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# The stage


def test_training_steps_change_g_and_log_finite_losses(tmp_path):
    data = write_toy_folder(tmp_path / "data")
    config = run_config(data, "loop.steps=4", "stage.r1_interval=2")
    torch.manual_seed(0)
    start = stage.Generator(**stage.generator_kwargs(config.stage, 2, 4)).state_dict()
    result = train(config, stage.build, tmp_path / "run")
    assert result.step == 4
    for key in ("G", "D", "r1", "D_real", "D_fake", "kimg", "s_per_kimg"):
        assert np.isfinite(result.last_losses[key]), key
    assert result.last_losses["r1"] > 0
    assert result.last_losses["kimg"] == pytest.approx(0.016)
    G = load_checkpoint(tmp_path / "run")["modules"]["G"]
    changed = [k for k, v in start.items() if v.dtype.is_floating_point and not torch.equal(v, G[k])]
    # Gradients reach the mapping and every synthesis layer; the EMAs (w_avg, magnitudes) moved too.
    for key in ("mapping.fc0.weight", "mapping.embed.weight", "synthesis.input.weight", "mapping.w_avg"):
        assert key in changed, key
    assert any(k.startswith("synthesis.L0_") and k.endswith(".weight") for k in changed)
    assert "synthesis.input.freqs" not in changed  # a fixed buffer: the same init, so the comparison means something
    assert any(k.endswith("magnitude_ema") for k in changed)
    names = {row.split(",")[2] for row in (tmp_path / "run" / "scalars.csv").read_text().splitlines()[1:]}
    assert {"loss/G", "loss/D", "loss/r1", "loss/D_real", "loss/D_fake", "loss/kimg", "lr/G", "lr/D"} <= names
    assert (tmp_path / "run" / "samples" / "generator-0000004.png").exists()


def test_resume_is_bitwise_including_g_ema_and_lazy_r1(tmp_path):
    """Two steps, checkpoint, two more == four straight; R1 runs at steps 0 and 3 (interval 3), so the
    resumed half must count the lazy steps from the global step."""
    data = write_toy_folder(tmp_path / "data")
    common = ["stage.r1_interval=3", "loop.checkpoint_every=2", "stage.ema_kimg=0.01"]
    straight = train(run_config(data, "loop.steps=4", *common), stage.build, tmp_path / "straight")
    half = train(run_config(data, "loop.steps=2", *common), stage.build, tmp_path / "split")
    assert half.step == 2
    resumed = train(run_config(data, "loop.steps=4", *common), stage.build, tmp_path / "split",
                    resume=tmp_path / "split")
    assert straight.step == resumed.step == 4
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "split")
    assert set(a["modules"]) == {"G", "D", "G_ema", "stats"}
    for module in a["modules"]:
        for key, value in a["modules"][module].items():
            assert torch.equal(value, b["modules"][module][key]), (module, key)
    assert not torch.equal(a["modules"]["G_ema"]["mapping.fc0.weight"], a["modules"]["G"]["mapping.fc0.weight"])
    exported = [read_model_file(tmp_path / run / stage.GENERATOR_FILE) for run in ("straight", "split")]
    assert exported[0].metadata == exported[1].metadata and exported[0].source == exported[1].source
    for key, value in exported[0].generator_state.items():
        assert torch.equal(value, exported[1].generator_state[key]), key
    timing = ("s_per_kimg",)  # wall-clock, the one logged value that may differ
    assert {k: v for k, v in straight.last_losses.items() if k not in timing} == {
        k: v for k, v in resumed.last_losses.items() if k not in timing}


def test_exported_generator_loads_renders_and_names_its_classes(tmp_path, capsys):
    data = write_toy_folder(tmp_path / "data")
    run = tmp_path / "run"
    code = main(["train", "generator", "--data", str(data), "--out", str(run),
                 *[a for kv in TINY for a in ("--set", kv)], "--set", "loop.steps=2"])
    assert code == 0, capsys.readouterr().err
    model = run / stage.GENERATOR_FILE
    contents = read_model_file(model)
    assert json.loads(contents.metadata["training.classes"]) == ["solid", "stripes"]
    assert contents.metadata["training.images"] == "12" and "train generator" in contents.source
    state = contents.generator_state
    assert "mapping.fc0.weight" in state and "synthesis.input.freqs" in state and "mapping.w_avg" in state
    assert any(k.startswith("synthesis.L0_") for k in state)
    G = load_generator(model)
    assert (G.c_dim, G.img_resolution, G.init_kwargs["conv_kernel"]) == (2, 16, 3)
    ema = load_checkpoint(run)["modules"]["G_ema"]
    for key, value in G.state_dict().items():
        assert torch.equal(value, ema[key]), key  # the file is G_ema, not recalibrated or re-seeded
    assert frozen_generator(str(run), torch.device("cpu")).c_dim == 2
    assert frozen_generator(str(run / CHECKPOINT_NAME), torch.device("cpu")).img_resolution == 16
    with pytest.raises(SoundvjError, match="no generator.safetensors"):
        frozen_generator(str(tmp_path / "data"), torch.device("cpu"))

    out = tmp_path / "out.mp4"
    code = main(["render", "--demo", "--seconds", "0.25", "--model", str(model), "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    assert out.stat().st_size > 0


def test_variant_r_and_an_unconditional_folder(tmp_path):
    data = write_toy_folder(tmp_path / "flat", classes=False)
    train(run_config(data, "loop.steps=1", "stage.variant=R", "stage.sample_rows=2", "stage.blur_sigma=2"),
          stage.build, tmp_path / "run")
    G = load_generator(tmp_path / "run" / stage.GENERATOR_FILE)
    assert G.c_dim == 0 and G.init_kwargs["conv_kernel"] == 1 and G.init_kwargs["use_radial_filters"] is True
    assert json.loads(read_model_file(tmp_path / "run" / stage.GENERATOR_FILE).metadata["training.classes"]) == []
    grid = Image.open(tmp_path / "run" / "samples" / "generator-0000001.png")
    assert grid.size == (2 + 8 * 18, 2 + 2 * 18)  # 8 columns x 2 rows of 16 px with 2 px gaps


def test_blur_of_d_inputs_fades_and_keeps_the_size():
    config = run_config(Path("unused"), "stage.blur_sigma=10", "stage.blur_fade_kimg=2").stage
    assert [stage.blur_sigma_at(config, n) for n in (0, 1000, 2000, 5000)] == [10.0, 5.0, 0.0, 0.0]
    x = torch.zeros(1, 3, 16, 16)
    x[0, :, 8, 8] = 1
    y = stage.blur(x, 1.0)
    assert y.shape == x.shape and float(y.sum()) == pytest.approx(3.0, abs=1e-5)  # mass kept away from the border
    assert float(y[0, 0, 8, 8]) < 0.5 and float(y[0, 0, 8, 9]) > 0
    assert torch.equal(stage.blur(x, 0.0), x)


def test_non_finite_gradients_are_replaced_and_finite_ones_kept():
    layer = torch.nn.Linear(3, 1)
    layer.weight.grad = torch.tensor([[float("nan"), float("inf"), 0.25]])
    layer.bias.grad = torch.tensor([-float("inf")])
    stage.sanitize_grads(layer)
    assert layer.weight.grad.tolist() == [[0.0, 1e5, 0.25]] and layer.bias.grad.tolist() == [-1e5]


def test_batch_not_a_multiple_of_the_stddev_group_is_refused(tmp_path):
    data = write_toy_folder(tmp_path / "data")
    with pytest.raises(SoundvjError, match="loop.batch_size: 6 is not a multiple of stage.mbstd_group=4"):
        train(run_config(data, "loop.steps=1", "loop.batch_size=6"), stage.build, tmp_path / "run")


# ---------------------------------------------------------------------------------------------
# Processes: kill -9 and torchrun


def python_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def cli_args(data: Path, run: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "core.cli", "train", "generator", "--data", str(data), "--out", str(run),
            *[a for kv in (*TINY, *overrides) for a in ("--set", kv)]]


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    data = write_toy_folder(tmp_path / "data")
    run, whole = tmp_path / "run", tmp_path / "whole"
    settings = ["loop.steps=12", "loop.checkpoint_every=1", "stage.r1_interval=5"]
    killed_at = kill_after_first_checkpoint(cli_args(data, run, *settings), run, REPO, python_env(), settle=0.3,
                                            wait=120)
    assert 1 <= killed_at < 12
    resumed = subprocess.run([*cli_args(data, run), "--resume"], cwd=REPO, env=python_env(), capture_output=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    straight = subprocess.run(cli_args(data, whole, *settings), cwd=REPO, env=python_env(), capture_output=True,
                              timeout=300)
    assert straight.returncode == 0, straight.stderr.decode()[-2000:]
    a, b = load_checkpoint(run), load_checkpoint(whole)
    assert a["step"] == b["step"] == 12
    for module in ("G", "D", "G_ema"):
        for key, value in a["modules"][module].items():
            assert torch.equal(value, b["modules"][module][key]), (module, key)


@pytest.mark.timeout(300)
def test_torchrun_two_gloo_ranks_train_with_r1(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    data = write_toy_folder(tmp_path / "data")
    run = tmp_path / "ddp"
    args = cli_args(data, run, "loop.steps=3", "stage.r1_interval=2")
    result = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", *args[1:]], cwd=REPO,
                            env=python_env(), capture_output=True, timeout=280)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    payload = load_checkpoint(run)
    assert payload["world_size"] == 2 and payload["step"] == 3
    G = load_generator(run / stage.GENERATOR_FILE)
    assert G.c_dim == 2
    # magnitude_ema_beta follows the total batch (2 ranks x 4 images), as NVIDIA sets it.
    assert G.init_kwargs["magnitude_ema_beta"] == pytest.approx(0.5 ** (8 / 20000))
