"""The CUDA live path: fp16 for NVIDIA's high-resolution layers, channels_last, CUDA graph, torch.compile.

The tests marked `cuda` need a GPU and skip without one. What can be checked on a CPU is checked on
the CPU: which layers take float16 (against NVIDIA's own flags in the fixtures), the fp16 dtype
plumbing run end to end by forcing the layer dtype, channels_last being a no-op for the CPU output,
and the option checks.
"""

from __future__ import annotations

import pytest
import torch

from core.errors import SoundvjError
from core.stylegan3.live_synthesis import LiveSynthesis, LiveSynthesisOptions
from core.stylegan3.networks import SynthesisLayer
from core.stylegan3.ops import backend
from tests.conftest import requires_cuda
from tests.parity_fixtures import fixture_generator

VARIANTS = ["t64", "r64"]
# fp16 against fp32 on the same weights (images in about [-1, 1]): float16 keeps ~3 decimal digits
# per activation, and the error of 10 float16 layers accumulates.
FP16_MAX_ABS = 0.05
FP16_MEAN_ABS = 0.005
CUDA_FP32_TOL = 1e-3  # cuDNN vs the CPU reference (as in test_ops_fast's CUDA generator test)


def _ws(G, fx, psi=1.0):
    return G.mapping(fx["z"].to(G.mapping.w_avg.device), None, truncation_psi=psi)


@pytest.mark.parametrize("variant", VARIANTS)
def test_fp16_layers_are_nvidias(sg3_fixtures, variant):
    """The layers that run float16 on CUDA are exactly the official `use_fp16` ones (num_fp16_res=4),
    every layer keeps conv_clamp 256, and nothing runs float16 on CPU or with force_fp32."""
    fx = sg3_fixtures[variant]
    G = fixture_generator(fx)
    official = {d["name"]: d for d in fx["layer_info"] if d["name"] != "input"}
    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # a device object needs no GPU
    for layer, name in zip(G.synthesis.layers(), G.synthesis.layer_names):
        want = torch.float16 if official[name]["use_fp16_on_cuda"] else torch.float32
        assert layer.compute_dtype(cuda) == want, name
        assert layer.compute_dtype(cuda, force_fp32=True) == torch.float32
        assert layer.compute_dtype(cpu) == torch.float32
        assert layer.conv_clamp == official[name]["conv_clamp"]
    assert any(d["use_fp16_on_cuda"] for d in official.values())  # at 64 px all of them are


def _small_generator():
    """A StyleGAN3-T small enough for CPU float16 convs, which run PyTorch's slow reference kernels
    (far too slow for a test at the 64 px fixtures' size)."""
    from core.stylegan3.networks import Generator

    torch.manual_seed(3)
    # num_fp16_res 1 at 32 px: the 32 px layers run float16, the 16 px ones float32 (both kinds).
    return Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3, channel_base=256,
                     channel_max=8, num_fp16_res=1, mapping_kwargs={"num_layers": 2}).eval().requires_grad_(False)


def test_fp16_plumbing_runs_end_to_end_when_forced_on_cpu(monkeypatch):
    """Force the CUDA dtype choice on CPU (CPU has float16 convs, slowly): the float16 layers really
    compute in float16, the casts between float16 and float32 layers line up, the output is float32,
    and the image stays within the fp16 tolerance of the float32 one."""
    G = _small_generator()
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(0)), None)
        fp32 = G.synthesis(ws, noise_mode="const", force_fp32=False)  # CPU: float32 whatever is asked
    monkeypatch.setattr(SynthesisLayer, "compute_dtype",
                        lambda self, device, force_fp32=False: torch.float16 if self.use_fp16 and not force_fp32
                        else torch.float32)
    seen = {}
    hooks = [layer.register_forward_hook(lambda m, args, out, name=name: seen.__setitem__(name, out.dtype))
             for layer, name in zip(G.synthesis.layers(), G.synthesis.layer_names)]
    try:
        with torch.no_grad():
            forced_fp32 = G.synthesis(ws, noise_mode="const", force_fp32=True)
            assert set(seen.values()) == {torch.float32}
            img = G.synthesis(ws, noise_mode="const", force_fp32=False)
    finally:
        for h in hooks:
            h.remove()
    assert torch.equal(forced_fp32, fp32)
    use_fp16 = [layer.use_fp16 for layer in G.synthesis.layers()]
    assert any(use_fp16) and not all(use_fp16)
    for layer, name in zip(G.synthesis.layers(), G.synthesis.layer_names):
        assert seen[name] == (torch.float16 if layer.use_fp16 else torch.float32), name
    assert img.dtype == torch.float32
    err = (img - fp32).abs()
    print(f"fp16 (forced, CPU) vs fp32: max {err.max():.4f}, mean {err.mean():.5f}")
    assert 0 < err.max() < FP16_MAX_ABS and err.mean() < FP16_MEAN_ABS  # nonzero: it really ran float16


@pytest.fixture
def fast_backend(request):
    saved = {k: getattr(backend, k) for k in ("_requested", "_measured", "_provisional", "_env_note", "_forced_by_env")}
    backend.set_backend(request.param)
    yield request.param
    for k, v in saved.items():
        setattr(backend, k, v)


@pytest.mark.parametrize("fast_backend", ["fast", "fast-torch"], indirect=True)
@pytest.mark.parametrize("variant", VARIANTS)
def test_channels_last_changes_nothing_on_cpu(sg3_fixtures, variant, fast_backend):
    """The fast paths already work channels_last on CPU (the reference composition rounds
    differently on an NHWC input, by ~5e-7)."""
    fx = sg3_fixtures[variant]
    G = fixture_generator(fx)
    with torch.no_grad():
        ws = _ws(G, fx)[:2]
        plain = G.synthesis(ws, noise_mode="const", force_fp32=True)
        nhwc = G.synthesis(ws, noise_mode="const", force_fp32=True, channels_last=True)
    assert torch.equal(plain, nhwc)


def test_live_synthesis_on_cpu_is_plain_synthesis(sg3_fixtures):
    fx = sg3_fixtures["t64"]
    G = fixture_generator(fx)
    ws = _ws(G, fx)[:1]
    live = LiveSynthesis(G, batch=1, options=LiveSynthesisOptions.fastest_for(torch.device("cpu")))
    assert live.options == LiveSynthesisOptions()  # everything off on CPU
    with torch.no_grad():
        assert torch.equal(live(ws), G.synthesis(ws, noise_mode="const", force_fp32=True))
    with pytest.raises(ValueError, match="ws must be"):
        live(_ws(G, fx)[:2])


@pytest.mark.parametrize("option", ["fp16", "channels_last", "cuda_graph", "compile"])
def test_cuda_options_are_refused_on_cpu(sg3_fixtures, option):
    G = fixture_generator(sg3_fixtures["t64"])
    with pytest.raises(SoundvjError, match=f"{option} need a CUDA device"):
        LiveSynthesis(G, options=LiveSynthesisOptions(**{option: True}))


def test_graph_and_compile_together_are_refused():
    with pytest.raises(SoundvjError, match="not both"):
        LiveSynthesisOptions(cuda_graph=True, compile=True).validate(torch.device("cuda"))


def test_fastest_options_for_cuda():
    assert LiveSynthesisOptions.fastest_for(torch.device("cuda")) == LiveSynthesisOptions(
        fp16=True, channels_last=True, cuda_graph=True)


# ---- on a GPU --------------------------------------------------------------------------------------


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("variant", VARIANTS)
def test_cuda_fp16_against_fp32(sg3_fixtures, variant):
    fx = sg3_fixtures[variant]
    G = fixture_generator(fx, device="cuda")
    with torch.no_grad():
        ws = _ws(G, fx)
        fp32 = G.synthesis(ws, noise_mode="const", force_fp32=True).cpu()
        fp16 = G.synthesis(ws, noise_mode="const", force_fp32=False).cpu()
    assert (fp32 - fx["img"]).abs().max() < CUDA_FP32_TOL
    err = (fp16 - fp32).abs()
    print(f"{variant} CUDA fp16 vs fp32: max {err.max():.4f}, mean {err.mean():.5f}")
    assert err.max() < FP16_MAX_ABS and err.mean() < FP16_MEAN_ABS


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("variant", VARIANTS)
def test_cuda_channels_last_matches(sg3_fixtures, variant):
    fx = sg3_fixtures[variant]
    G = fixture_generator(fx, device="cuda")
    with torch.no_grad():
        ws = _ws(G, fx)
        plain = G.synthesis(ws, noise_mode="const", force_fp32=True)
        nhwc = G.synthesis(ws, noise_mode="const", force_fp32=True, channels_last=True)
    assert (plain - nhwc).abs().max() < CUDA_FP32_TOL


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("options", [LiveSynthesisOptions(cuda_graph=True),
                                     LiveSynthesisOptions(fp16=True, channels_last=True, cuda_graph=True)])
def test_cuda_graph_replays_what_eager_computes(sg3_fixtures, options):
    """Replays follow new ws and a changed input transform (rotate/pan), like eager calls do."""
    fx = sg3_fixtures["t64"]
    G = fixture_generator(fx, device="cuda")
    live = LiveSynthesis(G, batch=1, options=options, keep_output=True)
    eager = LiveSynthesis(G, batch=1, options=LiveSynthesisOptions(fp16=options.fp16, channels_last=options.channels_last))
    with torch.no_grad():
        all_ws = _ws(G, fx, psi=0.7)
        outs = []
        for i in range(all_ws.shape[0]):
            ws = all_ws[i : i + 1]
            got, want = live(ws), eager(ws)
            assert (got - want).abs().max() < 1e-5
            outs.append(got)
        if len(outs) > 1:
            assert (outs[0] - outs[1]).abs().max() > 1e-3  # a replay is not a stale frame
        angle = torch.tensor(0.3)
        G.synthesis.input.transform.copy_(torch.tensor([[angle.cos(), -angle.sin(), 0.1],
                                                        [angle.sin(), angle.cos(), 0.0], [0, 0, 1]]))
        ws = all_ws[:1]
        assert (live(ws) - eager(ws)).abs().max() < 1e-5
        assert (live(ws) - outs[0]).abs().max() > 1e-3


@requires_cuda
@pytest.mark.cuda
@pytest.mark.slow
def test_cuda_compile_matches_eager(sg3_fixtures):
    fx = sg3_fixtures["t64"]
    G = fixture_generator(fx, device="cuda")
    live = LiveSynthesis(G, batch=1, options=LiveSynthesisOptions(compile=True), keep_output=True)
    eager = LiveSynthesis(G, batch=1)
    with torch.no_grad():
        ws = _ws(G, fx)[:1]
        for _ in range(3):  # compile, record, replay
            assert (live(ws) - eager(ws)).abs().max() < 1e-4
