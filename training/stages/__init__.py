"""The training stages, each a small module on top of `training.loop`: a frozen `Config` dataclass (the
`stage:` section of its YAML) and `build(run_config, build_context) -> training.loop.Stage`.

`STAGE_MODULES` maps the CLI's stage names (`soundvj train <name>`, also recorded in checkpoints) to
their modules, imported only when a stage runs.
"""

from __future__ import annotations

import importlib
from types import ModuleType

STAGE_MODULES: dict[str, str] = {
    "clip": "training.stages.clip",
    "audio-encoder": "training.stages.audio_encoder",
    "inverter": "training.stages.inverter",
    "stepper": "training.stages.stepper",
}


def stage_module(name: str) -> ModuleType:
    """The module of stage `name` (one of STAGE_MODULES)."""
    return importlib.import_module(STAGE_MODULES[name])
