"""A training run's config: three sections, each a frozen dataclass, from a YAML file plus `--set key=value`.

```yaml
loop:   {steps: 2000, batch_size: 32, checkpoint_every: 200, ...}   # LoopConfig (below)
data:   {path: data/landscape, kind: video, fps: 24, ...}           # training.data.config.DataConfig
stage:  {lr: 1.0e-4, width: 8, ...}                                 # the stage module's Config
```

Each section is read and checked by `training.settings` (one-line errors naming the key). Fields marked
`resumable=True` (steps, logging intervals, device, ...) may change when a run is resumed; every other
field is part of the config's identity (`identity()`), which a resumed checkpoint must match.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from core.atomic_write import write_text_atomic
from core.errors import SoundvjError
from training.data.config import DataConfig
from training.settings import apply_overrides, from_dict, identity_differences, read_yaml, setting, to_dict


@dataclass(frozen=True)
class LoopConfig:
    """The loop's settings (the `loop:` section of a stage config)."""

    steps: int = setting(1000, min=1, resumable=True, help="total optimisation steps of the run")
    batch_size: int = setting(8, min=1, help="clips per batch, per process")
    seed: int = setting(0, min=0, help="seeds module init, data order and the per-rank RNG streams")
    checkpoint_every: int = setting(200, min=0, resumable=True, help="steps between checkpoints (0: only at the end)")
    log_every: int = setting(10, min=1, resumable=True, help="steps between scalar log rows")
    sample_every: int = setting(0, min=0, resumable=True, help="steps between sample grids/videos (0: only at the end)")
    num_workers: int = setting(0, min=0, max=64, resumable=True, help="DataLoader worker processes per rank")
    device: str = setting("auto", resumable=True, help="auto, cpu, cuda (torchrun: each rank its local GPU)")
    bf16: bool = setting(False, help="bf16 autocast on CUDA (ignored on CPU)")
    progress: bool = setting(True, resumable=True, help="show the tqdm progress bar (rank 0)")


@dataclass(frozen=True)
class RunConfig:
    """Everything one `soundvj train <stage>` run is configured by.

    `stage_name` comes from the command (`train inverter`), not from the YAML; `stage` is the stage
    module's own frozen `Config` dataclass.
    """

    stage_name: str
    loop: LoopConfig
    data: DataConfig
    stage: Any  # the stage module's Config


def load_run_config(
    stage_name: str,
    stage_config: type,
    path: str | Path | None,
    overrides: Sequence[str] = (),
    base: dict | None = None,
) -> RunConfig:
    """The run config of `soundvj train <stage_name>`: defaults <- YAML file <- `--set` overrides, checked.

    `base` (e.g. the config stored in a checkpoint being resumed) stands in for the YAML file when no
    `path` is given.
    """
    data = read_yaml(path) if path is not None else (base or {})
    data = apply_overrides(data, overrides)
    sections = {"loop": LoopConfig, "data": DataConfig, "stage": stage_config}
    unknown = sorted(str(k) for k in data if k not in sections)
    if unknown:
        raise SoundvjError(f"config: unknown section(s) {', '.join(unknown)}; expected loop, data and stage")
    built = {name: from_dict(cls, data.get(name), name) for name, cls in sections.items()}
    return RunConfig(stage_name=stage_name, **built)


def run_config_dict(config: RunConfig) -> dict:
    """The YAML-able form of a run config (without the stage name, which the command gives)."""
    return {"loop": to_dict(config.loop), "data": to_dict(config.data), "stage": to_dict(config.stage)}


def identity(config: RunConfig) -> dict:
    """The settings a resumed run must share with its checkpoint: all but the `resumable=True` fields."""

    def strip(obj: Any) -> Any:
        if not dataclasses.is_dataclass(obj):
            return to_dict(obj)
        return {f.name: strip(getattr(obj, f.name)) for f in dataclasses.fields(obj) if not f.metadata.get("resumable")}

    return {"stage_name": config.stage_name, "loop": strip(config.loop), "data": strip(config.data),
            "stage": strip(config.stage)}


def config_differences(saved_identity: dict, config: RunConfig) -> list[str]:
    """`identity_differences` between a checkpoint's identity and `config`, settings the checkpoint lacks
    counting as their defaults (what a resume and a recipe's staleness check both ask)."""
    defaults = identity(load_run_config(config.stage_name, type(config.stage), None, []))
    return identity_differences(saved_identity, identity(config), defaults=defaults)


def write_config_yaml(path: Path, config: RunConfig) -> None:
    """The resolved config as YAML (atomically), so a run directory says exactly what ran."""
    text = f"# soundvj train {config.stage_name}: the resolved config of this run\n"
    text += yaml.safe_dump(run_config_dict(config), sort_keys=False)
    write_text_atomic(path, text)
