"""CLIP adapter, losses and discriminators of training/ (tiny sizes, CPU)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("open_clip", reason="open_clip_torch is in the train extra (pip install -e '.[train]')")

from core.errors import SoundvjError  # noqa: E402
from training.models.clip import (  # noqa: E402
    CLIP_MEAN,
    CLIP_STD,
    ClipConfig,
    build_clip,
    caption,
    clip_pixels,
    save_clip,
)
from training.models.discriminators import ImageDiscriminator, VideoDiscriminator  # noqa: E402
from training.losses import (  # noqa: E402
    LogitScale,
    encoder_loss,
    info_nce,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
)
from training.augment.mel import level_shift, mix_recordings, spec_augment  # noqa: E402

TINY_CLIP = ClipConfig(
    embed_dim=16,
    image_size=16,
    patch_size=8,
    vision_width=32,
    vision_layers=1,
    vision_head_width=16,
    text_width=32,
    text_layers=1,
    text_heads=2,
    context_length=8,
)


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return build_clip(TINY_CLIP, require_checkpoint=False)


# ---------------------------------------------------------------- CLIP


def test_clip_encodes_generator_images_and_labels_to_unit_vectors(tiny_clip):
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    img = tiny_clip.encode_images(images)
    txt = tiny_clip.encode_labels(["rain", "low_hum"])
    assert img.shape == (3, 16) and txt.shape == (2, 16)
    assert torch.allclose(img.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(txt.norm(dim=1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(txt[0], txt[1])
    assert tiny_clip.embed_dim == 16 and tiny_clip.image_size == 16


def test_caption_reads_folder_names_as_words():
    assert caption("low_hum", "a picture of {label}") == "a picture of low hum"
    assert caption("wind-noise", "{label}") == "wind noise"


def test_clip_pixels_resizes_crops_and_normalises():
    grey = torch.full((1, 3, 40, 64), 0.5)  # generator range: 0.5 -> 0.75 in [0, 1]
    out = clip_pixels(grey, 16)
    assert out.shape == (1, 3, 16, 16)
    expected = (0.75 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(out[0, :, 5, 5], expected, atol=1e-5)
    # Centre crop of a wide image: a stripe on the far left is cut away.
    wide = torch.full((1, 3, 16, 48), -1.0)
    wide[..., :8] = 1.0
    assert torch.allclose(clip_pixels(wide, 16), clip_pixels(torch.full((1, 3, 16, 16), -1.0), 16))


def test_gradients_flow_from_clip_embedding_to_the_image(tiny_clip):
    images = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    tiny_clip.freeze()
    loss = tiny_clip.encode_images(images).sum()
    loss.backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_clip.parameters())


def test_saved_small_clip_reloads_with_its_own_sizes(tiny_clip, tmp_path):
    path = save_clip(tmp_path / "clip.safetensors", tiny_clip)
    assert not [p for p in tmp_path.iterdir() if p.name != "clip.safetensors"]  # no temp file left
    # The config's sizes are the defaults; the file's own sizes win.
    loaded = build_clip(ClipConfig(checkpoint=str(path)))
    assert loaded.config.architecture_dict() == TINY_CLIP.architecture_dict()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.eval().encode_images(images), tiny_clip.eval().encode_images(images))
        assert torch.equal(loaded.encode_labels(["fire"]), tiny_clip.encode_labels(["fire"]))


def test_missing_or_absent_checkpoint_is_one_line_error(tmp_path):
    with pytest.raises(SoundvjError, match=r"clip.checkpoint: .*no such file") as info:
        build_clip(ClipConfig(checkpoint=str(tmp_path / "nope.pt")))
    assert "\n" not in str(info.value)
    with pytest.raises(SoundvjError, match="clip.checkpoint: expected a CLIP checkpoint path"):
        build_clip(ClipConfig())


def test_state_dict_of_another_architecture_is_one_line_error(tiny_clip, tmp_path):
    path = tmp_path / "other.pt"
    torch.save(tiny_clip.model.state_dict(), path)
    wider = dataclasses.replace(TINY_CLIP, vision_width=64, checkpoint=str(path))
    with pytest.raises(SoundvjError, match=r"not a CLIP of architecture 'small': tensors .*another shape") as info:
        build_clip(wider)
    assert "\n" not in str(info.value)
    # The same file with the matching sizes loads (a plain state dict, with a DDP 'module.' prefix).
    torch.save({f"module.{k}": v for k, v in tiny_clip.model.state_dict().items()}, path)
    build_clip(dataclasses.replace(TINY_CLIP, checkpoint=str(path)))


def test_soundvj_clip_file_under_a_named_architecture_is_an_error(tiny_clip, tmp_path):
    path = save_clip(tmp_path / "clip.safetensors", tiny_clip)
    with pytest.raises(SoundvjError, match="a soundvj small CLIP, but clip.architecture is 'ViT-B-32'"):
        build_clip(ClipConfig(architecture="ViT-B-32", checkpoint=str(path)))


def test_garbage_checkpoint_and_unknown_architecture_are_errors(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(SoundvjError, match="not a readable CLIP checkpoint"):
        build_clip(ClipConfig(checkpoint=str(junk)))
    junk_st = tmp_path / "junk.safetensors"
    junk_st.write_bytes(b"\x00" * 20)
    with pytest.raises(SoundvjError, match="not a readable .safetensors CLIP checkpoint"):
        build_clip(ClipConfig(checkpoint=str(junk_st)))
    with pytest.raises(SoundvjError, match="neither 'small' nor an open_clip model name"):
        build_clip(ClipConfig(architecture="ViT-Q-99"), require_checkpoint=False)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"image_size": 20}, "clip.image_size"),  # not a multiple of patch_size 8
        ({"vision_width": 40}, "clip.vision_width"),
        ({"caption_template": "no placeholder"}, "clip.caption_template"),
        ({"embed_dim": True}, "clip.embed_dim"),
    ],
)
def test_clip_config_rejects_bad_values(change, field):
    with pytest.raises(SoundvjError, match=field):
        dataclasses.replace(TINY_CLIP, **change)


# ---------------------------------------------------------------- losses


def test_logit_scale_starts_at_clip_temperature():
    scale = LogitScale()
    assert math.isclose(float(scale().detach()), 1 / 0.07, rel_tol=1e-6)
    with torch.no_grad():
        scale.value.fill_(10.0)
    assert math.isclose(float(scale().detach()), 100.0, rel_tol=1e-6)  # clamped like CLIP


def test_info_nce_matches_cross_entropy_and_rewards_alignment():
    torch.manual_seed(0)
    x = F.normalize(torch.randn(6, 8), dim=1)
    y = F.normalize(torch.randn(6, 8), dim=1)
    scale = torch.tensor(5.0)
    logits = scale * x @ y.T
    target = torch.arange(6)
    expected = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    assert torch.allclose(info_nce(x, y, scale), expected)
    # Unique labels are the same as no labels.
    assert torch.allclose(info_nce(x, y, scale, labels=torch.arange(6)), expected)
    # Aligned pairs cost far less than random ones.
    assert info_nce(x, x, torch.tensor(50.0)) < 0.01 < info_nce(x, y, torch.tensor(50.0))


def test_info_nce_with_labels_does_not_punish_same_class_pairs():
    # Two samples of class 0 with identical embeddings: instance InfoNCE cannot tell them apart
    # (loss >= log 2 per row); the label-aware loss counts both as positives.
    e = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=1)
    scale = torch.tensor(100.0)
    assert info_nce(e, e, scale) > 0.4
    assert info_nce(e, e, scale, labels=torch.tensor([0, 0, 1])) < 0.7 * math.log(2)


def test_info_nce_trains_the_temperature():
    scale = LogitScale()
    x = F.normalize(torch.randn(4, 8), dim=1)
    info_nce(x, x, scale()).backward()
    assert scale.value.grad is not None and scale.value.grad < 0  # aligned: a sharper softmax helps


def test_encoder_loss_terms():
    a = F.normalize(torch.randn(3, 8), dim=1)
    w_avg = torch.randn(16)
    w = w_avg.expand(3, 4, 16).clone()
    same = encoder_loss(a, a, a, w, w_avg, lambda_b=1.0)
    assert float(same["loss"]) == pytest.approx(0.0, abs=1e-6)
    e0, e1 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    w_off = w_avg + 2.0  # every entry 2 away: mean square 4
    parts = encoder_loss(e0, e1, -e0, w_off.view(1, 1, 16), w_avg, lambda_b=0.5)
    assert float(parts["image_audio"]) == pytest.approx(1.0)
    assert float(parts["image_text"]) == pytest.approx(2.0)
    assert float(parts["offset"]) == pytest.approx(4.0)
    assert float(parts["loss"]) == pytest.approx(1.0 + 2.0 + 0.5 * 4.0)


def test_least_squares_gan_losses():
    ones, zeros = torch.ones(2, 1, 3, 3), torch.zeros(2, 1, 3, 3)
    assert float(lsgan_discriminator_loss(ones, zeros)) == 0.0
    assert float(lsgan_discriminator_loss(zeros, ones)) == pytest.approx(1.0)
    assert float(lsgan_generator_loss(ones)) == 0.0
    assert float(lsgan_generator_loss(zeros)) == pytest.approx(0.5)


def test_spec_augment_masks_bands_and_spans_within_limits():
    mel = torch.rand(64, 40, 50) + 0.1  # nothing is zero before masking
    out = spec_augment(mel, torch.Generator().manual_seed(1))
    masked = out == 0
    freq_rows = masked.all(dim=2).sum(dim=1)  # fully masked mel bins per sample
    time_cols = masked.all(dim=1).sum(dim=1)  # fully masked time steps per sample
    assert int(freq_rows.max()) <= 2 * int(40 * 0.15) and int(time_cols.max()) <= 2 * int(50 * 0.30)
    assert int(freq_rows.max()) > 0 and int(time_cols.max()) > 0
    # Every zero lies in a masked row or column; everything else is untouched.
    explained = masked.all(dim=2, keepdim=True) | masked.all(dim=1, keepdim=True)
    assert torch.equal(masked, explained & masked) and torch.equal(out[~masked], mel[~masked])
    assert torch.equal(out, spec_augment(mel, torch.Generator().manual_seed(1)))
    assert not torch.equal(out, spec_augment(mel, torch.Generator().manual_seed(2)))


def test_level_shift_moves_each_window_by_one_gain_within_limits():
    mel = torch.rand(64, 40, 50) * 0.5 + 0.25  # room on both sides: nothing clamps at 10 dB of an 80 dB range
    out = level_shift(mel, 10.0, 80.0, torch.Generator().manual_seed(1))
    shift = out - mel
    per_window = shift[:, 0, 0]
    assert torch.allclose(shift, per_window.view(-1, 1, 1).expand_as(shift), atol=1e-6)  # one gain per window
    assert float(per_window.abs().max()) <= 10.0 / 80.0 + 1e-6
    assert float(per_window.max()) > 0.05 and float(per_window.min()) < -0.05  # louder and quieter both drawn
    assert torch.equal(out, level_shift(mel, 10.0, 80.0, torch.Generator().manual_seed(1)))
    edge = level_shift(torch.tensor([[[0.0, 0.99, 1.0]]]).repeat(8, 1, 1), 40.0, 80.0, torch.Generator().manual_seed(2))
    assert float(edge.min()) >= 0.0 and float(edge.max()) <= 1.0  # clamped as the front end clamps
    assert torch.equal(edge[:, 0, 0], torch.zeros(8))  # the floor (silence) stays silence at any gain
    assert torch.equal(level_shift(mel, 0.0, 80.0), mel)
    with pytest.raises(ValueError, match="level_shift"):
        level_shift(mel[0], 10.0, 80.0)


def test_mix_recordings_is_the_mean_power_of_its_parts():
    a = torch.rand(3, 40, 50)
    assert torch.allclose(mix_recordings(a, a, 80.0), a, atol=1e-5)  # a sound mixed with itself is itself
    b = torch.rand(3, 40, 50)
    mixed = mix_recordings(a, b, 80.0)
    expected_db = 10 * torch.log10((10 ** ((a - 1) * 8) + 10 ** ((b - 1) * 8)) / 2)  # 80 dB / 10 = 8
    assert torch.allclose(mixed, (expected_db / 80 + 1).clamp(0, 1), atol=1e-5)
    assert bool((mixed <= torch.maximum(a, b) + 1e-6).all()) and bool((mixed >= torch.minimum(a, b) - 1e-6).all())
    with_floor = mix_recordings(torch.full((1, 1, 1), 0.5), torch.zeros(1, 1, 1), 80.0)  # floor: half the power
    assert float(with_floor) == pytest.approx(0.5 - 10 * math.log10(2) / 80, abs=1e-4)
    with pytest.raises(ValueError, match="mix_recordings"):
        mix_recordings(a, b[:, :10], 80.0)


# ---------------------------------------------------------------- discriminators


def test_image_discriminator_scores_patches():
    d = ImageDiscriminator(width=8)
    assert d(torch.randn(2, 3, 64, 64)).shape == (2, 1, 4, 4)
    assert d(torch.randn(2, 3, 32, 32)).shape == (2, 1, 2, 2)
    with pytest.raises(ValueError, match="at least 32 px"):
        d(torch.randn(1, 3, 16, 16))


def test_video_discriminator_with_temporal_kernel_3_sees_frame_order():
    torch.manual_seed(0)
    clips = torch.randn(2, 3, 10, 32, 32)
    order = torch.randperm(10)
    d3 = VideoDiscriminator(width=4, temporal_kernel=3)
    out = d3(clips)
    assert out.shape == (2, 1, 10, 2, 2)
    # Kernel 1 (the official code) is blind to motion: shuffling frames only shuffles its scores.
    d1 = VideoDiscriminator(width=4, temporal_kernel=1)
    assert torch.allclose(d1(clips[:, :, order]), d1(clips)[:, :, order], atol=1e-5)
    assert not torch.allclose(d3(clips[:, :, order]), out[:, :, order], atol=1e-3)


@pytest.mark.parametrize("kind", ["image", "video"])
def test_conditional_discriminators_score_against_the_given_class(kind):
    torch.manual_seed(0)
    if kind == "image":
        d, x, plain = ImageDiscriminator(width=8, num_classes=3), torch.randn(2, 3, 32, 32), ImageDiscriminator(width=8)
    else:
        d, x, plain = (VideoDiscriminator(width=4, num_classes=3), torch.randn(2, 3, 4, 32, 32),
                       VideoDiscriminator(width=4))
    same, other = d(x, torch.tensor([0, 1])), d(x, torch.tensor([2, 1]))
    assert same.shape == plain(x).shape
    assert not torch.allclose(same[0], other[0]) and torch.equal(same[1], other[1])  # item 0's class only moves item 0
    same.mean().backward()
    assert d.class_embed.weight.grad[0].abs().sum() > 0 and d.class_embed.weight.grad[2].abs().sum() == 0
    with pytest.raises(ValueError, match="one class label per item"):
        d(x)
    with pytest.raises(ValueError, match="one class label per item"):
        d(x, torch.tensor([0]))
    with pytest.raises(ValueError, match="unconditional"):
        plain(x, torch.tensor([0, 1]))


# ---------------------------------------------------------------- core hook used by training


def test_latent_stepper_forward_is_rollout():
    """DDP wraps the stepper through forward(); it must be exactly rollout (noise draws included)."""
    from core.sound import LatentStepper, LatentStepperConfig

    torch.manual_seed(0)
    stepper = LatentStepper(LatentStepperConfig(num_ws=4, w_dim=8, hidden=6, num_layers=2, embed_dim=5, noise_dim=3))
    w0, w_hat, embed = torch.randn(2, 4, 8), torch.randn(2, 3, 4, 8), torch.randn(2, 3, 5)
    a = stepper(w0, w_hat, embed, 0.4, 0.5, torch.Generator().manual_seed(1))
    b = stepper.rollout(w0, w_hat, embed, 0.4, 0.5, torch.Generator().manual_seed(1))
    assert a.shape == (2, 3, 4, 8) and torch.equal(a, b)
