"""`soundvj convert` / `soundvj info` end to end, and the CLI's error contract (one line, exit 2)."""

import subprocess
import sys

import pytest
import torch

import core
from core.cli import main
from core.model_file import read_model_file
from tests.parity_fixtures import fixture_generator
from tests.nvidia_pickle_fakes import Persistent, dump_snapshot, marker_source

GENERATOR = "training.networks_stylegan3.Generator"


@pytest.fixture()
def nvidia_pickle(tmp_path, sg3_fixtures):
    """An NVIDIA-layout snapshot of the perturbed r64 fixture generator; module_src would leave a marker."""
    fx = sg3_fixtures["r64"]
    G = fixture_generator(fx, perturbed=True)
    marker = tmp_path / "EXECUTED"
    path = tmp_path / "network-snapshot-000000.pkl"
    snap = {"G_ema": Persistent(G, GENERATOR, marker_source(marker), init_kwargs=dict(fx["config"]), plain_types=())}
    dump_snapshot(path, snap)
    return path, marker, fx


def test_load_generator_from_nvidia_pickle_matches_fixture(nvidia_pickle):
    path, marker, fx = nvidia_pickle
    G = core.load_generator(path, device="cpu")
    with torch.no_grad():
        ws = G.mapping(fx["z"], fx["c"], truncation_psi=0.7)
        img = G.synthesis(ws, noise_mode="const", force_fp32=True)
    assert (img - fx["perturbed"]["img_psi07"]).abs().max().item() < 1e-4
    assert not marker.exists()


def test_convert_then_info(nvidia_pickle, tmp_path, capsys):
    path, marker, fx = nvidia_pickle
    out = tmp_path / "model.safetensors"
    assert main(["convert", str(path), "-o", str(out)]) == 0
    assert read_model_file(out).generator_config["use_radial_filters"] is True
    G = core.load_generator(out, device="cpu")
    with torch.no_grad():
        img = G.synthesis(G.mapping(fx["z"], fx["c"]), noise_mode="const", force_fp32=True)
    assert (img - fx["perturbed"]["img"]).abs().max().item() < 1e-4
    capsys.readouterr()
    assert main(["info", str(out), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "StyleGAN3-R, 64x64 px" in text and "num_ws 16" in text and "device:       cpu" in text
    n_params = sum(p.numel() for p in G.parameters())
    assert f"{n_params:,} parameters" in text
    assert main(["info", str(path)]) == 0  # the pickle itself
    text = capsys.readouterr().out
    assert "StyleGAN3-R" in text and "networks:     G_ema (Generator)" in text
    assert not marker.exists()


def test_pickle_without_generator_and_stylegan2_like(tmp_path, capsys):
    only_d = tmp_path / "d.pkl"
    dump_snapshot(only_d, {"D": Persistent(torch.nn.Conv2d(3, 3, 1), "training.networks_stylegan3.Discriminator",
                                           "pass", plain_types=())})
    assert main(["info", str(only_d)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(only_d) in err and "G_ema" in err and "\n" not in err

    sg2 = tmp_path / "sg2.pkl"
    dump_snapshot(sg2, {"G_ema": Persistent(torch.nn.Linear(2, 2), "training.networks_stylegan2.Generator", "pass",
                                            plain_types=())})
    assert main(["info", str(sg2)]) == 2
    assert "not a StyleGAN3 generator" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv_builder,expect",
    [
        (lambda d: ["info", str(d / "missing.pkl")], "no such file"),
        (lambda d: ["info", str(d / "text.pkl")], "text.pkl"),
        (lambda d: ["convert", str(d / "text.pkl"), "-o", str(d / "x.safetensors")], "text.pkl"),
        (lambda d: ["convert", str(d / "text.pkl"), "-o", str(d / "nope" / "x.safetensors")], "does not exist"),
        (lambda d: ["convert", str(d / "text.pkl"), "-o", str(d / "x.bin")], "must end in .safetensors"),
        (lambda d: ["info", "--device", "cuda:7"], "cuda:7"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path, capsys, argv_builder, expect):
    (tmp_path / "text.pkl").write_text("this is not a pickle\n")
    argv = argv_builder(tmp_path)
    if argv[-1] == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("soundvj: error: ") and expect in err
    assert "Traceback" not in err


def test_real_process_exit_code_and_debug_traceback(tmp_path):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"\x80\x04garbage")
    cmd = [sys.executable, "-m", "core.cli", "info", str(bad)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and str(bad) in r.stderr
    for argv in (["--debug", "info", str(bad)], ["info", str(bad), "--debug"]):
        r = subprocess.run([sys.executable, "-m", "core.cli", *argv], capture_output=True, text=True)
        assert r.returncode != 0 and "Traceback" in r.stderr and "SoundvjError" in r.stderr


def test_presets_lists_the_shipped_looks(capsys):
    assert main(["presets", "-v"]) == 0
    text = capsys.readouterr().out
    for name in ("calm", "flowing", "storm", "pulse"):
        assert f"{name}.yaml" in text
    assert "alpha=0.75" in text  # storm's values are shown
