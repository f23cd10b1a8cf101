"""A random-weights model with the sizes a recipe trains, to measure live speed before training ends.

    python benchmarks/recipe_sizes.py -o /tmp/demo-sized.safetensors            # training/recipes/demo.yaml
    python benchmarks/live.py --model /tmp/demo-sized.safetensors --seconds 30

The sizes are read from the recipe's `set:` values (generator: resolution, z/w dims, channels; the
classes from its data step's classes; CLIP embed_dim; stepper hidden, layers and noise) over each
stage's defaults, so the measurement follows the recipe. Weights are random: speed only, not looks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.model import SoundvjModel, save_full_model  # noqa: E402
from core.audio.mel import MelConfig  # noqa: E402
from core.sound import SoundModels  # noqa: E402
from core.sound.config import AudioEncoderConfig, InversionEncoderConfig, LatentStepperConfig, SoundModelsConfig  # noqa: E402
from core.stylegan3.networks import Generator  # noqa: E402
from training.recipes.recipe import load_recipe  # noqa: E402
from training.settings import read_yaml  # noqa: E402

CONFIGS = Path(__file__).resolve().parent.parent / "training" / "configs"


def stage_settings(recipe, stage: str, config_file: str) -> dict:
    """The stage's `stage:` defaults with the recipe's `--set stage.*` values over them."""
    settings = dict(read_yaml(CONFIGS / config_file).get("stage", {}))
    for step in recipe.steps:
        if step.stage == stage:
            for item in step.overrides:
                key, _, value = item.partition("=")
                if key.startswith("stage."):
                    settings[key[len("stage."):]] = value
    return settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="training/recipes/demo.yaml")
    ap.add_argument("--classes", type=int, default=6, help="c_dim of the conditional generator")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    recipe = load_recipe(args.recipe)
    g = stage_settings(recipe, "generator", "generator.yaml")
    s = stage_settings(recipe, "stepper", "stepper.yaml")
    a = stage_settings(recipe, "audio-encoder", "audio_encoder.yaml")
    i = stage_settings(recipe, "inverter", "inverter.yaml")
    embed = int(a.get("clip.embed_dim", a.get("clip", {}).get("embed_dim", 512)))
    torch.manual_seed(0)
    G = Generator(z_dim=int(g["z_dim"]), c_dim=args.classes, w_dim=int(g["w_dim"]), img_resolution=int(g["resolution"]),
                  img_channels=3, channel_base=int(g["channel_base"]), channel_max=int(g["channel_max"]),
                  mapping_kwargs={"num_layers": int(g["mapping_layers"])}).eval()
    config = SoundModelsConfig(
        audio_encoder=AudioEncoderConfig(width=int(a["width"]), embed_dim=embed),
        inversion_encoder=InversionEncoderConfig(num_ws=G.num_ws, w_dim=G.w_dim, width=int(i["width"])),
        latent_stepper=LatentStepperConfig(num_ws=G.num_ws, w_dim=G.w_dim, hidden=int(s["hidden"]),
                                           num_layers=int(s["num_layers"]), embed_dim=embed,
                                           noise_dim=int(s["noise_dim"])),
    )
    sound = SoundModels(config).eval()
    model = SoundvjModel(G, sound, MelConfig(), f"random weights at the sizes of {args.recipe}", False)
    path = save_full_model(args.output, model)
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in
              (("generator", G), ("audio_encoder", sound.audio_encoder), ("inversion_encoder", sound.inversion_encoder),
               ("latent_stepper", sound.latent_stepper))}
    print(f"wrote {path}: {path.stat().st_size / 1e6:.1f} MB; parameters " +
          ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in params.items()))


if __name__ == "__main__":
    main()
