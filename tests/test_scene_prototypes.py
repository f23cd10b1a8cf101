"""E_I over the sound embedding with kinds of scene: the head classifies a sound into kinds and adds the
softmax-weighted mix of one learned scene offset per kind, so a confident choice lands on that kind's
scene; the choice is a linear read-out of the embedding, and the focus scales it. The model file carries the kinds and scenes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from core.errors import SoundvjError
from core.sound.config import InversionEncoderConfig
from core.sound.embedding_heads import EmbeddingInversionEncoder


def _head(prototypes: int = 3) -> EmbeddingInversionEncoder:
    torch.manual_seed(0)
    return EmbeddingInversionEncoder(InversionEncoderConfig(num_ws=4, w_dim=8, n_mels=96, backbone="embedding",
                                                            head_hidden=16, prototypes=prototypes)).eval()


def test_a_confident_choice_lands_on_its_scene():
    head = _head()
    scenes = torch.randn(3, 4, 8)
    head.set_scenes(scenes)
    with torch.no_grad():
        head.out.weight.zero_()  # no offset of its own: only the scenes remain
        head.out.bias.zero_()
        head.kind.weight.zero_()
        head.kind.bias.copy_(torch.tensor([0.0, 50.0, 0.0]))  # kind 1, whatever it hears
        w = head.from_embedding(torch.randn(5, 512))
    assert torch.allclose(w, (head.w_avg + scenes[1]).expand(5, 4, 8), atol=1e-5)


def test_the_kinds_mix_by_the_softmax_of_a_linear_read_out():
    head = _head()
    head.set_scenes(torch.randn(3, 4, 8))
    e = torch.randn(2, 512)
    with torch.no_grad():
        x = head.norm(e)
        expected = head.out(torch.nn.functional.gelu(head.hidden(x))) + (x @ head.kind.weight.T + head.kind.bias).softmax(1) @ head.scenes
        assert torch.allclose(head.kind_logits(e), x @ head.kind.weight.T + head.kind.bias, atol=1e-6)
        assert torch.allclose(head.offsets_from_embedding(e), expected.view(2, 4, 8), atol=1e-5)


def _scenes_only_head() -> tuple[EmbeddingInversionEncoder, torch.Tensor]:
    """A head whose offsets are only its mix of scenes, with scenes far apart."""
    head = _head()
    scenes = torch.randn(3, 4, 8) * 10
    head.set_scenes(scenes)
    with torch.no_grad():
        head.out.weight.zero_()
        head.out.bias.zero_()
    return head, scenes


def test_focus_settles_on_the_likeliest_kind_and_zero_focus_mixes_all_alike():
    head, scenes = _scenes_only_head()
    e = torch.randn(4, 512)
    with torch.no_grad():
        likeliest = head.kind_logits(e).argmax(dim=1)
        trained = head.offsets_from_embedding(e)
        settled = head.offsets_from_embedding(e, focus=1e4)
        even = head.offsets_from_embedding(e, focus=0.0)
        assert torch.equal(head.from_embedding(e), head.from_embedding(e, focus=1.0))  # 1 is the trained mix
    assert torch.allclose(settled, scenes[likeliest], atol=1e-3)
    assert torch.allclose(even, scenes.mean(dim=0).expand(4, 4, 8), atol=1e-4)
    # Higher focus moves each sound's latent toward its likeliest scene.
    assert ((settled - scenes[likeliest]).norm() < (trained - scenes[likeliest]).norm())


def test_without_prototypes_the_head_has_no_kinds():
    head = _head(prototypes=0)
    assert "scenes" not in head.state_dict() and not hasattr(head, "kind")
    with pytest.raises(SoundvjError, match="prototypes > 0"):
        head.kind_logits(torch.randn(1, 512))


def test_scenes_of_the_wrong_shape_are_refused():
    with pytest.raises(SoundvjError, match=r"scenes: expected \[3, 4, 8\]"):
        _head().set_scenes(torch.zeros(2, 4, 8))


@pytest.mark.parametrize("fields, message", [
    ({"prototypes": -1}, "prototypes: expected an integer in"),
    ({"prototypes": 3, "backbone": "resnet"}, "prototypes: needs backbone 'embedding'"),
    ({"prototypes": True, "backbone": "embedding"}, "prototypes: expected an integer"),
])
def test_bad_prototype_settings_give_one_line_errors(fields, message):
    with pytest.raises(SoundvjError, match=message):
        InversionEncoderConfig(**{"num_ws": 4, "w_dim": 8, "n_mels": 96, **fields})


def test_a_model_file_keeps_the_kinds_and_scenes(tmp_path):
    from core.model import load_model, save_full_model
    from core.sound import SoundModels
    from tests.pipeline_helpers import tiny_embedding_model

    model = tiny_embedding_model()
    config = model.sound.config
    inversion = dataclasses.replace(config.inversion_encoder, prototypes=3)
    sound = SoundModels(type(config)(config.audio_encoder, inversion, config.latent_stepper)).eval()
    sound.load_state_dict(model.sound.state_dict(), strict=False)  # E_A, the stepper and E_I's own head
    sound.inversion_encoder.set_scenes(torch.randn(3, inversion.num_ws, inversion.w_dim))
    model = type(model)(model.generator, sound.requires_grad_(False), model.mel_config, "test", False)
    path = save_full_model(tmp_path / "model.safetensors", model)
    loaded = load_model(path, device="cpu")
    assert loaded.sound.inversion_encoder.config.prototypes == 3
    e = torch.randn(4, 512)
    with torch.no_grad():
        assert torch.equal(loaded.sound.inversion_encoder.from_embedding(e), sound.inversion_encoder.from_embedding(e))
