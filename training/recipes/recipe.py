"""Recipes: a chain of soundvj commands (data -> generator -> clip -> ... -> export -> eval) run in pieces.

A recipe is a YAML file (see `training/recipes/demo.yaml`)::

    name: demo
    vars: {data: runs/demo/data, runs: runs/demo}     # {data}, {runs} expand in every string below
    state: demo-state                                 # beside the recipe file (the default <name>-state)
    piece_hours: 2.0                                  # one `soundvj train recipe` call runs at most this long
    steps:
      - name: data                                    # a plain soundvj command, done when `creates` exists
        command: [data, demo, "{data}"]
        creates: "{data}/credits.json"
      - name: generator                               # a training stage: `soundvj train <stage> --out {runs}/<name>`
        stage: generator
        args: [--data, "{data}/images"]
        set: {loop.steps: 6000}

`soundvj train recipe RECIPE` walks the steps in order. A finished step is skipped. A stage whose run
folder holds a checkpoint is resumed from it. When the piece's time is up, the running stage gets SIGTERM
(the loop finishes its step and writes a checkpoint) and the call ends; the next call continues there.

Why a state folder: the run folders are large and stay on the machine that ran them, but a later piece
may run on a fresh machine. After every piece each stage's checkpoint is copied into the state folder
(the recipe's small memory, which whoever runs the recipe carries between machines; git ignores
`training/recipes/*-state/`, so it never enters the repository): a finished stage keeps only its weights
and config (no optimiser state), the stage in progress its whole checkpoint. A missing run folder is
restored from there.

A changed recipe retrains what it changed, and what reads it. A stage whose run was made with other
settings than the recipe's now (compared as a resume compares them) starts again; one that only needs
more steps (a larger loop.steps) resumes when its full checkpoint is there. A step that reads another
step's output (its run folder or `creates` path appears in its arguments) and is older than that output
runs again. A run folder that is replaced is renamed `<name>.replaced-<UTC time>`, never deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from core.atomic_write import atomic_path, write_text_atomic
from core.errors import SoundvjError
from training.config import RunConfig, config_differences
from training.loop import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from training.settings import read_yaml
from training.stages import STAGES, stage_run_config

DONE_NAME = "DONE"
# After SIGTERM a stage finishes its step and writes a checkpoint; a generator step can take a while.
STOP_GRACE_SECONDS = 300.0
_STEP_KEYS = {"name", "command", "stage", "args", "set", "creates", "keep", "state_precision"}
_TOP_KEYS = {"name", "vars", "state", "piece_hours", "max_state_mb", "steps"}


@dataclass(frozen=True)
class RecipeStep:
    """One step: a training stage (resumable) or a plain command (done when `creates` exists)."""

    name: str
    stage: str | None = None
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    creates: str | None = None
    keep: tuple[str, ...] = ()  # files of the run folder that later steps read (carried in the state)
    # "half": a finished stage's weights are carried as float16 (half the carried size) - for frozen
    # inputs of later steps whose exact bits do not matter (e.g. a CLIP with a 49k-token embedding).
    state_precision: str = "full"


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    variables: dict[str, str]
    state_dir: Path
    piece_hours: float
    steps: tuple[RecipeStep, ...] = field(default_factory=tuple)
    # An unfinished stage's whole checkpoint (with optimiser state) is carried only up to this size;
    # a larger one restarts on a fresh machine instead of bloating the carried state.
    max_state_mb: float = 20.0

    @property
    def runs_dir(self) -> Path:
        return Path(self.variables.get("runs", f"runs/{self.name}"))

    def run_dir(self, step: RecipeStep) -> Path:
        return self.runs_dir / step.name


def _expand(text: str, variables: dict[str, str], where: str) -> str:
    try:
        return str(text).format(**variables)
    except (KeyError, IndexError, ValueError) as e:
        raise SoundvjError(f"{where}: cannot expand {text!r} ({e}); known names: {sorted(variables)}") from None


def load_recipe(path: str | Path, variables: dict[str, str] | None = None, state_dir: str | Path | None = None) -> Recipe:
    """Read and check a recipe file; `variables` override its `vars`, `state_dir` its state folder (e.g. a
    second, independent run of the same recipe). One-line errors name the field."""
    path = Path(path)
    data = read_yaml(path)
    where = str(path)
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise SoundvjError(f"{where}: unknown key {unknown[0]!r}; expected {sorted(_TOP_KEYS)}")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise SoundvjError(f"{where}: 'name' must be a non-empty string")
    raw_vars = data.get("vars", {}) or {}
    if not isinstance(raw_vars, dict) or not all(isinstance(v, (str, int, float)) for v in raw_vars.values()):
        raise SoundvjError(f"{where}: 'vars' must map names to strings")
    merged = {str(k): str(v) for k, v in raw_vars.items()}
    merged.update(variables or {})
    merged = {k: _expand(v, merged, f"{where}: vars.{k}") for k, v in merged.items()}
    piece_hours = data.get("piece_hours", 2.0)
    if isinstance(piece_hours, bool) or not isinstance(piece_hours, (int, float)) or not 0 < piece_hours <= 24:
        raise SoundvjError(f"{where}: 'piece_hours' must be a number of hours in (0, 24], got {piece_hours!r}")
    max_state_mb = data.get("max_state_mb", 20.0)
    if isinstance(max_state_mb, bool) or not isinstance(max_state_mb, (int, float)) or max_state_mb < 0:
        raise SoundvjError(f"{where}: 'max_state_mb' must be a number of megabytes >= 0, got {max_state_mb!r}")
    state = data.get("state", f"{name}-state")
    if not isinstance(state, str) or not state:
        raise SoundvjError(f"{where}: 'state' must be a folder name")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise SoundvjError(f"{where}: 'steps' must be a non-empty list")
    steps: list[RecipeStep] = []
    for i, raw in enumerate(raw_steps):
        at = f"{where}: steps[{i}]"
        if not isinstance(raw, dict):
            raise SoundvjError(f"{at}: expected a mapping with name and stage or command")
        unknown = sorted(set(raw) - _STEP_KEYS)
        if unknown:
            raise SoundvjError(f"{at}: unknown key {unknown[0]!r}; expected {sorted(_STEP_KEYS)}")
        step_name = raw.get("name")
        if not isinstance(step_name, str) or not step_name or "/" in step_name:
            raise SoundvjError(f"{at}: 'name' must be a plain folder name")
        if any(s.name == step_name for s in steps):
            raise SoundvjError(f"{at}: step name {step_name!r} is used twice")
        if ("stage" in raw) == ("command" in raw):
            raise SoundvjError(f"{at} ({step_name}): give exactly one of 'stage' or 'command'")
        at = f"{where}: step {step_name}"

        def strings(key: str) -> tuple[str, ...]:
            value = raw.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
                raise SoundvjError(f"{at}: '{key}' must be a list of strings")
            return tuple(_expand(str(v), merged, f"{at}.{key}") for v in value)

        overrides_raw = raw.get("set", {}) or {}
        if not isinstance(overrides_raw, dict):
            raise SoundvjError(f"{at}: 'set' must map config keys to values")
        overrides = tuple(f"{k}={_expand(_yaml_scalar(v), merged, f'{at}.set.{k}')}" for k, v in overrides_raw.items())
        stage = raw.get("stage")
        if stage is not None:
            if stage not in STAGES:
                raise SoundvjError(f"{at}: unknown stage {stage!r}; expected one of {sorted(STAGES)}")
            if "creates" in raw:
                raise SoundvjError(f"{at}: 'creates' is for commands; a stage is done when its run ends")
        command = strings("command")
        if stage is None and not command:
            raise SoundvjError(f"{at}: 'command' must not be empty")
        if stage is None and overrides:
            raise SoundvjError(f"{at}: 'set' is for stages; put the command's options in 'command'")
        creates = raw.get("creates")
        if creates is not None and not isinstance(creates, str):
            raise SoundvjError(f"{at}: 'creates' must be a path")
        precision = raw.get("state_precision", "full")
        if precision not in ("full", "half"):
            raise SoundvjError(f"{at}: 'state_precision' must be full or half, got {precision!r}")
        steps.append(RecipeStep(
            name=step_name, stage=stage, command=command, args=strings("args"), overrides=overrides,
            creates=_expand(creates, merged, f"{at}.creates") if creates else None, keep=strings("keep"),
            state_precision=precision,
        ))
    return Recipe(name=name, path=path, variables=merged,
                  state_dir=Path(state_dir) if state_dir is not None else (path.parent / state),
                  piece_hours=float(piece_hours), steps=tuple(steps), max_state_mb=float(max_state_mb))


def _yaml_scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


# ---------------------------------------------------------------------------------------------
# State carried between machines


def copy_file_atomic(src: Path, dst: Path) -> None:
    """Copy `src` to `dst` so that `dst` is never half a copy (a killed piece leaves the old one)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _strip_for_later_steps(src: Path, dst: Path, half: bool = False) -> None:
    """A finished stage's checkpoint without optimiser, scheduler and RNG state: what later steps read
    (with `half`, its float32 weights as float16; loading casts them back)."""
    payload = load_checkpoint(src)
    for key in ("optimizers", "schedulers", "rng", "pending_losses"):
        payload.pop(key, None)
    if half:
        payload["modules"] = {name: {k: v.half() if v.dtype == torch.float32 else v for k, v in state.items()}
                              for name, state in payload.get("modules", {}).items()}
    payload["finished"] = True
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(dst, payload)


def save_state(recipe: Recipe, step: RecipeStep, log: Callable[[str], None] = lambda text: None) -> None:
    """Copy what later pieces need of `step` into the recipe's state folder."""
    run_dir, state = recipe.run_dir(step), recipe.state_dir / step.name
    done = (run_dir / DONE_NAME).exists()
    checkpoint = run_dir / CHECKPOINT_NAME
    if step.stage and checkpoint.exists():
        if done:
            _strip_for_later_steps(checkpoint, state / CHECKPOINT_NAME, step.state_precision == "half")
        elif checkpoint.stat().st_size <= recipe.max_state_mb * 1e6:
            copy_file_atomic(checkpoint, state / CHECKPOINT_NAME)
        else:
            (state / CHECKPOINT_NAME).unlink(missing_ok=True)  # an older carried one would not match
            log(f"[{step.name}] not carried: its checkpoint is {checkpoint.stat().st_size / 1e6:.0f} MB "
                f"(max_state_mb {recipe.max_state_mb:g}); on a fresh machine this stage starts again")
    for name in step.keep:
        if (run_dir / name).exists():
            copy_file_atomic(run_dir / name, state / name)
    if done:
        state.mkdir(parents=True, exist_ok=True)
        write_text_atomic(state / DONE_NAME, (run_dir / DONE_NAME).read_text())


def restore_state(recipe: Recipe, step: RecipeStep) -> bool:
    """Fill a missing run folder from the state folder. True if anything was restored."""
    run_dir, state = recipe.run_dir(step), recipe.state_dir / step.name
    if not state.is_dir() or (run_dir / CHECKPOINT_NAME).exists() or (run_dir / DONE_NAME).exists():
        return False
    restored = False
    for src in sorted(state.iterdir()):
        if src.is_file() and not src.name.startswith("."):
            copy_file_atomic(src, run_dir / src.name)
            restored = True
    return restored


def step_status(recipe: Recipe, step: RecipeStep) -> str:
    """'done', 'started' (a checkpoint to resume from), 'to do', 'stale' (made with other settings, or older
    than an input: it runs again) or 'more' (done, but the recipe asks for more steps), counting what the
    state folder carries for a fresh machine (a run restores it before the step runs)."""
    if is_done(recipe, step):
        stale = why_stale(recipe, step)
        return "done" if stale is None else stale[0]
    if step.stage is None:
        return "to do"
    state = recipe.state_dir / step.name
    if (state / DONE_NAME).exists():
        return "done"
    if (recipe.run_dir(step) / CHECKPOINT_NAME).exists() or (state / CHECKPOINT_NAME).exists():
        return "started"
    return "to do"


def is_done(recipe: Recipe, step: RecipeStep) -> bool:
    if step.stage is None and step.creates is not None:
        return Path(step.creates).exists()
    return (recipe.run_dir(step) / DONE_NAME).exists()


# ---------------------------------------------------------------------------------------------
# Staleness: what a changed recipe, or a retrained earlier step, makes out of date


def _outputs(recipe: Recipe, step: RecipeStep) -> list[Path]:
    """The paths through which later steps read `step` (its run folder, or what it creates and the folder
    that holds it unless that is the whole runs folder)."""
    if step.stage is None and step.creates is not None:
        created = Path(step.creates)
        return [created] if created.parent.resolve() == recipe.runs_dir.resolve() else [created, created.parent]
    return [recipe.run_dir(step)]


def _output_time(recipe: Recipe, step: RecipeStep) -> float | None:
    """When `step`'s present output was made: its `creates`, DONE or (in progress) checkpoint."""
    if step.stage is None and step.creates is not None:
        candidates = [Path(step.creates)]
    else:
        candidates = [recipe.run_dir(step) / DONE_NAME, recipe.run_dir(step) / CHECKPOINT_NAME]
    for path in candidates:
        if path.exists():
            return path.stat().st_mtime
    return None


def _mentions(step: RecipeStep, path: Path) -> bool:
    target = os.path.normpath(str(path))
    for text in (*step.command, *step.args, *(o.partition("=")[2] for o in step.overrides)):
        text = os.path.normpath(text) if text else text
        if text == target or text.startswith(target + os.sep):
            return True
    return False


def newer_inputs(recipe: Recipe, step: RecipeStep) -> list[str]:
    """Earlier steps that `step` reads and whose output is newer than its own (it must run again)."""
    own = _output_time(recipe, step)
    if own is None:
        return []
    out = []
    for earlier in recipe.steps[: recipe.steps.index(step)]:
        made = _output_time(recipe, earlier) if is_done(recipe, earlier) else None
        if made is not None and made > own and any(_mentions(step, p) for p in _outputs(recipe, earlier)):
            out.append(earlier.name)
    return out


def _recipe_run_config(step: RecipeStep) -> RunConfig:
    """The RunConfig `step_argv` would give the stage now (its --data / --config and `set`)."""
    options = {arg: value for arg, value in zip(step.args, step.args[1:]) if arg in ("--data", "--config")}
    return stage_run_config(step.stage, step.overrides, data=options.get("--data"), config=options.get("--config"))


def settings_differences(recipe: Recipe, step: RecipeStep) -> tuple[list[str], bool]:
    """(how the run folder's checkpoint was configured unlike the recipe's stage now, True if only
    loop.steps grew and the full checkpoint is there to resume). ([], False) when nothing differs."""
    checkpoint = recipe.run_dir(step) / CHECKPOINT_NAME
    if step.stage is None or not checkpoint.exists():
        return [], False
    payload = load_checkpoint(checkpoint)
    config = _recipe_run_config(step)
    if payload.get("stage_name") != step.stage:
        return [f"written by `train {payload.get('stage_name')}`, not `train {step.stage}`"], False
    differences = config_differences(payload.get("identity", {}), config)
    saved_steps = int(payload.get("config", {}).get("loop", {}).get("steps", config.loop.steps))
    done = (recipe.run_dir(step) / DONE_NAME).exists()
    if done and saved_steps != config.loop.steps:
        differences.append(f"loop.steps: {saved_steps} in the run, {config.loop.steps} now")
        more_only = len(differences) == 1 and config.loop.steps > saved_steps and "optimizers" in payload
        return differences, more_only
    return differences, False


def _set_aside(path: Path, log: Callable[[str], None]) -> None:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.replaced-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.replaced-{stamp}-{n}")
    os.replace(path, target)
    log(f"kept the old one as {target}")


def _forget_state(recipe: Recipe, step: RecipeStep) -> None:
    """Drop what the state folder carries for `step` (it is about to be made again)."""
    state = recipe.state_dir / step.name
    for name in (DONE_NAME, CHECKPOINT_NAME, *step.keep):
        (state / name).unlink(missing_ok=True)


def why_stale(recipe: Recipe, step: RecipeStep) -> tuple[str, str] | None:
    """("stale" | "more", why) for a step that exists but must run again, else None: a stage made with
    other settings than the recipe's (or "more": only loop.steps grew and its full checkpoint is there),
    or any step older than an output it reads."""
    newer = newer_inputs(recipe, step)
    older = f"older than {', '.join(newer)}" if newer else ""
    if step.stage is None:
        return ("stale", older) if older and is_done(recipe, step) else None
    if not recipe.run_dir(step).exists():
        return None
    differences, more_only = settings_differences(recipe, step)
    if more_only and not older:
        return "more", differences[0]
    if not differences and not older:
        return None
    reason = "; ".join(differences[:3]) + (f" (and {len(differences) - 3} more)" if len(differences) > 3 else "")
    return "stale", "; ".join(x for x in (reason, older) if x)


def refresh_stale(recipe: Recipe, step: RecipeStep, log: Callable[[str], None]) -> None:
    """Make `step` run again if `why_stale`: a stage's old run folder is set aside (or, for more steps
    only, resumed); a command's old output is set aside and the command runs again."""
    stale = why_stale(recipe, step)
    if stale is None:
        return
    kind, reason = stale
    run_dir = recipe.run_dir(step)
    if kind == "more":
        log(f"[{step.name}] {reason}: resuming it for the extra steps")
        (run_dir / DONE_NAME).unlink(missing_ok=True)
        (recipe.state_dir / step.name / DONE_NAME).unlink(missing_ok=True)
        return
    if step.stage is None:
        log(f"[{step.name}] {reason}: running it again")
        if step.creates is None:
            (run_dir / DONE_NAME).unlink(missing_ok=True)
        else:
            _set_aside(Path(step.creates), log)
        return
    log(f"[{step.name}] made with other settings or inputs ({reason}): training it again")
    _set_aside(run_dir, log)
    _forget_state(recipe, step)


# ---------------------------------------------------------------------------------------------
# Running


def step_argv(recipe: Recipe, step: RecipeStep) -> list[str]:
    """The soundvj arguments that run `step` (resuming a stage when its run folder has a checkpoint)."""
    if step.stage is None:
        return list(step.command)
    run_dir = recipe.run_dir(step)
    argv = ["train", step.stage, "--out", str(run_dir), *step.args]
    for item in step.overrides:
        argv += ["--set", item]
    if (run_dir / CHECKPOINT_NAME).exists():
        argv += ["--resume"]
    return argv


@dataclass(frozen=True)
class PieceResult:
    finished: bool  # every step is done
    ran: tuple[str, ...]
    paused_at: str | None  # the step stopped by the piece's deadline (or by a signal)
    stopped_by: int | None = None  # signal.SIGTERM / signal.SIGINT when a signal ended the piece


class _Stopped(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _run_until(argv: list[str], deadline: float, log: Callable[[str], None]) -> int | None:
    """Run `soundvj ARGV`; at the deadline send SIGTERM and wait for its checkpoint. None if paused."""
    cmd = [sys.executable, "-m", "core.cli", *argv]
    proc = subprocess.Popen(cmd)
    try:
        while True:
            try:
                return proc.wait(timeout=max(0.1, min(5.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    break
        log("piece time is up: asking the stage to write its checkpoint (SIGTERM)")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()  # the previous checkpoint stays valid
            proc.wait()
        return None
    except BaseException:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise


def run_recipe(
    recipe: Recipe,
    hours: float | None = None,
    only: str | None = None,
    log: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True),
) -> PieceResult:
    """Run the recipe's unfinished steps in order for at most `hours` (default: its `piece_hours`)."""
    budget = (hours if hours is not None else recipe.piece_hours) * 3600.0
    deadline = time.monotonic() + budget
    ran: list[str] = []
    steps = [s for s in recipe.steps if only is None or s.name == only]
    if only is not None and not steps:
        raise SoundvjError(f"recipe {recipe.name}: no step named {only!r}; steps: {[s.name for s in recipe.steps]}")
    def stop(signum: int, frame: object) -> None:
        raise _Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _run_steps(recipe, steps, deadline, ran, log)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_steps(recipe: Recipe, steps: list[RecipeStep], deadline: float, ran: list[str],
               log: Callable[[str], None]) -> PieceResult:
    for step in steps:
        if restore_state(recipe, step):
            log(f"[{step.name}] restored from {recipe.state_dir / step.name}")
        refresh_stale(recipe, step, log)
        if is_done(recipe, step):
            log(f"[{step.name}] done")
            continue
        if time.monotonic() >= deadline:
            return PieceResult(False, tuple(ran), step.name)
        argv = step_argv(recipe, step)
        log(f"[{step.name}] soundvj {' '.join(argv)}")
        started = time.monotonic()
        try:
            code = _run_until(argv, deadline, log)
        except _Stopped as e:  # the child got SIGTERM and wrote its checkpoint (see _run_until)
            save_state(recipe, step, log)
            log(f"[{step.name}] stopped by signal {e.signum}; run the same command again to continue")
            return PieceResult(False, tuple(ran + [step.name]), step.name, e.signum)
        ran.append(step.name)
        if code == 0 and step.creates is None:
            recipe.run_dir(step).mkdir(parents=True, exist_ok=True)
            (recipe.run_dir(step) / DONE_NAME).write_text(f"finished after {time.monotonic() - started:.0f} s in this piece\n")
        if code in (0, None):
            save_state(recipe, step, log)
        if code is None:
            log(f"[{step.name}] paused; run the same command again to continue from its checkpoint")
            return PieceResult(False, tuple(ran), step.name)
        if code != 0:
            raise SoundvjError(f"recipe {recipe.name}: step {step.name} failed (exit {code}); its output is above")
        if step.stage is None and step.creates is not None and not Path(step.creates).exists():
            raise SoundvjError(f"recipe {recipe.name}: step {step.name} ended but did not create {step.creates}")
        log(f"[{step.name}] finished in {time.monotonic() - started:.0f} s")
    return PieceResult(all(is_done(recipe, s) for s in recipe.steps), tuple(ran), None)
