"""The one training loop every stage runs on: devices, DDP, data order, checkpoints, resume, logging.

A stage (`training/stages/<name>.py`) supplies only what is its own, as a `Stage` returned by its
`build(config: RunConfig, ctx: BuildContext) -> Stage`:

* `modules`: the named trainable modules (their state is checkpointed); build them on `ctx.device`.
* `optimizers` and `schedulers` over those modules' parameters (checkpointed too).
* `dataset`: a map-style `torch.utils.data.Dataset` (the loop batches it; `collate_fn` optional).
* `train_step(batch, ctx: StepContext) -> dict[str, float | Tensor]`: one optimisation step on one
  batch (already on the device): forward, backward and `optimizer.step()` are the stage's (a GAN
  step steps two optimisers), the returned losses are for logging. Call DDP-wrapped modules as
  `ctx.modules[name]`, plain ones as `ctx.plain[name]` (use the plain one when a module only passes
  gradients through, e.g. the discriminator in the generator's step), and wrap forward passes in
  `with ctx.autocast():` (bf16 on CUDA when `loop.bf16` is set, a no-op otherwise). Call each
  DDP module at most once per backward (concatenate real and fake batches). Do random augmentation
  with torch's global RNG (or numpy's / Python's): the loop saves and restores all of them.
* `write_samples(out_dir, step)` (optional): sample grids/videos, on rank 0 only, under
  `torch.no_grad()`, with the modules in eval mode and the RNG state forked (so writing samples never
  changes the training run); use the plain modules you captured at build time, never DDP ones.
  `training.evaluation.samples` writes sample grids and short mp4s of generated frames with their sound.

The loop owns everything else:

* one process, or `torchrun` (DDP: NCCL on GPUs, gloo on CPU), chosen from the environment;
* seeding (`loop.seed` before `build`, so every rank builds identical modules; a per-rank stream after);
* a `DistributedSampler` (shuffled per epoch from `loop.seed`), `loop.batch_size` per process,
  drop_last; the data position is the step count, so a resume continues mid-epoch exactly;
* after each `train_step`, every scheduler's `step()` (schedules are per step);
* checkpoints on rank 0 every `loop.checkpoint_every` steps and at the end, written atomically
  (temp file beside it, fsync, rename): `run_dir/checkpoint.pt` is always a whole checkpoint;
* `resume=`: modules, optimisers, schedulers, every rank's RNG states and the step, after checking
  the checkpoint was written by the same stage and config (`training.config.identity`); on CPU a
  resumed run is bitwise equal to an uninterrupted one;
* SIGTERM / SIGINT: finish the current step, write a checkpoint, return `interrupted`; a second
  Ctrl-C stops at once (the last checkpoint stays valid);
* rank-0 logging: a tqdm bar (loss, steps/s), `run_dir/scalars.csv` (step, wall_time, name, value)
  and TensorBoard events under `run_dir/tensorboard`, every `loop.log_every` steps, losses averaged
  over the interval and over ranks; learning rates as `lr/<optimiser>`.

Run directory: `checkpoint.pt`, `config.yaml` (the resolved config), `scalars.csv`, `tensorboard/`,
`samples/`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
import torch.distributed as dist
# Imported before any process group exists, on purpose: torch.distributed.nn's functions take
# `group=group.WORLD` as a default argument, evaluated when the module is first imported. DDP imports it
# lazily, i.e. after init_process_group, and then those default arguments hold the default group for the
# life of the process: destroy_process_group() cannot free it, gloo's threads run on into interpreter
# shutdown, and tearing them down there aborts a rank now and then ("terminate called without an active
# exception").
import torch.distributed.nn  # noqa: F401
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from core.atomic_write import write_bytes_atomic
from core.errors import SoundvjError, one_line
from training.config import LoopConfig, RunConfig, config_differences, identity, run_config_dict, write_config_yaml

CHECKPOINT_FORMAT = "soundvj-train-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
SCALARS_NAME = "scalars.csv"


@dataclass(frozen=True)
class BuildContext:
    """What a stage's `build()` may need to know about where it runs."""

    device: torch.device
    rank: int
    world_size: int
    run_dir: Path
    is_main: bool


@dataclass
class Stage:
    """What a stage hands the loop (see the module docstring)."""

    modules: dict[str, torch.nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    dataset: Dataset
    train_step: Callable[[Any, "StepContext"], Mapping[str, float | torch.Tensor]]
    schedulers: dict[str, Any] = field(default_factory=dict)
    write_samples: Callable[[Path, int], None] | None = None
    collate_fn: Callable[[list], Any] | None = None


@dataclass
class StepContext:
    """Passed to every `train_step`.

    `step` is the 0-based index of this step (the number of steps done before it); `modules` are
    DDP-wrapped when distributed (else the plain ones), `plain` always the plain modules.
    """

    step: int
    total_steps: int
    modules: dict[str, torch.nn.Module]
    plain: dict[str, torch.nn.Module]
    device: torch.device
    rank: int
    world_size: int
    bf16: bool

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA when `loop.bf16` is set; otherwise does nothing."""
        if self.bf16 and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


@dataclass(frozen=True)
class TrainResult:
    """How a run ended: the steps done, the last checkpoint, and the signal that stopped it (if one did)."""

    step: int
    checkpoint: Path | None
    interrupted_by: int | None  # signal.SIGTERM / signal.SIGINT, or None when all steps ran
    last_losses: dict[str, float]


# ---------------------------------------------------------------------------------------------
# Checkpoint files


def save_checkpoint(path: Path, payload: dict) -> None:
    """`torch.save(payload)` to `path` atomically: a killed writer leaves `path` as it was."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict:
    """Read a training checkpoint (tensors and plain data only; nothing in it is executed)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise SoundvjError(f"checkpoint {str(path)!r}: not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or holding objects weights_only refuses
        text = str(e)
        if "WeightsUnpickler error:" in text:  # torch's long advice; the reason is on this line
            text = text.split("WeightsUnpickler error:", 1)[1].split(".", 1)[0]
        reason = one_line(text, 160)
        raise SoundvjError(f"checkpoint {str(path)!r}: not a readable soundvj training checkpoint ({reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise SoundvjError(f"checkpoint {str(path)!r}: not a soundvj training checkpoint (format {CHECKPOINT_FORMAT!r})")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise SoundvjError(
            f"checkpoint {str(path)!r}: format version {payload.get('version')!r}; this soundvj reads {CHECKPOINT_VERSION}"
        )
    return payload


def remove_stale_partials(folder: Path) -> int:
    """Delete temp files a killed writer left (`.checkpoint.pt.*.partial`); returns how many."""
    count = 0
    for stale in folder.glob(f".{CHECKPOINT_NAME}.*.partial"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
            count += 1
    return count


# ---------------------------------------------------------------------------------------------
# RNG state


def capture_rng_state() -> dict:
    """This process's torch (CPU and CUDA), numpy and Python RNG states as checkpointable plain data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }


def restore_rng_state(state: dict) -> None:
    """Undo `capture_rng_state` (CUDA states only when there are as many GPUs as were saved)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), numpy and Python's random from one integer."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)


@contextlib.contextmanager
def forked_rng() -> Iterator[None]:
    """Run a block without changing any RNG stream of the training run."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


# ---------------------------------------------------------------------------------------------
# Distributed


@dataclass(frozen=True)
class DistributedEnv:
    """Rank, world size and device of this process; `active` when a process group is up."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    active: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise SoundvjError(f"environment variable {name}={value!r}: expected an integer (set by torchrun)") from None


def init_distributed(device_name: str) -> DistributedEnv:
    """One plain process, or (under torchrun: WORLD_SIZE > 1) a process group: NCCL on GPUs, gloo on CPU."""
    world_size = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    if device_name not in ("auto", "cpu", "cuda") and not device_name.startswith("cuda:"):
        raise SoundvjError(f"loop.device: expected auto, cpu, cuda or cuda:N, got {device_name!r}")
    want_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        raise SoundvjError(f"loop.device: {device_name!r} asked for, but no CUDA GPU is available (use cpu)")
    if want_cuda:
        if world_size > 1:
            if local_rank >= torch.cuda.device_count():
                raise SoundvjError(
                    f"torchrun: local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                    "use --nproc_per_node <= the number of GPUs"
                )
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device(device_name if device_name.startswith("cuda:") else "cuda")
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size <= 1:
        return DistributedEnv(rank=0, local_rank=0, world_size=1, device=device, active=False)
    if not dist.is_initialized():
        # torch.distributed.nn is imported at the top of this module, before any group exists (see there).
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedEnv(rank=dist.get_rank(), local_rank=local_rank, world_size=dist.get_world_size(),
                          device=device, active=True)


class ResumableDistributedSampler(DistributedSampler):
    """torch's DistributedSampler (same shuffle per epoch and rank) that can start mid-epoch."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.start_index = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start_index :])

    def __len__(self) -> int:
        return self.num_samples - self.start_index


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Tensors in (nested) dicts, lists and tuples moved to `device`; everything else as is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


# ---------------------------------------------------------------------------------------------
# Logging


class ScalarLog:
    """Scalars to `scalars.csv` (long form: step, wall_time, name, value) and to TensorBoard (rank 0).

    On resume, rows past the resumed step (logged after the checkpoint by the interrupted run) are
    dropped from the CSV and TensorBoard is told to purge them, so each step appears once.
    """

    def __init__(self, run_dir: Path, start_step: int):
        self.path = run_dir / SCALARS_NAME
        self._trim(start_step)
        new = not self.path.exists()
        self._file = open(self.path, "a", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(["step", "wall_time", "name", "value"])
            self._file.flush()
        self._tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            # TensorBoard hides events at steps >= purge_step logged by the interrupted run.
            self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)
        except ImportError:
            print("soundvj: warning: tensorboard is not installed; scalars go to scalars.csv only", file=sys.stderr)

    def _trim(self, start_step: int) -> None:
        if not self.path.exists():
            return
        with open(self.path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        kept = rows[:1] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= start_step]
        if len(kept) != len(rows):
            out = io.StringIO()
            csv.writer(out).writerows(kept)
            write_bytes_atomic(self.path, out.getvalue().encode("utf-8"))

    def write(self, step: int, values: Mapping[str, float]) -> None:
        now = time.time()
        for name, value in values.items():
            self._csv.writerow([step, f"{now:.3f}", name, repr(float(value))])
            if self._tb is not None:
                self._tb.add_scalar(name, value, step, walltime=now)
        self._file.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _as_float(value: float | torch.Tensor) -> float:
    return float(value.detach().float().item()) if isinstance(value, torch.Tensor) else float(value)


# ---------------------------------------------------------------------------------------------
# Signals


class _StopFlag:
    """SIGTERM/SIGINT set a flag the loop reads between steps; a second SIGINT raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> "_StopFlag":
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------------------------------------
# The loop


def checkpoint_payload(
    config: RunConfig, step: int, stage: Stage, rank_states: list[dict], world_size: int
) -> dict:
    """The checkpoint dict (tensors and plain data; `torch.load(weights_only=True)` reads it).

    `rank_states[r]` is rank r's `{"rng": ..., "pending_losses": {"sums": ..., "count": ...}}`: its RNG
    states and the losses summed since the last log row, so a resumed run logs the same rows.
    """
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "stage_name": config.stage_name,
        "identity": identity(config),
        "config": run_config_dict(config),
        "step": step,
        "world_size": world_size,
        "modules": {name: m.state_dict() for name, m in stage.modules.items()},
        "optimizers": {name: o.state_dict() for name, o in stage.optimizers.items()},
        "schedulers": {name: s.state_dict() for name, s in stage.schedulers.items()},
        "rng": [r["rng"] for r in rank_states],
        "pending_losses": [r["pending_losses"] for r in rank_states],
        "torch_version": str(torch.__version__),
    }


def check_resume_matches(path: Path, payload: dict, config: RunConfig) -> None:
    """A one-line error unless the checkpoint was written by the same stage with the same identity config."""
    if payload.get("stage_name") != config.stage_name:
        raise SoundvjError(
            f"checkpoint {str(path)!r}: written by `train {payload.get('stage_name')}`, "
            f"not `train {config.stage_name}`; resume it with the stage that wrote it"
        )
    differences = config_differences(payload.get("identity", {}), config)
    if differences:
        more = f" (and {len(differences) - 3} more)" if len(differences) > 3 else ""
        raise SoundvjError(
            f"checkpoint {str(path)!r}: written with another config: {'; '.join(differences[:3])}{more}; "
            "resume with the same config or start a new run directory"
        )


def _load_into_stage(path: Path, payload: dict, stage: Stage) -> None:
    for kind, have in (("modules", stage.modules), ("optimizers", stage.optimizers), ("schedulers", stage.schedulers)):
        saved = payload.get(kind, {})
        if set(saved) != set(have):
            raise SoundvjError(
                f"checkpoint {str(path)!r}: holds {kind} {sorted(saved)}, this stage has {sorted(have)}"
            )
        for name, obj in have.items():
            try:
                obj.load_state_dict(saved[name])
            except (RuntimeError, ValueError, KeyError) as e:
                reason = one_line(e, 160)
                raise SoundvjError(f"checkpoint {str(path)!r}: {kind[:-1]} {name!r} does not fit ({reason})") from None


def _gather_rank_state(env: DistributedEnv, sums: dict[str, float], count: int) -> list[dict]:
    state = {"rng": capture_rng_state(), "pending_losses": {"sums": dict(sums), "count": count}}
    if not env.active:
        return [state]
    gathered: list[Any] = [None] * env.world_size
    dist.all_gather_object(gathered, state)
    return gathered


def _any_rank(env: DistributedEnv, flag: int) -> int:
    """The largest `flag` over ranks (so every rank stops at the same step)."""
    if not env.active:
        return flag
    t = torch.tensor([flag], dtype=torch.int64, device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def _mean_over_ranks(env: DistributedEnv, values: dict[str, float]) -> dict[str, float]:
    if not env.active or not values:
        return values
    names = sorted(values)
    t = torch.tensor([values[n] for n in names], dtype=torch.float64, device=env.device)
    dist.all_reduce(t)
    return {n: float(v) / env.world_size for n, v in zip(names, t.tolist())}


def _wrap_ddp(modules: dict[str, torch.nn.Module], env: DistributedEnv) -> dict[str, torch.nn.Module]:
    if not env.active:
        return dict(modules)
    from torch.nn.parallel import DistributedDataParallel

    wrapped = {}
    for name, module in modules.items():
        if any(p.requires_grad for p in module.parameters()):
            ids = [env.device.index] if env.device.type == "cuda" else None
            wrapped[name] = DistributedDataParallel(module, device_ids=ids)
        else:
            wrapped[name] = module
    return wrapped


def _write_samples(stage: Stage, run_dir: Path, step: int) -> None:
    if stage.write_samples is None:
        return
    out = run_dir / "samples"
    out.mkdir(exist_ok=True)
    modes = {name: m.training for name, m in stage.modules.items()}
    for m in stage.modules.values():
        m.eval()
    try:
        with forked_rng(), torch.no_grad():
            stage.write_samples(out, step)
    finally:
        for name, m in stage.modules.items():
            m.train(modes[name])


def train(
    config: RunConfig,
    build: Callable[[RunConfig, BuildContext], Stage],
    run_dir: str | Path,
    resume: str | Path | None = None,
) -> TrainResult:
    """Run (or resume) one stage's training in `run_dir`; see the module docstring for what it does.

    `resume` is a checkpoint file or a run directory (its `checkpoint.pt`). A fresh run refuses a
    `run_dir` that already holds a checkpoint, so a finished run is never overwritten by accident.
    """
    run_dir = Path(run_dir)
    loop: LoopConfig = config.loop
    env = init_distributed(loop.device)
    finished = False
    try:
        result = _train(config, build, run_dir, resume, env)
        finished = True
        return result
    finally:
        if env.active:
            # Every rank reaches this point before any tears its group down, so no rank closes its
            # connections while another still writes its checkpoint. After an error the peers may never
            # arrive. destroy_process_group() then ends gloo's threads (see init_distributed), before
            # the interpreter shuts down.
            if finished:
                dist.barrier()
            dist.destroy_process_group()


def _train(config: RunConfig, build: Callable, run_dir: Path, resume: str | Path | None, env: DistributedEnv) -> TrainResult:
    loop: LoopConfig = config.loop
    resume_path, payload = _read_resume(resume, config)
    _prepare_run_dir(run_dir, config, payload, env)

    # Same seed on every rank for build(): identical initial modules (DDP broadcasts rank 0's anyway).
    seed_everything(loop.seed)
    ctx = BuildContext(device=env.device, rank=env.rank, world_size=env.world_size, run_dir=run_dir, is_main=env.is_main)
    stage: Stage = build(config, ctx)
    if not stage.modules or not stage.optimizers:
        raise SoundvjError(f"train {config.stage_name}: the stage has no trainable modules or optimisers")

    progress = _resume_into(stage, resume_path, payload, loop, env)
    if progress.step >= loop.steps:
        if env.is_main:
            print(f"soundvj: the checkpoint is at step {progress.step}, loop.steps is {loop.steps}: nothing to do "
                  f"(raise it with --set loop.steps=N)", file=sys.stderr)
        return TrainResult(step=progress.step, checkpoint=resume_path, interrupted_by=None, last_losses={})
    sampler = _sampler(config, stage.dataset, env)
    return _run_steps(config, stage, sampler, run_dir, env, progress)


def _read_resume(resume: str | Path | None, config: RunConfig) -> tuple[Path | None, dict | None]:
    """(checkpoint path, payload) of `resume` (a checkpoint or a run folder), checked against `config`."""
    if resume is None:
        return None, None
    resume_path = Path(resume)
    if resume_path.is_dir():
        resume_path = resume_path / CHECKPOINT_NAME
    payload = load_checkpoint(resume_path)
    check_resume_matches(resume_path, payload, config)
    return resume_path, payload


def _prepare_run_dir(run_dir: Path, config: RunConfig, payload: dict | None, env: DistributedEnv) -> None:
    """Refuse a run folder that is a file, or holds a checkpoint a fresh run would overwrite; rank 0 creates
    it, clears a killed writer's temp files and writes config.yaml; every rank waits for that."""
    # Checked on every rank (read-only), so under torchrun all ranks stop with the same one-line error.
    if run_dir.exists() and not run_dir.is_dir():
        raise SoundvjError(f"run directory {str(run_dir)!r}: exists and is not a folder")
    if payload is None and (run_dir / CHECKPOINT_NAME).exists():
        raise SoundvjError(
            f"run directory {str(run_dir)!r}: already holds {CHECKPOINT_NAME}; pass --resume to continue "
            "that run, or choose another --out"
        )
    if env.is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SoundvjError(f"run directory {str(run_dir)!r}: cannot be created ({e.strerror or e})") from None
        remove_stale_partials(run_dir)
        write_config_yaml(run_dir / "config.yaml", config)
    if env.active:
        dist.barrier()


@dataclass
class _Progress:
    """Where the run stands: steps done, losses summed since the last log row (and how many steps they
    cover), the last logged means, and the step of the last checkpoint (-1: none written or resumed)."""

    step: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0
    last: dict[str, float] = field(default_factory=dict)
    last_saved: int = -1


def _resume_into(stage: Stage, resume_path: Path | None, payload: dict | None, loop: LoopConfig,
                 env: DistributedEnv) -> _Progress:
    """Load the checkpoint into the stage and restore this rank's RNG streams and pending losses (a fresh
    run: seed this rank's own stream). Same ranks as before: bit for bit; another world size: reseeded."""
    if payload is None:
        seed_everything(loop.seed * 1000 + 1 + env.rank)  # per-rank augmentation/noise streams
        return _Progress()
    _load_into_stage(resume_path, payload, stage)
    progress = _Progress(step=int(payload["step"]), last_saved=int(payload["step"]))
    saved_rng = payload.get("rng") or []
    if payload.get("world_size") != env.world_size and env.is_main:
        print(f"soundvj: note: the checkpoint was written by {payload.get('world_size')} processes, now "
              f"{env.world_size}: training continues, but not bit for bit", file=sys.stderr)
    if env.rank < len(saved_rng) and payload.get("world_size") == env.world_size:
        restore_rng_state(saved_rng[env.rank])
        pending = (payload.get("pending_losses") or [{}] * len(saved_rng))[env.rank]
        progress.sums, progress.count = dict(pending.get("sums", {})), int(pending.get("count", 0))
    else:
        seed_everything(loop.seed * 1000 + 1 + env.rank + progress.step)
    return progress


def _sampler(config: RunConfig, dataset: Dataset, env: DistributedEnv) -> ResumableDistributedSampler:
    """The run's sampler, after checking the dataset is map-style and holds a batch for every process."""
    loop: LoopConfig = config.loop
    try:
        n_items = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise SoundvjError(f"train {config.stage_name}: the dataset must be map-style (have a length)") from None
    if n_items < loop.batch_size * env.world_size:
        raise SoundvjError(
            f"data: {n_items} training items are fewer than loop.batch_size={loop.batch_size} x "
            f"{env.world_size} process(es); use a smaller batch or more data"
        )
    return ResumableDistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank, seed=loop.seed)


def _epoch_loader(config: RunConfig, stage: Stage, sampler: ResumableDistributedSampler, env: DistributedEnv,
                  step: int) -> DataLoader:
    """The batches from `step` to the end of its epoch (the data position is the step count)."""
    loop: LoopConfig = config.loop
    epoch, offset = divmod(step, sampler.num_samples // loop.batch_size)
    sampler.set_epoch(epoch)
    sampler.start_index = offset * loop.batch_size
    # A dedicated generator: creating the iterator must not draw from the global RNG.
    loader_rng = torch.Generator().manual_seed(loop.seed * 1_000_003 + epoch)
    return DataLoader(stage.dataset, batch_size=loop.batch_size, sampler=sampler, drop_last=True,
                      num_workers=loop.num_workers, collate_fn=stage.collate_fn,
                      generator=loader_rng, pin_memory=env.device.type == "cuda")


def _run_steps(config: RunConfig, stage: Stage, sampler: ResumableDistributedSampler, run_dir: Path,
               env: DistributedEnv, progress: _Progress) -> TrainResult:
    """The steps from `progress.step` to loop.steps, or to a signal: log rows, checkpoints and samples."""
    loop: LoopConfig = config.loop
    checkpoint_path = run_dir / CHECKPOINT_NAME
    modules = _wrap_ddp(stage.modules, env)
    for m in stage.modules.values():
        m.train()

    log = ScalarLog(run_dir, progress.step) if env.is_main else None
    bar = None
    if env.is_main:
        from tqdm import tqdm

        bar = tqdm(total=loop.steps, initial=progress.step, unit="step", desc=f"train {config.stage_name}",
                   disable=not loop.progress, dynamic_ncols=True, file=sys.stderr)
    interrupted: int | None = None

    def write_checkpoint() -> None:
        states = _gather_rank_state(env, progress.sums, progress.count)
        if env.is_main:
            save_checkpoint(checkpoint_path, checkpoint_payload(config, progress.step, stage, states, env.world_size))
        progress.last_saved = progress.step

    try:
        with _StopFlag() as stop:
            while progress.step < loop.steps and interrupted is None:
                for batch in _epoch_loader(config, stage, sampler, env, progress.step):
                    batch = move_to_device(batch, env.device)
                    sctx = StepContext(step=progress.step, total_steps=loop.steps, modules=modules, plain=stage.modules,
                                       device=env.device, rank=env.rank, world_size=env.world_size, bf16=loop.bf16)
                    losses = {k: _as_float(v) for k, v in stage.train_step(batch, sctx).items()}
                    for s in stage.schedulers.values():
                        s.step()
                    progress.step += 1
                    step = progress.step
                    for k, v in losses.items():
                        progress.sums[k] = progress.sums.get(k, 0.0) + v
                    progress.count += 1
                    if bar is not None:
                        shown = losses.get("loss", next(iter(losses.values()), float("nan")))
                        bar.set_postfix_str(f"loss {shown:.4g}", refresh=False)
                        bar.update(1)
                    if step % loop.log_every == 0 or step == loop.steps:
                        _log_row(progress, stage, env, log)
                    if (loop.checkpoint_every and step % loop.checkpoint_every == 0) or step == loop.steps:
                        write_checkpoint()
                    if env.is_main and ((loop.sample_every and step % loop.sample_every == 0) or step == loop.steps):
                        _write_samples(stage, run_dir, step)
                    signum = _any_rank(env, stop.signum or 0)
                    if signum:
                        interrupted = signum
                        break
                    if step >= loop.steps:
                        break
            if interrupted is not None and progress.last_saved != progress.step:
                write_checkpoint()
    finally:
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
    if env.is_main and interrupted is not None:
        name = signal.Signals(interrupted).name
        print(f"soundvj: {name}: stopped at step {progress.step}; checkpoint {checkpoint_path} (continue with --resume)",
              file=sys.stderr)
    return TrainResult(step=progress.step, checkpoint=checkpoint_path if progress.last_saved >= 0 else None,
                       interrupted_by=interrupted, last_losses=progress.last)


def _log_row(progress: _Progress, stage: Stage, env: DistributedEnv, log: ScalarLog | None) -> None:
    """The losses averaged over the steps since the last row and over ranks (and, on rank 0, written with
    the learning rates); the sums start again."""
    means = _mean_over_ranks(env, {k: v / progress.count for k, v in progress.sums.items()})
    progress.last = means
    if log is not None:
        rates = {f"lr/{name}": o.param_groups[0]["lr"] for name, o in stage.optimizers.items()}
        log.write(progress.step, {**{f"loss/{k}": v for k, v in means.items()}, **rates})
    progress.sums, progress.count = {}, 0


__all__ = [
    "BuildContext",
    "LoopConfig",
    "Stage",
    "StepContext",
    "TrainResult",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]
