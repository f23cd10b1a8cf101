"""The inverter's class-latent target: a conditional generator's class names read from its model file."""

from __future__ import annotations

import pytest
import torch

from core.errors import SoundvjError
from core.model_file import save_model
from core.stylegan3.networks import Generator
from training.stages.inverter import class_latents, generator_classes

TINY = dict(z_dim=8, w_dim=8, img_resolution=16, img_channels=3, channel_base=64, channel_max=8,
            mapping_kwargs={"num_layers": 2})


def _generator(c_dim: int) -> Generator:
    torch.manual_seed(0)
    return Generator(c_dim=c_dim, **TINY).eval()


def test_class_latents_follow_the_model_files_class_names(tmp_path):
    G = _generator(2)
    path = save_model(tmp_path / "g.safetensors", G, metadata={"training.classes": '["rain", "birds"]'})
    assert generator_classes(str(path)) == ["rain", "birds"]
    latents = class_latents(G, str(path), ("birds", "rain"), samples=32)  # the data's order differs
    assert latents.shape == (2, G.num_ws, G.w_dim)
    z = torch.randn([32, G.z_dim], generator=torch.Generator().manual_seed(0))
    birds = G.mapping(z, torch.tensor([[0.0, 1.0]]).expand(32, 2)).mean(dim=0)
    torch.testing.assert_close(latents[0], birds)
    assert not torch.allclose(latents[0], latents[1])


def test_class_latents_refuse_an_unconditional_or_mismatched_generator(tmp_path):
    plain = save_model(tmp_path / "plain.safetensors", _generator(0))
    with pytest.raises(SoundvjError, match="not a class-conditional"):
        class_latents(_generator(0), str(plain), ("a", "b"), samples=4)
    cond = save_model(tmp_path / "cond.safetensors", _generator(2), metadata={"training.classes": '["a", "b"]'})
    with pytest.raises(SoundvjError, match=r"\['fire'\] are not among"):
        class_latents(_generator(2), str(cond), ("a", "fire"), samples=4)
    assert generator_classes("default") is None
