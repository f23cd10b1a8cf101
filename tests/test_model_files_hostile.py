"""Hostile and unlucky model files: each gets one line and exit 2, and no valid file is refused."""

from __future__ import annotations

import struct

import pytest
import torch

from core.cli import main
from tests.parity_fixtures import fixture_generator
from tests.hostile_input import assert_refused, run_soundvj
from tests.nvidia_pickle_fakes import Persistent, dump_snapshot

GENERATOR = "training.networks_stylegan3.Generator"


def assert_one_line_error(capsys, *expected: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("soundvj: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, err
    return err


@pytest.fixture()
def t64_pickle_factory(tmp_path, sg3_fixtures):
    fx = sg3_fixtures["t64"]
    G = fixture_generator(fx)

    def make(name: str):
        path = tmp_path / name
        dump_snapshot(path, {"G_ema": Persistent(G, GENERATOR, "pass", init_kwargs=dict(fx["config"]), plain_types=())})
        return path

    return make


def _header_length(path) -> int:
    return struct.unpack("<Q", path.read_bytes()[:8])[0]


def test_converted_file_whose_header_length_starts_with_0x80_is_read(t64_pickle_factory, tmp_path, capsys):
    """The source pickle's name goes into the metadata, and 1 in 32 names make the
    header length's low byte 0x80, the byte a pickle starts with. Every converted file must load."""
    out = tmp_path / "c.safetensors"
    assert main(["convert", str(t64_pickle_factory("n.pkl")), "-o", str(out)]) == 0
    base = _header_length(out)
    extra = (128 - base) % 256  # one name character is one header byte; padding is to 8 bytes
    for tweak in range(0, 16):
        name = "network-snapshot-" + "a" * (extra + tweak - len("network-snapshot-") + 1) + ".pkl"
        assert main(["convert", str(t64_pickle_factory(name)), "-o", str(out)]) == 0
        if out.read_bytes()[:1] == b"\x80":
            break
    else:
        pytest.fail("could not make a header length ending in 0x80")
    capsys.readouterr()
    assert main(["info", str(out), "--device", "cpu"]) == 0, capsys.readouterr().err
    assert "StyleGAN3-T, 64x64 px" in capsys.readouterr().out


# --- hostile pickles: run in a child process (a crash must not take the test session with it) -----

DEEP = 200_000


def _deep_tuple_ops(depth: int) -> bytes:
    return b")" + b"\x85" * depth  # EMPTY_TUPLE, then TUPLE1 `depth` times: ((((),),),...)


def test_deep_tuple_as_dict_key_is_refused(tmp_path):
    """Hashing a 200,000-deep tuple recurses in C: the loader must refuse it, not segfault."""
    path = tmp_path / "deep_key.pkl"
    path.write_bytes(b"\x80\x02}" + _deep_tuple_ops(DEEP) + b"Ns.")  # {deep: None}
    assert len(path.read_bytes()) < 210_000
    assert_refused(run_soundvj(["info", str(path)]), str(path), "nested too deeply")


def test_deep_tuple_passed_to_set_is_refused(tmp_path):
    path = tmp_path / "deep_set.pkl"
    # builtins.set([deep]) through the allowlisted global
    path.write_bytes(b"\x80\x02cbuiltins\nset\n]" + _deep_tuple_ops(DEEP) + b"a\x85R.")
    assert_refused(run_soundvj(["info", str(path)]), str(path), "nested too deeply")


def _persistent_snapshot(path, state_extra: dict, plain_types=()):
    module = torch.nn.Module()
    snap = {"G_ema": Persistent(module, GENERATOR, "pass", plain_types=plain_types, **state_extra)}
    return dump_snapshot(path, snap)


def test_shared_list_bomb_in_init_kwargs_is_refused(tmp_path):
    """One list reused 40 levels deep (x = [x, x]) is a small pickle but 2^40 nodes to walk."""
    bomb: list = []
    for _ in range(40):
        bomb = [bomb, bomb]
    path = tmp_path / "bomb_kwargs.pkl"
    data = _persistent_snapshot(path, {"init_kwargs": {"z_dim": bomb}})
    assert len(data) < 4096
    assert_refused(run_soundvj(["info", str(path)]), str(path), "too many")


def test_shared_submodule_tree_is_refused(tmp_path):
    """`_modules` children that are all the same object, 30 levels deep (2^30 visits)."""
    module = torch.nn.Module()
    for _ in range(30):
        parent = torch.nn.Module()
        parent.add_module("a", module)
        parent.add_module("b", module)
        module = parent
    path = tmp_path / "bomb_modules.pkl"
    dump_snapshot(path, {"G_ema": Persistent(module, GENERATOR, "pass", plain_types=(torch.nn.Module,))})
    assert path.stat().st_size < 16384
    assert_refused(run_soundvj(["info", str(path)]), str(path), "too many")


# --- configs are bounded and checked against the weights before anything is built ------

def _model_file(path, config: dict, tensors: dict | None = None, sound_config: dict | None = None):
    import json

    from safetensors.torch import save_file

    metadata = {"soundvj.format": "soundvj-model", "soundvj.version": "1", "generator.config": json.dumps(config)}
    if sound_config is not None:
        metadata["sound.config"] = json.dumps(sound_config)
    save_file(tensors or {"generator.mapping.w_avg": torch.zeros(4)}, str(path), metadata=metadata)
    return path


BASE = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=64, img_channels=3)


@pytest.mark.parametrize(
    "change,field",
    [
        (dict(w_dim=100_000, z_dim=100_000), "z_dim"),
        (dict(channel_base=10**9, channel_max=10**9), "channel_base"),
        (dict(channel_base=1e9, channel_max=1e9), "channel_base"),
        (dict(w_dim=10**9), "w_dim"),
        (dict(num_layers=10**6), "num_layers"),
        (dict(img_resolution=-4), "img_resolution"),
        (dict(img_resolution=100), "img_resolution"),
        (dict(mapping_kwargs={"num_layers": 10**6}), "mapping_kwargs.num_layers"),
        (dict(conv_clamp=float("nan")), "conv_clamp"),
        (dict(use_radial_filters=1), "use_radial_filters"),
    ],
)
def test_unbounded_configs_are_refused_before_building(tmp_path, capfd, change, field):
    """A 468-byte file whose config says w_dim = z_dim = 100000 (40 GB) is refused before building."""
    path = _model_file(tmp_path / "forged.safetensors", BASE | change)
    assert path.stat().st_size < 1024
    if field in ("z_dim", "channel_base", "img_resolution"):  # a few in a child, under the memory cap
        assert_refused(run_soundvj(["info", str(path)]), str(path), field)
        return
    assert main(["info", str(path)]) == 2
    err = capfd.readouterr().err  # file descriptors too: numpy's warnings go around sys.stderr
    assert err.startswith("soundvj: error: ") and err.count("\n") == 1 and field in err, err


def test_valid_but_huge_config_is_checked_against_the_weights_first(tmp_path):
    """A legal 4096 px, channel_max 2048 config with no such weights: refused from the shapes alone."""
    config = BASE | dict(img_resolution=4096, channel_base=1 << 21, channel_max=2048, w_dim=4096, z_dim=4096)
    path = _model_file(tmp_path / "big.safetensors", config)
    run = run_soundvj(["info", str(path)], cap_bytes=2 << 30)
    assert_refused(run, str(path), "weights do not fit the generator config")
    assert run.peak_rss_bytes < 1.5 * (1 << 30)


def test_sound_config_that_asks_for_gigabytes_is_refused_before_building(sg3_fixtures, tmp_path):
    from core.model_file import save_model
    from safetensors.torch import load_file

    good = save_model(tmp_path / "g.safetensors", fixture_generator(sg3_fixtures["t64"]))
    tensors = load_file(str(good))
    tensors["sound.latent_stepper.out_fc.weight"] = torch.zeros(2, 2)
    sound = {"models": {"latent_stepper": {"num_ws": 16, "w_dim": 512, "hidden": 4096, "num_layers": 16},
                        "inversion_encoder": {"num_ws": 16, "w_dim": 512}}}
    import json

    from safetensors import safe_open

    with safe_open(str(good), framework="pt") as f:
        config = json.loads(f.metadata()["generator.config"])
    path = _model_file(tmp_path / "sound.safetensors", config, tensors, sound_config=sound)
    run = run_soundvj(["render", "--demo", "--seconds", "1", "-o", str(tmp_path / "o.mp4"), "--model", str(path)],
                      cap_bytes=2 << 30)
    assert_refused(run, str(path), "sound model weights do not fit")


def test_the_measured_peak_is_the_commands_own_not_the_test_processs():
    """Linux carries a peak resident size over exec; a command forked from a large test process would
    be charged that process's memory. With 1.6 GB held here, `soundvj presets` must still measure small."""
    ballast = bytearray(1600 << 20)
    ballast[:: 4096] = b"x" * len(ballast[:: 4096])  # touch every page, so it is resident
    run = run_soundvj(["presets"])
    del ballast
    assert run.returncode == 0, run.stderr[-2000:]
    assert 0 < run.peak_rss_bytes < 1500 << 20
