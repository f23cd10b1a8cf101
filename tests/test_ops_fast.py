"""The fast filtered_lrelu (pure PyTorch and C++ kernel) against NVIDIA's reference composition."""

from __future__ import annotations

import math
import os
import threading

import pytest
import torch

from core.errors import SoundvjError
from core.stylegan3.filters import design_lowpass_filter
from core.stylegan3.ops import backend, cpp_kernel
from core.stylegan3.ops.backend import set_backend
from core.stylegan3.ops.filtered_lrelu_reference import filtered_lrelu_reference
from tests.parity_fixtures import fixture_generator
from core.stylegan3.ops.filtered_lrelu_fast import filtered_lrelu_fast, filtered_lrelu_torch
from tests.conftest import requires_cuda

TOL = 1e-4  # on the generator images, as in test_stylegan3_parity


def _cpp_or_skip():
    if cpp_kernel.load(wait=True) is None:
        pytest.skip(cpp_kernel.status())


def _fast_cpp(x: torch.Tensor, **kw) -> torch.Tensor:
    return filtered_lrelu_fast(x, allow_cpp=True, **kw)


PATHS = {"torch": filtered_lrelu_torch, "cpp": _fast_cpp}


def _filter(taps: int, radial: bool = False) -> torch.Tensor | None:
    return design_lowpass_filter(taps, cutoff=3, width=2, fs=12, radial=radial)


# (C, H, W, up, down, padding, up taps, down taps, 2-D up filter, 2-D down filter)
CASES = [
    (16, 20, 20, 2, 2, [9, 8, 9, 8], 12, 12, False, False),  # StyleGAN3-T layer
    (16, 20, 20, 4, 2, [-6, -9, -6, -9], 24, 12, False, False),  # T layer where the size grows
    (21, 30, 30, 2, 2, [-11, -12, -11, -12], 12, 12, False, False),  # last critically sampled layer
    (3, 16, 16, 1, 1, 0, 1, 1, False, False),  # ToRGB: no filters
    (16, 20, 20, 2, 2, [11, 10, 11, 10], 12, 12, False, True),  # StyleGAN3-R: radial down filter
    (16, 20, 20, 4, 2, [-2, -5, -2, -5], 24, 12, False, True),
    (5, 17, 13, 1, 2, [3, 2, 1, 4], 1, 8, False, False),  # odd and non-square sizes, asymmetric pads
    (5, 17, 13, 2, 1, [13, 12, 14, 11], 12, 1, False, False),
    (4, 13, 15, 4, 4, [20, 1, -3, 2], 24, 16, False, False),
    (4, 9, 11, 1, 4, [-1, 2, 3, 0], 1, 1, False, False),  # None filters with resampling
    (4, 9, 11, 2, 1, [1, 2, 3, 4], 1, 1, False, False),
    (6, 10, 12, 2, 4, (5, 3), 6, 8, False, False),  # (px, py) padding
    (3, 11, 9, 2, 2, 7, 6, 6, True, True),  # 2-D filters both ways, int padding
    (40, 12, 12, 1, 1, [-2, -1, 3, 0], 5, 3, False, False),  # crop with filters, no resampling
    (1, 6, 7, 3, 2, [4, 4, 4, 4], 9, 6, False, False),  # a factor StyleGAN3 never uses
]
# (gain, slope, clamp, flip_filter, with bias)
ACTS = [(math.sqrt(2), 0.2, 256.0, False, True), (1.0, 1.0, None, True, True), (0.7, 0.1, 0.5, False, False)]


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("case", range(len(CASES)))
def test_fast_matches_reference(path, case):
    if path == "cpp":
        _cpp_or_skip()
    channels, h, w, up, down, padding, tu, td, fu_2d, fd_2d = CASES[case]
    gen = torch.Generator().manual_seed(case)
    fu = None if tu == 1 else _filter(tu, radial=fu_2d)
    fd = None if td == 1 else _filter(td, radial=fd_2d)
    for batch in (1, 3):
        x = torch.randn(batch, channels, h, w, generator=gen) * 3
        for gain, slope, clamp, flip, with_bias in ACTS:
            b = torch.randn(channels, generator=gen) if with_bias else None
            kw = dict(fu=fu, fd=fd, b=b, up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp,
                      flip_filter=flip)
            ref = filtered_lrelu_reference(x, **kw)
            out = PATHS[path](x, **kw)
            assert out.shape == ref.shape
            err = (out - ref).abs().max().item()
            assert err <= 2e-6 * max(1.0, ref.abs().max().item()), (path, case, batch, gain, slope, clamp, err)


def test_cpp_kernel_handles_channels_last_and_contiguous_inputs():
    _cpp_or_skip()
    x = torch.randn(2, 37, 19, 23)
    kw = dict(fu=_filter(12), fd=_filter(12), b=torch.randn(37), up=2, down=2, padding=[9, 8, 9, 8], clamp=256)
    ref = filtered_lrelu_reference(x, **kw)
    for inp in (x, x.contiguous(memory_format=torch.channels_last)):
        assert (_fast_cpp(inp, **kw) - ref).abs().max().item() < 1e-5


def test_fast_path_keeps_autograd():
    """With gradients wanted the fast path stays on PyTorch ops, so backward works and matches."""
    x = torch.randn(2, 4, 12, 12, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    kw = dict(fu=_filter(12), fd=_filter(12), up=2, down=2, padding=[9, 8, 9, 8], clamp=1.0)
    grads = []
    for fn in (filtered_lrelu_reference, _fast_cpp):
        x.grad = b.grad = None
        fn(x, b=b, **kw).square().sum().backward()
        grads.append((x.grad.clone(), b.grad.clone()))
    assert (grads[0][0] - grads[1][0]).abs().max() < 1e-4
    assert (grads[0][1] - grads[1][1]).abs().max() < 1e-3


@pytest.fixture
def restore_backend():
    saved = {k: getattr(backend, k) for k in ("_requested", "_measured", "_provisional", "_env_note", "_forced_by_env")}
    yield
    for k, v in saved.items():
        setattr(backend, k, v)


def _fixture_errors(fx: dict, device: str = "cpu") -> dict[str, float]:
    """Max abs error of the base and the perturbed (psi 0.7) images against the official ones."""
    errs = {}
    with torch.no_grad():
        for name, overrides, psi, key in (("base", False, 1.0, None), ("perturbed", True, 0.7, "img_psi07")):
            G = fixture_generator(fx, overrides, device)
            ws = G.mapping(fx["z"].to(device), fx["c"].to(device), truncation_psi=psi)
            img = G.synthesis(ws, **fx["synthesis_call"]).cpu()
            want = fx["img"] if key is None else fx["perturbed"][key]
            errs[name] = (img - want).abs().max().item()
    return errs


@pytest.mark.parametrize("name", ["fast", "fast-torch", "reference"])
@pytest.mark.parametrize("variant", ["t64", "r64"])
def test_generator_matches_official_outputs_on_every_backend(sg3_fixtures, restore_backend, variant, name):
    if name == "fast":
        _cpp_or_skip()
    set_backend(name)
    errs = _fixture_errors(sg3_fixtures[variant])
    print(f"{variant} {name}: {errs}")
    assert max(errs.values()) < TOL


def test_backend_selection(restore_backend, monkeypatch):
    monkeypatch.setenv("SOUNDVJ_OPS", "Reference")
    assert backend.requested_backend() == "reference"
    monkeypatch.setenv("SOUNDVJ_OPS", "nonsense")
    with pytest.raises(SoundvjError):
        backend.requested_backend()
    monkeypatch.delenv("SOUNDVJ_OPS")
    assert backend.requested_backend() == "auto"  # measured per model (tests/test_backend_choice.py)
    with pytest.raises(SoundvjError):
        set_backend("cuda-please")
    set_backend("reference")
    assert "reference" in backend.describe_backend()
    set_backend("fast-torch")
    assert "fast-torch" in backend.describe_backend()
    set_backend("fast")
    described = backend.describe_backend()
    assert ("fast-cpp" in described) == (cpp_kernel.load() is not None)
    assert "fast-" in described


def test_missing_compiler_falls_back_with_the_reason(monkeypatch, restore_backend):
    """No compiler: nothing raises, the PyTorch fast path runs, and `soundvj info --backend` says why."""
    done = threading.Thread(target=lambda: None)
    done.start()
    done.join()
    monkeypatch.setattr(cpp_kernel, "_op", None)
    monkeypatch.setattr(cpp_kernel, "_thread", done)
    monkeypatch.setattr(cpp_kernel, "_status", cpp_kernel._status)
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    cpp_kernel._build()
    assert cpp_kernel.load(wait=True) is None
    set_backend("fast")
    described = backend.describe_backend()
    assert "fast-torch" in described and "C++ kernel not built: no C++ compiler" in described
    x = torch.randn(1, 4, 10, 10)
    kw = dict(fu=_filter(12), fd=_filter(12), b=torch.randn(4), up=2, down=2, padding=[9, 8, 9, 8], clamp=256)
    assert (filtered_lrelu_fast(x, **kw) - filtered_lrelu_reference(x, **kw)).abs().max() < 1e-5


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("case", range(len(CASES)))
def test_fast_matches_reference_on_cuda(case):
    channels, h, w, up, down, padding, tu, td, fu_2d, fd_2d = CASES[case]
    gen = torch.Generator().manual_seed(case)
    fu = None if tu == 1 else _filter(tu, radial=fu_2d).cuda()
    fd = None if td == 1 else _filter(td, radial=fd_2d).cuda()
    for batch in (1, 3):
        x = (torch.randn(batch, channels, h, w, generator=gen) * 3).cuda()
        for gain, slope, clamp, flip, with_bias in ACTS:
            b = torch.randn(channels, generator=gen).cuda() if with_bias else None
            kw = dict(fu=fu, fd=fd, b=b, up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp,
                      flip_filter=flip)
            ref = filtered_lrelu_reference(x, **kw)
            out = filtered_lrelu_fast(x, **kw)
            assert out.shape == ref.shape and out.device == ref.device
            # cuDNN may use TF32 or other algorithms; still far below anything visible.
            assert (out - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("variant", ["t64", "r64"])
def test_generator_fast_path_on_cuda(sg3_fixtures, restore_backend, variant):
    set_backend("fast")
    errs = _fixture_errors(sg3_fixtures[variant], device="cuda")
    assert max(errs.values()) < 1e-3  # cuDNN convolutions round differently from CPU (as in the parity test)


def test_kernel_pending_asks_whether_this_checkout_has_a_build(monkeypatch, tmp_path):
    """The "compiling" notice is for a real compile only: with this checkout's build present it is not
    pending however slowly the machine loads it; in an empty cache there is no build of it."""
    _cpp_or_skip()
    assert cpp_kernel.is_built()
    monkeypatch.setattr(cpp_kernel, "load", lambda wait=False: None)  # a load too slow to finish in time
    monkeypatch.setattr(backend, "active_backend", lambda: "fast")
    assert backend.kernel_pending("cpu") is False
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert not cpp_kernel.is_built()


def test_kernel_isa_limit_builds_what_an_avx2_only_host_builds(monkeypatch):
    """SOUNDVJ_KERNEL_ISA=avx2 on an AVX-512 CPU compiles the kernel without AVX-512 (to measure an
    AVX2-only host on one machine); without it an AVX-512 CPU gets its 512-bit vectors."""
    if os.uname().machine != "x86_64":
        pytest.skip("the -march flags are chosen for x86_64 here")
    avx512 = "fpu sse2 avx avx2 fma avx512f avx512bw"
    monkeypatch.delenv(cpp_kernel.KERNEL_ISA_ENV, raising=False)
    assert "-mprefer-vector-width=512" in cpp_kernel.compiler_flags(avx512)
    assert "-mno-avx512f" not in cpp_kernel.compiler_flags(avx512)
    monkeypatch.setenv(cpp_kernel.KERNEL_ISA_ENV, "avx2")
    flags = cpp_kernel.compiler_flags(avx512)
    assert "-mno-avx512f" in flags and "-mprefer-vector-width=512" not in flags
    assert "-mno-avx512f" not in cpp_kernel.compiler_flags("fpu sse2 avx avx2 fma")  # nothing to take away
