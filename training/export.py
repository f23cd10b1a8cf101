"""`soundvj train export`: the end product, one model file (generator + trained sound models + their
configs) that `soundvj render`, `soundvj info` and the live app load.

It starts from a `train stepper` run and follows the chain its config names (`stage.inverter`,
`stage.audio_encoder`, `stage.generator`); the audio-encoder and inverter runs can be given too, and
then replace the named ones (e.g. when the runs were moved). A fine-tuned E_I in the stepper's checkpoint replaces the inverter run's.
The file is written by `core.model.save_full_model` (atomically).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from core.sound.sound_embedding import mel_config_for
from core.errors import SoundvjError, one_line
from core.model import SoundvjModel, save_full_model
from core.model_credits import CREDITS_KEY
from core.sound import SoundModels, SoundModelsConfig
from training.loop import load_checkpoint
from training.stages import AUDIO_ENCODER_STAGE, INVERTER_STAGE, STEPPER_STAGE
from training.stages import stepper as stepper_stage
from training.stages.audio_encoder import trained_audio_encoder
from training.stages.inverter import trained_inversion_encoder
from training.stages.pretrained import (
    frozen_generator,
    generator_metadata,
    module_state,
    read_stage_checkpoint,
    stage_config_from,
)


def assemble_sound_models(
    stepper_run: str | Path,
    audio_encoder_run: str | Path | None = None,
    inverter_run: str | Path | None = None,
    generator: str | None = None,
) -> SoundvjModel:
    """The generator and the three trained sound models of a finished chain, on the CPU, eval mode."""
    cpu = torch.device("cpu")
    payload = read_stage_checkpoint(stepper_run, STEPPER_STAGE, "stepper run")
    config: stepper_stage.Config = stage_config_from(payload, stepper_stage.Config, stepper_run)
    generator_spec = generator if generator is not None else config.generator
    G = frozen_generator(generator_spec, cpu)
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
        reason = one_line(e, first_line_only=True)
        raise SoundvjError(f"{stepper_run}: its latent stepper does not fit its config ({reason})") from None
    w_avg = G.mapping.w_avg.detach().cpu()
    for name, module in (("inverter", sound.inversion_encoder), ("stepper", sound.latent_stepper)):
        if not torch.allclose(module.w_avg, w_avg, atol=1e-5):
            raise SoundvjError(
                f"the {name} was trained for another generator (its w_avg differs from this generator's); "
                "export with the generator the chain was trained with"
            )
    source = f"soundvj train export of {stepper_run}"
    # The generator file's own metadata (its class names, its training data) travels into the model.
    mel = mel_config_for(audio_encoder.config.backbone)
    return SoundvjModel(G, sound.eval().requires_grad_(False), mel, source, False,
                        generator_metadata(generator_spec))


MAX_CREDITS_BYTES = 256 * 1024  # the credits ride in the safetensors header; a data set's list is a few kB


def read_credits(path: str | Path) -> str:
    """The training data's credits file (JSON: a list of per-file entries, or an object), as compact JSON."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SoundvjError(f"--credits {str(path)!r}: cannot read it ({e.strerror or e})") from None
    if len(raw) > MAX_CREDITS_BYTES:
        raise SoundvjError(f"--credits {str(path)!r}: {len(raw)} bytes; expected at most {MAX_CREDITS_BYTES}")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SoundvjError(f"--credits {str(path)!r}: not JSON ({e})") from None
    if not isinstance(data, (list, dict)):
        raise SoundvjError(f"--credits {str(path)!r}: expected a JSON list or object")
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def export_model(out: str | Path, runs: list[str | Path], generator: str | None = None,
                 credits: str | Path | None = None) -> Path:
    """Write the model file `out` from the run folders (or checkpoints) of a finished chain.

    `runs` must include a `train stepper` run; `train audio-encoder` / `train inverter` runs among them
    replace the ones the stepper's config names; `train clip` runs are not part of the model and ignored.
    `credits`: the training data's credits JSON (e.g. `soundvj data demo`'s credits.json), stored in the
    file's metadata as `training.credits` so `soundvj info` names the data and its licences.
    """
    credits_text = read_credits(credits) if credits is not None else None
    by_stage: dict[str, str | Path] = {}
    for run_path in runs:
        stage = read_checkpoint_stage(run_path)
        if stage in by_stage:
            raise SoundvjError(f"{run_path}: a second `train {stage}` run (the first: {by_stage[stage]}); give one of each")
        by_stage[stage] = run_path
    if STEPPER_STAGE not in by_stage:
        raise SoundvjError(
            f"train export: none of {', '.join(str(r) for r in runs)} is a `train stepper` run; "
            "export needs the stepper (it names the audio-encoder and inverter runs it used)"
        )
    model = assemble_sound_models(
        by_stage[STEPPER_STAGE], by_stage.get(AUDIO_ENCODER_STAGE), by_stage.get(INVERTER_STAGE), generator
    )
    if credits_text is not None:
        model.metadata[CREDITS_KEY] = credits_text
    return save_full_model(out, model)


def read_checkpoint_stage(path: str | Path) -> str:
    """Which `train <stage>` wrote the checkpoint at `path` (a run folder or a checkpoint file)."""
    return str(load_checkpoint(path).get("stage_name"))


def run_cli(args: argparse.Namespace) -> int:
    """`soundvj train export RUN_DIR... -o OUT [--generator MODEL]` (arguments defined in training.cli)."""
    path = export_model(args.output, list(args.runs), args.generator, getattr(args, "credits", None))
    print(f"soundvj: wrote {path} (generator + trained sound models); try `soundvj info {path}`", file=sys.stderr)
    return 0


__all__ = ["assemble_sound_models", "export_model", "run_cli"]
