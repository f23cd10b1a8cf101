"""Our StyleGAN3 against NVIDIA's official outputs (tests/fixtures, made by the official code)."""

import pytest
import torch

from core.stylegan3.networks import Generator
from tests.conftest import requires_cuda
from tests.parity_fixtures import fixture_generator

VARIANTS = ["t64", "r64"]
TOL = 1e-4


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().cpu().float() - b.float()).abs().max().item()


@pytest.mark.parametrize("variant", VARIANTS)
def test_seeded_init_draws_nvidias_weights_and_filters(sg3_fixtures, variant):
    fx = sg3_fixtures[variant]
    torch.manual_seed(fx["init_seed"])
    sd = Generator(**fx["config"]).state_dict()
    ref = fx["G_state_dict"]
    assert list(sd) == list(ref)
    worst = max(maxdiff(sd[k], ref[k]) for k in ref)
    print(f"{variant}: seeded init vs official, max abs diff {worst:.3g}")
    assert worst < 1e-6  # filters are designed in float64 then cast; weights are the same draws


@pytest.mark.parametrize("variant", VARIANTS)
def test_layer_hyperparameters_match(sg3_fixtures, variant):
    fx = sg3_fixtures[variant]
    G = fixture_generator(fx)
    info = {d["name"]: d for d in fx["layer_info"]}
    assert G.synthesis.input.channels == info["input"]["channels"]
    for name in G.synthesis.layer_names:
        layer, ref = getattr(G.synthesis, name), info[name]
        assert layer.padding == ref["filtered_lrelu_padding"], name
        assert (layer.up_factor, layer.down_factor, layer.up_taps, layer.down_taps) == (
            ref["up_factor"], ref["down_factor"], ref["up_taps"], ref["down_taps"]), name
        assert layer.down_radial == ref["down_radial"], name
        assert layer.tmp_sampling_rate == ref["tmp_sampling_rate"], name


@pytest.mark.parametrize("variant", VARIANTS)
def test_base_mapping_and_synthesis(sg3_fixtures, variant):
    fx = sg3_fixtures[variant]
    G = fixture_generator(fx)
    with torch.no_grad():
        ws = G.mapping(fx["z"], fx["c"], truncation_psi=1)
        x0 = G.synthesis.input(ws[:1, 0])
        img = G.synthesis(ws, **fx["synthesis_call"])
    d_ws, d_in, d_img = maxdiff(ws, fx["ws"]), maxdiff(x0, fx["input_out_sample0"]), maxdiff(img, fx["img"])
    print(f"{variant} base: ws {d_ws:.3g}  input {d_in:.3g}  img {d_img:.3g}")
    assert d_ws < TOL and d_in < TOL and d_img < TOL


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("psi", [1.0, 0.7])
def test_perturbed_with_transform_and_truncation(sg3_fixtures, variant, psi):
    fx = sg3_fixtures[variant]
    p = fx["perturbed"]
    G = fixture_generator(fx, perturbed=True)
    with torch.no_grad():
        ws = G.mapping(fx["z"], fx["c"], truncation_psi=psi, truncation_cutoff=p["truncation_cutoff"])
        img = G.synthesis(ws, **fx["synthesis_call"])
        affine = G.synthesis.input.affine(ws[:, 0])
        g_img = G(fx["z"], fx["c"], truncation_psi=psi, **fx["synthesis_call"])
    key = "" if psi == 1.0 else "_psi07"
    d_ws, d_img = maxdiff(ws, p["ws" + key]), maxdiff(img, p["img" + key])
    print(f"{variant} perturbed psi={psi}: ws {d_ws:.3g}  img {d_img:.3g}")
    assert d_ws < TOL and d_img < TOL
    if psi == 1.0:  # the fixture's affine output is for the untruncated ws
        assert maxdiff(affine, p["input_affine_out"]) < TOL
    assert maxdiff(g_img, p["img" + key]) < TOL


def test_transform_buffer_moves_the_image(sg3_fixtures):
    """The user transform translates the output, as NVIDIA's: a shift of k pixels moves content by k."""
    fx = sg3_fixtures["t64"]
    G = fixture_generator(fx)
    ws = G.mapping(fx["z"][:1], fx["c"][:1])
    with torch.no_grad():
        a = G.synthesis(ws, noise_mode="const", force_fp32=True)
        shift_px = 4
        G.synthesis.input.transform[0, 2] = -shift_px / G.img_resolution  # inverse transform: image moves right
        b = G.synthesis(ws, noise_mode="const", force_fp32=True)
    err = {s: (b[..., :, 16:48] - torch.roll(a, s, dims=3)[..., :, 16:48]).abs().mean().item() for s in range(-8, 9)}
    best = min(err, key=err.get)
    print("mean abs error by shift:", {k: round(v, 4) for k, v in err.items()})
    assert abs(best) == shift_px
    assert err[best] < 0.5 * err[0]


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("variant", VARIANTS)
def test_parity_on_cuda(sg3_fixtures, variant):
    fx = sg3_fixtures[variant]
    p = fx["perturbed"]
    G = fixture_generator(fx, perturbed=True, device="cuda")
    with torch.no_grad():
        ws = G.mapping(fx["z"].cuda(), fx["c"].cuda(), truncation_psi=0.7)
        img = G.synthesis(ws, noise_mode="const", force_fp32=True)
    assert maxdiff(ws, p["ws_psi07"]) < TOL
    assert maxdiff(img, p["img_psi07"]) < 1e-3  # cuDNN convolutions round differently from CPU
