"""What a stage reads from outside its own run, frozen: the generator, and the checkpoints of earlier
stages (read with the sizes their config gave them; each stage module loads its own trained model from
such a checkpoint, e.g. `audio_encoder.trained_audio_encoder`).

The chain: `train clip` -> `train audio-encoder` (E_A) -> `train inverter` (E_I, E_A frozen) ->
`train stepper` (E_A, E_I frozen unless fine-tuned). Each later stage names the earlier checkpoints
(a run folder or its checkpoint.pt) in its config, so `train export` can follow the chain back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from core.errors import SoundvjError
from core.model_file import load_generator, model_kind, read_model_file
from core.stylegan3.networks import Generator
from training.loop import CHECKPOINT_NAME, load_checkpoint
from training.settings import from_dict
from training.stages import GENERATOR_FILE, GENERATOR_STAGE


def frozen(module: torch.nn.Module) -> torch.nn.Module:
    """Eval mode (BatchNorm uses its running statistics) and no gradients to the weights."""
    module.eval()
    module.requires_grad_(False)
    return module


def generator_path(spec: str) -> str:
    """The file a generator spec names: a `train generator` run folder (or its checkpoint.pt) becomes
    its exported G_ema; anything else ("default", a model file, a pickle) is returned as given."""
    path = Path(spec) if spec and spec != "default" else None
    if path is not None and (path.is_dir() or path.name == CHECKPOINT_NAME):
        folder = path if path.is_dir() else path.parent
        exported = folder / GENERATOR_FILE
        if not exported.is_file():
            raise SoundvjError(
                f"generator {spec!r}: no {GENERATOR_FILE} in {folder} (expected the run folder of "
                f"`train {GENERATOR_STAGE}`, a model file, an NVIDIA pickle or 'default')"
            )
        return str(exported)
    return spec or "default"


def generator_metadata(spec: str) -> dict[str, str]:
    """The free-form metadata of the generator's model file (e.g. its class names, read with
    `core.model_credits.class_names`); {} for a generator that is not a soundvj model file."""
    path = Path(generator_path(spec))
    if str(path) == "default" or not path.is_file() or model_kind(path) != "safetensors":
        return {}
    return dict(read_model_file(path).metadata)


def frozen_generator(spec: str, device: torch.device) -> Generator:
    """The generator the sound models are trained for: a model file, an NVIDIA pickle, "default", or
    the run folder (or its checkpoint.pt) of `train generator` (its exported G_ema)."""
    G = load_generator(generator_path(spec), device=device)
    return frozen(G)  # type: ignore[return-value]


def read_stage_checkpoint(path: str | Path, stage_name: str, key: str) -> dict:
    """The checkpoint of an earlier `train <stage_name>` run named by config field `key`; one-line errors."""
    if not str(path):
        raise SoundvjError(f"{key}: expected the run folder (or checkpoint.pt) of a `train {stage_name}` run")
    try:
        payload = load_checkpoint(path)
    except SoundvjError as e:
        raise SoundvjError(f"{key}: {e}") from None
    if payload.get("stage_name") != stage_name:
        raise SoundvjError(
            f"{key}: {path} is a checkpoint of `train {payload.get('stage_name')}`, expected one of `train {stage_name}`"
        )
    return payload


def stage_config_from(payload: dict, config_type: type, path: str | Path) -> Any:
    """The stage config a checkpoint was trained with, as `config_type`."""
    try:
        return from_dict(config_type, payload.get("config", {}).get("stage", {}), "stage")
    except SoundvjError as e:
        raise SoundvjError(f"{path}: its stage config no longer reads ({e})") from None


def module_state(payload: dict, name: str, path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of module `name` in a checkpoint's payload; a one-line error if it holds none."""
    modules = payload.get("modules", {})
    if name not in modules:
        raise SoundvjError(f"{path}: holds no {name!r} module (it has {sorted(modules)})")
    return modules[name]
