"""The soundvj .safetensors model file, the embedded default, and generators of the paper's size."""

import json
import struct

import pytest
import torch

import core
from core.default_model import DEFAULT_GENERATOR_CONFIG, default_generator
from core.errors import SoundvjError
from core.model_file import read_model_file, save_model
from tests.parity_fixtures import fixture_generator


def test_round_trip_keeps_config_and_output(sg3_fixtures, tmp_path):
    fx = sg3_fixtures["r64"]
    out = save_model(tmp_path / "m.safetensors", fixture_generator(fx), source="fixture r64")
    G = core.load_generator(out, device="cpu")
    assert G.init_kwargs == fx["config"] | {"mapping_kwargs": fx["config"]["mapping_kwargs"]}
    with torch.no_grad():
        img = G.synthesis(G.mapping(fx["z"], fx["c"]), noise_mode="const", force_fp32=True)
    assert (img - fx["img"]).abs().max().item() < 1e-4
    assert read_model_file(out).source == "fixture r64"
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left behind


def test_sound_state_is_stored_beside_the_generator(sg3_fixtures, tmp_path):
    G = fixture_generator(sg3_fixtures["t64"])
    sound = {"latent_stepper.fc.weight": torch.randn(4, 3)}
    out = save_model(tmp_path / "m.safetensors", G, sound_state=sound, sound_config={"x": 1})
    contents = read_model_file(out)
    assert contents.sound_config == {"x": 1}
    assert torch.equal(contents.sound_state["latent_stepper.fc.weight"], sound["latent_stepper.fc.weight"])


def test_default_generator_is_fixed_and_does_not_touch_the_global_seed():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    G1, G2 = default_generator(), default_generator()
    after = torch.rand(1)
    assert torch.equal(before, after)
    assert G1 is not G2
    for (k, a), b in zip(G1.state_dict().items(), G2.state_dict().values()):
        assert torch.equal(a, b), k
    assert G1.img_resolution == DEFAULT_GENERATOR_CONFIG["img_resolution"]
    assert G1.mapping.w_avg.abs().sum() > 0  # computed, so psi pulls toward something


def test_default_generator_renders_colourful_frames():
    G = default_generator()
    with torch.no_grad():
        img = G(torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(0)), None, truncation_psi=0.7)
    assert img.shape == (4, 3, G.img_resolution, G.img_resolution)
    assert torch.isfinite(img).all()
    std = img.std(dim=(0, 2, 3))
    print("default generator per-channel std:", std.tolist())
    assert (std > 0.15).all()  # calibrated: not the grey of an untrained generator
    assert (img[0] - img[1]).abs().mean() > 0.05  # different latents, different pictures


def write_bad(tmp_path, name: str, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize(
    "name,data,expect",
    [
        ("empty.safetensors", b"", "empty"),
        ("random.safetensors", bytes(range(256)) * 4, "not a model file"),
        ("header.safetensors", struct.pack("<Q", 10**9) + b"{", "not a readable .safetensors"),
    ],
)
def test_corrupt_model_files_give_one_line_errors(tmp_path, name, data, expect):
    p = write_bad(tmp_path, name, data)
    with pytest.raises(SoundvjError) as e:
        core.load_generator(p, device="cpu")
    msg = str(e.value)
    assert str(p) in msg and expect in msg and "\n" not in msg


def test_truncated_model_file(sg3_fixtures, tmp_path):
    good = save_model(tmp_path / "good.safetensors", fixture_generator(sg3_fixtures["t64"]))
    bad = write_bad(tmp_path, "cut.safetensors", good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(SoundvjError, match="cut.safetensors: not a readable"):
        core.load_generator(bad, device="cpu")


def test_foreign_safetensors_is_refused(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(p))
    with pytest.raises(SoundvjError, match="not a soundvj model"):
        core.load_generator(p, device="cpu")


def test_state_that_does_not_fit_the_config(sg3_fixtures, tmp_path):
    from safetensors.torch import load_file, save_file

    good = save_model(tmp_path / "good.safetensors", fixture_generator(sg3_fixtures["t64"]))
    tensors = load_file(str(good))
    from safetensors import safe_open

    with safe_open(str(good), framework="pt") as f:
        meta = f.metadata()
    config = json.loads(meta["generator.config"])
    config["z_dim"] = 256  # the weights are for 512
    meta["generator.config"] = json.dumps(config)
    p = tmp_path / "mismatch.safetensors"
    save_file(tensors, str(p), metadata=meta)
    with pytest.raises(SoundvjError) as e:
        core.load_generator(p, device="cpu")
    assert "mismatch.safetensors: weight" in str(e.value) and "shape" in str(e.value)

    del tensors["generator.mapping.w_avg"]
    meta["generator.config"] = json.dumps(config | {"z_dim": 512})
    p2 = tmp_path / "missing.safetensors"
    save_file(tensors, str(p2), metadata=meta)
    with pytest.raises(SoundvjError, match=r"missing 1 \(e.g. mapping.w_avg\)"):
        core.load_generator(p2, device="cpu")


def test_bad_config_is_an_error(sg3_fixtures, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    good = save_model(tmp_path / "good.safetensors", fixture_generator(sg3_fixtures["t64"]))
    with safe_open(str(good), framework="pt") as f:
        meta = f.metadata()
    meta["generator.config"] = json.dumps({"z_dim": 512, "bogus": 1})
    p = tmp_path / "badcfg.safetensors"
    save_file(load_file(str(good)), str(p), metadata=meta)
    with pytest.raises(SoundvjError, match="badcfg.safetensors: generator config does not fit"):
        core.load_generator(p, device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant,kwargs",
    [
        ("T", dict(conv_kernel=3, use_radial_filters=False, channel_base=32768, channel_max=512)),
        ("R", dict(conv_kernel=1, use_radial_filters=True, channel_base=65536, channel_max=1024)),
    ],
)
def test_paper_size_generator_renders_on_cpu(variant, kwargs):
    """The paper's generator: StyleGAN3 at 256 px, num_ws 16, w_dim 512 (R with doubled channels)."""
    G = core.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3, **kwargs).eval()
    assert G.num_ws == 16
    with torch.no_grad():
        img = G(torch.randn(1, 512), None, truncation_psi=0.7, noise_mode="const")
    assert img.shape == (1, 3, 256, 256) and torch.isfinite(img).all()
    assert img.std() > 0
