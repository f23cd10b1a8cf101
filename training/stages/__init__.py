"""The training stages and their one registry.

Each stage is a small module on top of `training.loop`: a frozen `Config` dataclass (the `stage:`
section of its YAML) and `build(run_config, build_context) -> training.loop.Stage`. `STAGES` maps the
stage names (`soundvj train <name>`, also recorded in checkpoints and named in recipes) to the module,
its default config file in `training/configs/` and its help line. A stage's module is imported only
when that stage runs (`stage_module`), so listing the stages costs nothing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Sequence

from core.errors import SoundvjError
from training.config import RunConfig, load_run_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

# Stage names as the CLI spells them (`soundvj train <name>`), which checkpoints record.
CLIP_STAGE = "clip"
AUDIO_ENCODER_STAGE = "audio-encoder"
INVERTER_STAGE = "inverter"
STEPPER_STAGE = "stepper"
CLASSIFIER_STAGE = "classifier"
GENERATOR_STAGE = "generator"
# G_ema as a model file, which `train generator` writes in its run folder at every checkpoint; later stages
# name that run folder as their generator.
GENERATOR_FILE = "generator.safetensors"


@dataclass(frozen=True)
class StageEntry:
    """Where a stage lives: its module, its default config file (in training/configs/) and its help line."""

    module: str
    config_file: str
    help: str


STAGES: dict[str, StageEntry] = {
    CLIP_STAGE: StageEntry("training.stages.clip", "clip.yaml",
                           "train a small open_clip model on a dataset's frames and class captions"),
    AUDIO_ENCODER_STAGE: StageEntry("training.stages.audio_encoder", "audio_encoder.yaml",
                                    "stage 1: the audio encoder E_A into CLIP space (InfoNCE)"),
    INVERTER_STAGE: StageEntry("training.stages.inverter", "inverter.yaml",
                               "stage 2: the sound inversion encoder E_I (L_enc)"),
    STEPPER_STAGE: StageEntry("training.stages.stepper", "stepper.yaml",
                              "stage 3: the latent stepper, with image and video discriminators"),
    CLASSIFIER_STAGE: StageEntry("training.stages.classifier", "classifier.yaml",
                                 "an image classifier trained only on real images: the second judge of "
                                 "`eval --classifier`"),
    GENERATOR_STAGE: StageEntry("training.stages.generator", "generator.yaml",
                                "a StyleGAN3 generator (T or R) from an image folder (a folder per class: conditional)"),
}


def stage_module(name: str) -> ModuleType:
    """The module of stage `name` (a key of STAGES); a one-line error if this install lacks it."""
    entry = STAGES[name]
    try:
        return importlib.import_module(entry.module)
    except ModuleNotFoundError as e:
        if e.name and entry.module.startswith(e.name):
            raise SoundvjError(f"train {name}: this stage is not available in this version ({entry.module})") from None
        raise


def stage_run_config(stage: str, overrides: Sequence[str], data: str | None = None,
                     config: str | None = None, base: dict | None = None) -> RunConfig:
    """The RunConfig `soundvj train STAGE [--data D] [--config F] [--set ...]` runs: the config file (else,
    unless resuming from `base`, the stage's default file), then `--data`, then the `--set` overrides."""
    entry = STAGES[stage]
    module = stage_module(stage)
    config_path = Path(config) if config else None
    if config_path is None and base is None:
        default = CONFIG_DIR / entry.config_file
        config_path = default if default.exists() else None
    all_overrides = ([f"data.path={data}"] if data else []) + list(overrides)
    return load_run_config(stage, module.Config, config_path, all_overrides, base=base)
