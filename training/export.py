"""`soundvj train export`: the end product, one model file (generator + trained sound models + their
configs) that `soundvj render`, `soundvj info` and the live app load.

It starts from a `train stepper` run and follows the chain its config names (`stage.inverter`,
`stage.audio_encoder`, `stage.generator`); any link can be given explicitly instead, e.g. when the
runs were moved. A fine-tuned E_I in the stepper's checkpoint replaces the inverter run's.
The file is written by `core.model.save_full_model` (atomically).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from core.audio.mel import MelConfig
from core.errors import SoundvjError
from core.model import SoundvjModel, save_full_model
from core.sound import SoundModels, SoundModelsConfig
from training.pretrained import (
    STEPPER_STAGE,
    frozen_generator,
    module_state,
    read_stage_checkpoint,
    stage_config_from,
    trained_audio_encoder,
    trained_inversion_encoder,
)


def assemble_sound_models(
    stepper_run: str | Path,
    audio_encoder_run: str | Path | None = None,
    inverter_run: str | Path | None = None,
    generator: str | None = None,
) -> SoundvjModel:
    """The generator and the three trained sound models of a finished chain, on the CPU, eval mode."""
    from training.stages import stepper as stepper_stage

    cpu = torch.device("cpu")
    payload = read_stage_checkpoint(stepper_run, STEPPER_STAGE, "stepper run")
    config: stepper_stage.Config = stage_config_from(payload, stepper_stage.Config, stepper_run)
    G = frozen_generator(generator if generator is not None else config.generator, cpu)
    audio_path = audio_encoder_run if audio_encoder_run is not None else config.audio_encoder
    inverter_path = inverter_run if inverter_run is not None else config.inverter
    audio_encoder = trained_audio_encoder(audio_path, "--audio-encoder", cpu)
    inversion_encoder = trained_inversion_encoder(inverter_path, "--inverter", G, cpu)
    if "inversion_encoder" in payload.get("modules", {}):  # fine-tuned with the stepper
        inversion_encoder.load_state_dict(module_state(payload, "inversion_encoder", stepper_run))

    sound_config = SoundModelsConfig(
        audio_encoder=audio_encoder.config,
        inversion_encoder=inversion_encoder.config,
        latent_stepper=stepper_stage.model_config(config, G, audio_encoder.embed_dim),
    )
    sound = SoundModels(sound_config)
    sound.audio_encoder.load_state_dict(audio_encoder.state_dict())
    sound.inversion_encoder.load_state_dict(inversion_encoder.state_dict())
    try:
        sound.latent_stepper.load_state_dict(module_state(payload, "latent_stepper", stepper_run))
    except RuntimeError as e:
        raise SoundvjError(f"{stepper_run}: its latent stepper does not fit its config ({str(e).splitlines()[0]})") from None
    w_avg = G.mapping.w_avg.detach().cpu()
    for name, module in (("inverter", sound.inversion_encoder), ("stepper", sound.latent_stepper)):
        if not torch.allclose(module.w_avg, w_avg, atol=1e-5):
            raise SoundvjError(
                f"the {name} was trained for another generator (its w_avg differs from this generator's); "
                "export with the generator the chain was trained with"
            )
    source = f"soundvj train export of {stepper_run}"
    return SoundvjModel(G, sound.eval().requires_grad_(False), MelConfig(), source, False)


def export_model(
    out: str | Path,
    stepper_run: str | Path,
    audio_encoder_run: str | Path | None = None,
    inverter_run: str | Path | None = None,
    generator: str | None = None,
) -> Path:
    """Write the model file `out` from a finished chain (see `assemble_sound_models`)."""
    model = assemble_sound_models(stepper_run, audio_encoder_run, inverter_run, generator)
    return save_full_model(out, model)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `soundvj train export` (the CLI module adds the parser, this fills it)."""
    parser.add_argument("stepper", help="run folder (or checkpoint.pt) of `train stepper`")
    parser.add_argument("-o", "--output", required=True, help="model file to write (.safetensors)")
    parser.add_argument("--audio-encoder", default=None, help="`train audio-encoder` run (default: the one the stepper used)")
    parser.add_argument("--inverter", default=None, help="`train inverter` run (default: the one the stepper used)")
    parser.add_argument("--generator", default=None, help="generator file or 'default' (default: the stepper's)")


def run(args: argparse.Namespace) -> int:
    path = export_model(args.output, args.stepper, args.audio_encoder, args.inverter, args.generator)
    print(f"soundvj: wrote {path} (generator + trained sound models); try `soundvj info {path}`", file=sys.stderr)
    return 0


__all__ = ["add_arguments", "assemble_sound_models", "export_model", "run"]
