"""Built-in model names: "random" is the random-weights generator; "default" is the shipped trained model
when core/assets/default.safetensors exists, else the random one."""

from __future__ import annotations

import json

import torch

import core.model_file as model_file
from core.cli import main
from core.model import load_model, save_full_model
from core.stylegan3.networks import Generator

TINY = dict(z_dim=8, c_dim=2, w_dim=8, img_resolution=16, img_channels=3, channel_base=64, channel_max=8,
            mapping_kwargs={"num_layers": 2})


def test_random_is_the_seeded_generator():
    a, b = model_file.load_generator("random"), model_file.load_generator("random")
    assert a.img_resolution == 128 and a.c_dim == 0
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_default_is_the_shipped_model_when_there_is_one(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SOUNDVJ_DEFAULT_MODEL")  # conftest pins the suite to the random weights
    monkeypatch.setattr(model_file, "SHIPPED_DEFAULT", tmp_path / "missing.safetensors")
    assert model_file.builtin_model_file("default") is None
    assert model_file.load_generator("default").img_resolution == 128  # falls back to random weights

    torch.manual_seed(0)
    random_model = load_model("random")
    shipped = tmp_path / "default.safetensors"
    G = Generator(**TINY).eval()
    random_model.generator = G
    random_model.metadata = {"training.classes": json.dumps(["rain", "fire"]), "training.credits": json.dumps(
        [{"file": "/usr/share/x/rain.ogg", "package": "megaglest-data", "licence": "CC-BY-SA-3.0",
          "credit": "The Glest Team", "class": "rain", "use": "train"}])}
    # Sound models sized for the tiny generator: the seeded ones.
    from core.model import seeded_sound_models

    random_model.sound = seeded_sound_models(G)
    save_full_model(shipped, random_model)
    monkeypatch.setattr(model_file, "SHIPPED_DEFAULT", shipped)

    assert model_file.builtin_model_file(None) == shipped and model_file.builtin_model_file("random") is None
    assert load_model("default").generator.img_resolution == 16
    assert load_model(None).metadata["training.classes"] == '["rain", "fire"]'
    assert load_model("random").generator.img_resolution == 128

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"default (embedded, trained: {shipped})" in out and "16x16 px" in out
    assert "classes:      rain, fire" in out and "1 from megaglest-data (CC-BY-SA-3.0)" in out
    assert main(["info", "random"]) == 0
    assert "random (embedded, random weights)" in capsys.readouterr().out


def test_the_environment_chooses_what_default_means(tmp_path, monkeypatch, capsys):
    G = Generator(**TINY).eval()
    path = model_file.save_model(tmp_path / "mine.safetensors", G)
    monkeypatch.setenv("SOUNDVJ_DEFAULT_MODEL", str(path))
    assert model_file.load_generator("default").img_resolution == 16
    assert model_file.load_generator("random").img_resolution == 128
    monkeypatch.setenv("SOUNDVJ_DEFAULT_MODEL", str(tmp_path / "nope.safetensors"))
    assert main(["info"]) == 2
    err = capsys.readouterr().err
    assert "SOUNDVJ_DEFAULT_MODEL=" in err and "no such model file" in err and err.count("\n") == 1


def test_the_shipped_default_is_small_trained_and_credited(tmp_path, monkeypatch, capsys):
    """core/assets/default.safetensors: the demo recipe's model, what `render`, `live` and the demo use."""
    from core.model_credits import class_names, credit_entries
    from core.video_writer import probe_media

    shipped = model_file.SHIPPED_DEFAULT
    assert shipped.is_file(), "core/assets/default.safetensors ships with the repository"
    assert shipped.stat().st_size <= 25 * 2**20
    monkeypatch.delenv("SOUNDVJ_DEFAULT_MODEL")  # conftest pins the suite to the random weights
    model = load_model(None)
    assert not model.sound_is_seeded
    assert sorted(class_names(model.metadata)) == ["birds", "engine", "fire", "night", "rain", "wind"]
    assert model.sound.config.uses_sound_embedding
    entries = credit_entries(model.metadata)
    sound_packages: dict[str, set[str]] = {}
    for e in entries:
        if e.get("kind") == "sound" and e.get("use") == "train":
            sound_packages.setdefault(e["class"], set()).add(e["package"])
    assert set(sound_packages) == {"birds", "engine", "fire", "night", "rain", "wind"}
    assert all(len(packages) >= 5 for packages in sound_packages.values()), sound_packages
    assert not [e for e in entries if str(e.get("package", "")).startswith(("wesnoth", "warzone2100"))]
    assert all(e.get("licence") and e.get("credit") for e in entries)

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"default (embedded, trained: {shipped})" in out and "classes:" in out and "megaglest-data" in out
    assert "listens with: aiSFX 0.1.2" in out and "CC-BY-4.0" in out

    video = tmp_path / "demo.mp4"
    assert main(["render", "--demo", "--seconds", "1", "--size", "128x128", "-o", str(video), "--quiet"]) == 0
    info = probe_media(video)
    assert info.frame_count == 24 and (info.width, info.height) == (128, 128) and info.has_audio
    assert "random weights" not in capsys.readouterr().out
