"""Sound models: E_A, E_I, the latent stepper, their configs and layout helpers."""

from __future__ import annotations

import functools
import json

import pytest
import torch

from core.errors import SoundvjError
from core.sound import (
    AudioEncoder,
    AudioEncoderConfig,
    InversionEncoderConfig,
    LatentStepper,
    LatentStepperConfig,
    SoundModels,
    SoundModelsConfig,
    alpha_groups,
    alpha_per_style,
    style_groups,
)

N_MELS = 128
SMALL_WIDTH = 8


def silence(batch: int = 2, frames: int = 87) -> torch.Tensor:
    return torch.zeros(batch, N_MELS, frames)


def loud_noise(batch: int = 2, frames: int = 87, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, N_MELS, frames, generator=torch.Generator().manual_seed(seed))


@functools.cache
def small_models(num_ws: int, w_dim: int) -> SoundModels:
    torch.manual_seed(0)
    return SoundModels(SoundModelsConfig.for_generator(num_ws, w_dim, width=SMALL_WIDTH, hidden=64)).eval()


def small_stepper(num_ws: int = 16, w_dim: int = 32, noise_dim: int = 8) -> LatentStepper:
    torch.manual_seed(0)
    cfg = LatentStepperConfig(num_ws=num_ws, w_dim=w_dim, hidden=32, embed_dim=16, noise_dim=noise_dim)
    return LatentStepper(cfg).eval()


def stepper_inputs(stepper: LatentStepper, batch: int = 2, frames: int = 0, seed: int = 3):
    """(w0, w_hat [B, num_ws, w_dim] or [B, T, ...], embed) with a non-zero w_avg already set."""
    g = torch.Generator().manual_seed(seed)
    cfg = stepper.config
    stepper.set_w_avg(torch.randn(cfg.w_dim, generator=g))
    lead = (batch, frames) if frames else (batch,)
    w0 = stepper.w_avg + torch.randn(batch, cfg.num_ws, cfg.w_dim, generator=g)
    w_hat = stepper.w_avg + torch.randn(*lead, cfg.num_ws, cfg.w_dim, generator=g)
    embed = torch.nn.functional.normalize(torch.randn(*lead, cfg.embed_dim, generator=g), dim=-1)
    return w0, w_hat, embed


# ---- shapes and basic properties -------------------------------------------------------------


@pytest.mark.parametrize("num_ws,w_dim", [(16, 512), (12, 64)])
@pytest.mark.parametrize("frames", [16, 87, 200])
def test_output_shapes(num_ws: int, w_dim: int, frames: int) -> None:
    models = small_models(num_ws, w_dim)
    mel = loud_noise(batch=3, frames=frames)
    with torch.no_grad():
        embed = models.audio_encoder(mel)
        w_hat = models.inversion_encoder(mel)
        w_next, hidden = models.latent_stepper.step(w_hat, w_hat, embed, None, 0.5, 1.0, torch.Generator())
        w_next2, hidden2 = models.latent_stepper.step(w_next, w_hat, embed, hidden, 0.5, 1.0, torch.Generator())
    assert embed.shape == (3, 512)
    assert w_hat.shape == (3, num_ws, w_dim)
    assert w_next.shape == w_next2.shape == (3, num_ws, w_dim)
    assert hidden.shape == hidden2.shape == (5, 3, 64)
    assert torch.isfinite(w_next2).all()


def test_audio_encoder_is_unit_norm_and_resnet18_sized() -> None:
    models = small_models(16, 512)
    with torch.no_grad():
        embed = models.audio_encoder(torch.cat([silence(1), loud_noise(3), 0.01 * loud_noise(1)]))
    torch.testing.assert_close(embed.norm(dim=1), torch.ones(5), atol=1e-5, rtol=0)
    # width 64 is the real ResNet-18 (11,176,512 weights without its classifier) + 1->3 stem + 512->512 fc.
    full = AudioEncoder(AudioEncoderConfig(width=64))
    assert sum(p.numel() for p in full.parameters()) == 11_176_512 + (3 * 9 + 3) + (512 * 512 + 512)


def test_inversion_output_is_w_avg_plus_offset() -> None:
    encoder = small_models(12, 64).inversion_encoder
    mel = loud_noise(batch=2)
    with torch.no_grad():
        encoder.set_w_avg(torch.zeros(64))
        base = encoder(mel)
        w_avg = torch.linspace(-2.0, 3.0, 64)
        encoder.set_w_avg(w_avg)
        shifted = encoder(mel)
        offsets = encoder.offsets(mel)
    encoder.set_w_avg(torch.zeros(64))
    torch.testing.assert_close(shifted - base, w_avg.expand(2, 12, 64), atol=1e-5, rtol=0)
    torch.testing.assert_close(shifted, w_avg + offsets, atol=1e-6, rtol=0)
    assert abs((shifted.mean() - base.mean()).item() - w_avg.mean().item()) < 1e-5
    # Untrained: loud input gives offsets of std ~offset_init_std (0.25 of an O(1) w entry), not 0, not huge.
    assert 0.1 < offsets.std().item() < 0.5


def test_models_respond_to_sound() -> None:
    models = small_models(16, 512)
    with torch.no_grad():
        e_quiet, e_loud = models.audio_encoder(silence(1)), models.audio_encoder(loud_noise(1))
        w_quiet, w_loud = models.inversion_encoder(silence(1)), models.inversion_encoder(loud_noise(1))
        w_loud2 = models.inversion_encoder(loud_noise(1, seed=2))
    # Untrained ReLU features share a large common mode, so embeddings start close (cosine ~0.99);
    # they must still differ clearly, and w_hat must differ a lot.
    assert (e_quiet - e_loud).norm().item() > 0.05
    assert (w_quiet - w_loud).abs().mean().item() > 0.05
    assert (w_loud - w_loud2).abs().mean().item() > 1e-3  # even two noise windows differ


def test_eval_mode_is_deterministic_and_no_grad_friendly() -> None:
    models = small_models(12, 64)
    mel = loud_noise(batch=2)
    with torch.no_grad():
        a = models.inversion_encoder(mel), models.audio_encoder(mel)
        b = models.inversion_encoder(mel), models.audio_encoder(mel)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not a[0].requires_grad
    # Batching does not change a sample's result (no batch statistics in eval mode).
    with torch.no_grad():
        single = models.inversion_encoder(mel[:1])
    torch.testing.assert_close(single, a[0][:1], atol=1e-5, rtol=1e-5)


def test_modules_follow_to_dtype() -> None:
    stepper = small_stepper().to(torch.float64)
    w0, w_hat, embed = stepper_inputs(stepper)
    with torch.no_grad():
        w_next, hidden = stepper.step(w0.double(), w_hat.double(), embed.double(), None, 0.5, 1.0, torch.Generator())
    assert w_next.dtype == hidden.dtype == torch.float64
    torch.manual_seed(0)
    encoder = SoundModels(SoundModelsConfig.for_generator(12, 64, width=4, hidden=16)).double().eval()
    with torch.no_grad():
        assert encoder.inversion_encoder(loud_noise(1, frames=16)).dtype == torch.float64
        assert encoder.audio_encoder(loud_noise(1, frames=16)).dtype == torch.float64


def test_state_dict_prefixes_and_w_avg_buffers() -> None:
    models = small_models(12, 64)
    keys = list(models.state_dict())
    assert all(k.split(".")[0] in ("audio_encoder", "inversion_encoder", "latent_stepper") for k in keys)
    assert "inversion_encoder.w_avg" in keys and "latent_stepper.w_avg" in keys
    assert "latent_stepper.gru.weight_hh_l4" in keys and "latent_stepper.gru.weight_hh_l5" not in keys
    assert not any("w_avg" in name for name, _ in models.named_parameters())  # never learned
    w_avg = torch.full([64], 0.5)
    models.set_w_avg(w_avg)
    assert torch.equal(models.inversion_encoder.w_avg, w_avg) and torch.equal(models.latent_stepper.w_avg, w_avg)
    models.set_w_avg(torch.zeros(64))
    with pytest.raises(ValueError):
        models.set_w_avg(torch.zeros(65))


# ---- style layout ------------------------------------------------------------------------------


def test_groups_for_16_styles_are_the_documented_splits() -> None:
    assert style_groups(16) == ((0, 1, 2), (3, 4, 5, 6), tuple(range(7, 16)))
    assert alpha_groups(16) == ((0, 1, 2, 3), (4, 5, 6, 7), tuple(range(8, 16)))
    assert style_groups(12) == ((0, 1), (2, 3, 4), tuple(range(5, 12)))
    assert alpha_groups(12) == ((0, 1, 2), (3, 4, 5), tuple(range(6, 12)))


@pytest.mark.parametrize("groups", [style_groups, alpha_groups])
def test_groups_cover_every_style_once(groups) -> None:
    for num_ws in range(3, 41):
        coarse, middle, fine = groups(num_ws)
        assert coarse and middle and fine
        assert coarse + middle + fine == tuple(range(num_ws))  # ordered, contiguous, each id once
    for bad in (0, 2, True):
        with pytest.raises(SoundvjError):
            groups(bad)


def test_alpha_per_style() -> None:
    assert torch.equal(alpha_per_style(0.25, 12), torch.full([12], 0.25))
    per_style = alpha_per_style((0.0, 0.5, 1.0), 16)
    assert per_style.tolist() == [0.0] * 4 + [0.5] * 4 + [1.0] * 8
    assert alpha_per_style([0.1] * 12, 12).shape == (12,)
    assert torch.equal(alpha_per_style(torch.tensor(0.5).item(), 4), torch.full([4], 0.5))
    for bad in (1.5, -0.1, (0.1, 0.2), (0.0, 0.5, 2.0), "0.5", None, True):
        with pytest.raises(SoundvjError):
            alpha_per_style(bad, 16)


# ---- latent stepper ----------------------------------------------------------------------------


def run_step(stepper: LatentStepper, seed: int | None, noise_std: float, alpha=0.5):
    w0, w_hat, embed = stepper_inputs(stepper)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    with torch.no_grad():
        return stepper.step(w0, w_hat, embed, None, alpha, noise_std, gen)[0]


def test_stepper_noise_and_seeds() -> None:
    stepper = small_stepper()
    assert torch.equal(run_step(stepper, 7, 1.0), run_step(stepper, 7, 1.0))
    assert (run_step(stepper, 7, 1.0) - run_step(stepper, 8, 1.0)).abs().max() > 1e-4
    assert torch.equal(run_step(stepper, 7, 0.0), run_step(stepper, 8, 0.0))
    assert (run_step(stepper, 7, 1.0) - run_step(stepper, 7, 0.0)).abs().max() > 1e-4
    # Same random-stream consumption whatever noise_std is (changing it live shifts no other stream).
    w0, w_hat, embed = stepper_inputs(stepper)
    states = []
    for noise_std in (0.0, 2.0):
        gen = torch.Generator().manual_seed(5)
        with torch.no_grad():
            stepper.step(w0, w_hat, embed, None, 0.5, noise_std, gen)
        states.append(gen.get_state())
    assert torch.equal(states[0], states[1])
    assert not torch.equal(states[0], torch.Generator().manual_seed(5).get_state())
    with pytest.raises(SoundvjError):
        stepper.step(w0, w_hat, embed, None, 0.5, -1.0, None)


def test_rollout_equals_repeated_step() -> None:
    stepper = small_stepper(num_ws=12)
    w0, w_hat_seq, embed_seq = stepper_inputs(stepper, batch=2, frames=6)
    alpha = (0.2, 0.5, 0.9)
    with torch.no_grad():
        ws = stepper.rollout(w0, w_hat_seq, embed_seq, alpha, 0.7, torch.Generator().manual_seed(11))
        gen, w, hidden, stepped = torch.Generator().manual_seed(11), w0, None, []
        for t in range(6):
            w, hidden = stepper.step(w, w_hat_seq[:, t], embed_seq[:, t], hidden, alpha, 0.7, gen)
            stepped.append(w)
    assert ws.shape == (2, 6, 12, 32)
    torch.testing.assert_close(ws, torch.stack(stepped, dim=1), atol=1e-5, rtol=0)
    assert (ws[:, -1] - ws[:, 0]).abs().max() > 1e-3  # it actually moves


def test_alpha_endpoints_and_groups() -> None:
    stepper = small_stepper()
    w0, w_hat, embed = stepper_inputs(stepper)
    with torch.no_grad():
        w_fixed, _ = stepper.step(w0, w_hat, embed, None, 0.0, 1.0, torch.Generator().manual_seed(1))
        w_full, _ = stepper.step(w0, w_hat, embed, None, 1.0, 1.0, torch.Generator().manual_seed(1))
        w_tilde, _ = stepper.propose(w0, w_hat, embed, None, 1.0, torch.Generator().manual_seed(1))
        w_fine, _ = stepper.step(w0, w_hat, embed, None, (0.0, 0.0, 1.0), 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(w_fixed, w0)
    assert torch.equal(w_full, w_tilde)
    # Untrained, w_tilde = w_hat + small d_t.
    assert 0 < (w_tilde - w_hat).abs().max().item() < 0.5
    _, _, fine = alpha_groups(16)
    assert torch.equal(w_fine[:, : fine[0]], w0[:, : fine[0]])  # coarse + middle untouched
    assert torch.equal(w_fine[:, fine[0]:], w_tilde[:, fine[0]:])
    # A per-sample [B, num_ws] tensor works too.
    per_sample = torch.stack([torch.zeros(16), torch.ones(16)])
    with torch.no_grad():
        w_mixed, _ = stepper.step(w0, w_hat, embed, None, per_sample, 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(w_mixed[0], w0[0]) and torch.equal(w_mixed[1], w_tilde[1])


def test_gradients_flow_through_rollout_and_encoders() -> None:
    models = small_models(12, 64)
    models.train()
    try:
        mel = loud_noise(batch=2, frames=32)
        embed = models.audio_encoder(mel)
        w_hat = models.inversion_encoder(mel)
        w_hat_seq = w_hat.unsqueeze(1).expand(-1, 3, -1, -1)
        embed_seq = embed.unsqueeze(1).expand(-1, 3, -1)
        ws = models.latent_stepper.rollout(w_hat.detach(), w_hat_seq, embed_seq, 0.5, 0.3, torch.Generator())
        (ws.square().mean() + (embed * torch.linspace(-1, 1, 512)).sum()).backward()
        gru = models.latent_stepper.gru
        for layer in range(5):
            for name in (f"weight_ih_l{layer}", f"weight_hh_l{layer}"):
                grad = getattr(gru, name).grad
                assert grad is not None and grad.abs().sum() > 0, name
        assert models.inversion_encoder.input_conv.weight.grad.abs().sum() > 0
        assert models.audio_encoder.input_stem.weight.grad.abs().sum() > 0
    finally:
        models.zero_grad(set_to_none=True)
        models.eval()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu_with_cpu_generator() -> None:
    stepper = small_stepper()
    w0, w_hat, embed = stepper_inputs(stepper)
    with torch.no_grad():
        cpu, _ = stepper.step(w0, w_hat, embed, None, 0.5, 1.0, torch.Generator().manual_seed(4))
        stepper.cuda()
        gpu, _ = stepper.step(w0.cuda(), w_hat.cuda(), embed.cuda(), None, 0.5, 1.0, torch.Generator().manual_seed(4))
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)


# ---- configs -----------------------------------------------------------------------------------


def test_config_round_trip() -> None:
    cfg = SoundModelsConfig(
        audio_encoder=AudioEncoderConfig(width=16, embed_dim=256, blocks_per_stage=(1, 2, 1, 2)),
        inversion_encoder=InversionEncoderConfig(num_ws=12, w_dim=64, width=8, offset_init_std=0.1),
        latent_stepper=LatentStepperConfig(num_ws=12, w_dim=64, hidden=128, embed_dim=256, noise_dim=0),
    )
    data = json.loads(json.dumps(cfg.to_dict()))
    assert SoundModelsConfig.from_dict(data) == cfg
    assert SoundModelsConfig.from_dict({}) == SoundModelsConfig()
    assert SoundModelsConfig.for_generator(12, 64, width=8).inversion_encoder.num_ws == 12


@pytest.mark.parametrize(
    "data",
    [
        {"extra": {}},
        {"audio_encoder": {"widht": 16}},
        {"latent_stepper": {"num_ws": 16, "w_dim": 512, "dropout": 0.1}},
        {"audio_encoder": {"width": 0}},
        {"audio_encoder": {"width": True}},
        {"audio_encoder": {"blocks_per_stage": [2, 2, 2]}},
        {"inversion_encoder": {"num_ws": 2}, "latent_stepper": {"num_ws": 2}},
        {"inversion_encoder": {"offset_init_std": -0.1}},
        {"inversion_encoder": {"w_dim": "512"}},
        {"latent_stepper": {"hidden": 0}},
        {"latent_stepper": {"num_ws": 12}},  # disagrees with inversion_encoder.num_ws
        {"latent_stepper": {"embed_dim": 256}},  # disagrees with audio_encoder.embed_dim
        {"audio_encoder": [1, 2]},
        "not a mapping",
    ],
)
def test_config_rejects_bad_input(data) -> None:
    with pytest.raises(SoundvjError):
        SoundModelsConfig.from_dict(data)


def test_wrong_mel_shape_is_rejected() -> None:
    models = small_models(12, 64)
    with pytest.raises(ValueError):
        models.audio_encoder(torch.zeros(1, 64, 87))
    with pytest.raises(ValueError):
        models.inversion_encoder(torch.zeros(128, 87))


def test_map2style_depth_follows_map_size() -> None:
    # n_mels=128: coarse/middle/fine maps are 8/16/32 mel bins high -> ceil(log2) = 3/4/5 stride-2 convs.
    encoder = small_models(16, 512).inversion_encoder
    conv_counts = [sum(isinstance(m, torch.nn.Conv2d) for m in head.convs) for head in encoder.styles]
    assert conv_counts == [3] * 3 + [4] * 4 + [5] * 9


@pytest.mark.parametrize("n_mels,frames", [(128, 94), (16, 16), (128, 300)])
def test_inversion_inference_path_fuses_the_style_heads_with_the_same_result(n_mels, frames) -> None:
    """Without autograd E_I runs each level's heads as one grouped network; it must equal the heads one by
    one (also for a 1x1 map that needs no convs, and for a long window), and follow weight updates."""
    from core.sound.config import InversionEncoderConfig
    from core.sound.inversion_encoder import SoundInversionEncoder

    torch.manual_seed(0)
    encoder = SoundInversionEncoder(InversionEncoderConfig(num_ws=16, w_dim=32, n_mels=n_mels, width=4)).eval()
    mel = torch.rand(3, n_mels, frames)
    with torch.no_grad():
        fused = encoder(mel)
    with torch.enable_grad():
        one_by_one = encoder(mel).detach()
    torch.testing.assert_close(fused, one_by_one, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        encoder.styles[5].linear.bias.add_(1.0)  # an optimiser step in place: the fused copy must follow
        assert torch.allclose(encoder(mel)[:, 5], one_by_one[:, 5] + 1.0, atol=1e-5)
