"""FramePipeline: shapes, determinism, batched == stepped, live parameter changes, sound -> motion."""

import pytest
import torch

from core.audio import MelConfig, WindowConfig, demo_soundscape, mel_windows
from core import model_file
from core.model import load_model
from core.params import Params
from core.pipeline import FramePipeline, apply_gain_db, input_transform
from tests.pipeline_helpers import tiny_model, tone


def windows_of(samples: torch.Tensor, fps: float = 24.0) -> torch.Tensor:
    return mel_windows(samples, MelConfig(), WindowConfig(fps=fps))


@pytest.fixture(scope="module")
def demo_windows() -> torch.Tensor:
    return windows_of(demo_soundscape(seconds=2.0))


@pytest.mark.parametrize("overrides", [{}, dict(w_dim=32, num_layers=10, img_resolution=16)])
def test_frame_shapes_follow_the_generator(overrides, demo_windows):
    model = tiny_model(**overrides)
    G = model.generator
    pipe = FramePipeline(model)
    frame = pipe.step(demo_windows[0])
    assert frame.shape == (3, G.img_resolution, G.img_resolution)
    assert pipe.latent.shape == (G.num_ws, G.w_dim)
    frames = pipe.step_batch(demo_windows[1:4])
    assert frames.shape == (3, 3, G.img_resolution, G.img_resolution)
    assert pipe.frame_index == 4


def test_default_model_pipeline_shapes(demo_windows):
    model = load_model(None, device="cpu")
    pipe = FramePipeline(model)
    frame = pipe.step(demo_windows[0])
    assert frame.shape == (3, 128, 128) and torch.isfinite(frame).all()


def test_deterministic_for_a_seed_and_different_across_seeds(demo_windows):
    model = tiny_model()
    runs = []
    for seed in (3, 3, 4):
        pipe = FramePipeline(model, Params(seed=seed, noise=0.5))
        runs.append(pipe.step_batch(demo_windows[:6]))
    assert torch.equal(runs[0], runs[1])
    assert (runs[0] - runs[2]).abs().mean() > 1e-3


def test_batched_equals_single_steps_and_reset_restarts(demo_windows):
    model = tiny_model()
    pipe = FramePipeline(model, Params(noise=0.4))
    single = torch.stack([pipe.step(w) for w in demo_windows[:5]])
    pipe.reset()
    batched = pipe.step_batch(demo_windows[:5])
    err = (single - batched).abs().max().item()
    print("batched vs single max abs diff:", err)
    assert err < 1e-4


def test_parameters_change_between_steps(demo_windows):
    model = tiny_model()
    pipe = FramePipeline(model, Params(alpha=0.0))
    w_before = pipe.latent.clone()
    pipe.step(demo_windows[0])
    assert torch.equal(pipe.latent, w_before)  # alpha 0: the first latent holds
    pipe.set_params(pipe.params.replace(alpha=1.0))
    pipe.step(demo_windows[1])
    assert not torch.equal(pipe.latent, w_before)
    # psi only changes the picture, not the state
    state = pipe.latent.clone()
    a = pipe.synthesize(state[None])
    pipe.set_params(pipe.params.replace(psi=0.2))
    b = pipe.synthesize(state[None])
    assert (a - b).abs().mean() > 1e-3
    # a new seed restarts the sequence
    assert pipe.set_params(pipe.params.replace(seed=9)) is True and pipe.frame_index == 0


def test_per_group_alpha_moves_only_that_group(demo_windows):
    from core.sound import alpha_groups

    model = tiny_model()
    pipe = FramePipeline(model, Params(alpha=0.0, alpha_fine=1.0))
    before = pipe.latent.clone()
    pipe.step(demo_windows[5])
    coarse, middle, fine = alpha_groups(model.generator.num_ws)
    changed = (pipe.latent - before).abs().sum(dim=1) > 0
    assert changed[list(fine)].all() and not changed[list(coarse) + list(middle)].any()


def test_pan_moves_the_image_right_by_pan_times_width(demo_windows):
    model = tiny_model()
    pipe = FramePipeline(model)
    pipe.step(demo_windows[0])
    w = pipe.latent[None]
    a = pipe.synthesize(w)
    pipe.set_params(pipe.params.replace(pan_x=4 / 32))
    b = pipe.synthesize(w)
    err = {k: (b - torch.roll(a, k, dims=3))[..., 8:24].abs().mean().item() for k in range(-6, 7)}
    assert min(err, key=err.get) == 4
    assert torch.allclose(input_transform(0, 0, 0), torch.eye(3))


def test_rotation_rotates_an_r_config_image(demo_windows):
    """StyleGAN3-R is rotation-equivariant, so rotate_deg=90 gives (nearly) a rot90 of the picture."""
    model = tiny_model(conv_kernel=1, use_radial_filters=True)
    pipe = FramePipeline(model)
    pipe.step(demo_windows[0])
    w = pipe.latent[None]
    a = pipe.synthesize(w)
    pipe.set_params(pipe.params.replace(rotate_deg=90.0))
    b = pipe.synthesize(w)
    inner = (..., slice(6, -6), slice(6, -6))
    errs = {k: (b - torch.rot90(a, k=k, dims=(2, 3)))[inner].abs().mean().item() for k in range(4)}
    print("rotate_deg=90, error against rot90^k:", {k: round(v, 4) for k, v in errs.items()})
    best = min(errs, key=errs.get)
    assert best in (1, 3) and errs[best] < 0.6 * errs[0]


def test_gain_shifts_the_mel_and_keeps_silence():
    mel = torch.tensor([0.0, 0.5, 0.99])
    out = apply_gain_db(mel, 8.0, 80.0)
    assert torch.allclose(out, torch.tensor([0.0, 0.6, 1.0]))
    assert torch.equal(apply_gain_db(mel, 0.0, 80.0), mel)


def motion(pipe: FramePipeline, windows: torch.Tensor) -> float:
    """Mean latent step over the last second, after the seed latent's transient has settled."""
    ws = pipe.step_latents(windows)[-25:]
    return (ws[1:] - ws[:-1]).norm(dim=(1, 2)).mean().item()


def test_silence_and_loud_sound_give_different_motion():
    """Same seed, no noise: the latent path follows the sound. Silence settles; loud varied audio moves."""
    model = tiny_model()
    params = Params(noise=0.0, alpha=0.5)
    silence = windows_of(torch.zeros(44100 * 3))
    gen = torch.Generator().manual_seed(0)
    loud = windows_of(torch.cat([tone(0.25, freq=f, amp=0.9) for f in (110, 880, 3000, 220) * 3])
                      + 0.3 * torch.randn(44100 * 3, generator=gen))
    still = motion(FramePipeline(model, params), silence)
    moving = motion(FramePipeline(model, params), loud)
    print(f"latent motion per frame: silence {still:.4f}, loud {moving:.4f}")
    assert moving > 0.1 and moving > 100 * still
    # and the sound reaches the target latent itself: w_hat differs between silence and loud
    sound = model.sound
    gap = (sound.inversion_encoder(silence[-1:]) - sound.inversion_encoder(loud[-1:])).norm().item()
    assert gap > 0.1


def test_seeded_sound_models_tell_the_demo_sections_apart():
    """The embedded default's untrained stand-ins still give each kind of sound its own target latent."""
    from core.audio import demo_sections

    model = load_model(None, device="cpu")
    wins = windows_of(demo_soundscape(seconds=24.0), fps=4.0)
    with torch.no_grad():
        w_hat = model.sound.inversion_encoder(wins)
    spread = (w_hat - w_hat.mean(0)).pow(2).mean().sqrt().item()
    sections = [w_hat[int(a * 4) + 2 : int(b * 4) - 2].mean(0) for _, a, b in demo_sections(24.0)]
    gaps = [(sections[i] - sections[j]).pow(2).mean().sqrt().item() for i in range(4) for j in range(i + 1, 4)]
    print(f"w_hat spread {spread:.3f}; section-to-section rms gaps {[round(g, 3) for g in gaps]}")
    assert min(gaps) > 0.2 * spread
    again = load_model(None, device="cpu")
    with torch.no_grad():
        assert torch.equal(again.sound.inversion_encoder(wins), w_hat)  # seeded: the same every time


def _latents(model, params: Params, seconds: float = 1.0) -> torch.Tensor:
    pipe = FramePipeline(model, params)
    return pipe.step_latents(mel_windows(demo_soundscape(seconds=seconds), pipe.mel_config, pipe.window_config()))


def test_focus_reaches_the_choice_of_scene_of_a_model_with_kinds():
    model = load_model(model_file.SHIPPED_DEFAULT, device="cpu")  # the suite's default is random weights
    assert model.sound.inversion_encoder.config.prototypes > 0
    blended = _latents(model, Params(focus=1.0, noise=0.0))
    settled = _latents(model, Params(focus=8.0, noise=0.0))
    assert (blended - settled).abs().max() > 1e-3


def test_focus_leaves_a_model_without_kinds_unchanged():
    model = tiny_model()
    assert torch.equal(_latents(model, Params(focus=1.0)), _latents(model, Params(focus=8.0)))
