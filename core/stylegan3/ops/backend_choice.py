"""Measure which ops backend is fastest for one model on this machine, and remember the answer.

The backends differ only in `filtered_lrelu` (every other op of the generator is the same code), so
the measurement times exactly those calls: every synthesis layer's filtered_lrelu with its own
filters, factors and padding, on a random input of the shape its modulated conv produces (batch 1,
float32: the live path), smallest first. No full frame is synthesised, so a 256 px model whose frame takes seconds
on a CPU is measured well within the budget. The candidates run call by call, interleaved, so they
share whatever load the machine has; a candidate's cost is the sum over calls of each call's
minimum over its runs (two in the first round: warm-up, and one stall is not a verdict; one per
later round). A candidate clearly slower than the leader (ABORT_FACTOR times and
ABORT_MIN_GAP_SECONDS behind, and slower on most calls) is stopped; a call starts only if it should
end within BUDGET_SECONDS, so on a busy machine the candidates are compared on the calls all of them
timed.

The result is cached in a small JSON file (`cache_path()`), keyed by the CPU's flags, torch's
version, the ops' source, the model's config, the device, the thread count and which candidates
exist (the C++ kernel may become available later); written atomically;
a file that cannot be read is ignored and rewritten.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from core.atomic_write import write_text_atomic
from core.stylegan3.ops import cpp_kernel
from core.stylegan3.ops.filtered_lrelu_reference import filtered_lrelu_reference
from core.stylegan3.ops.filtered_lrelu_fast import filtered_lrelu_fast

BUDGET_SECONDS = 2.0  # choose_for_model promises under 3 s; one call can overrun by a fraction of a second on a busy machine
ABORT_FACTOR = 2.0  # stop timing a candidate once it is this many times slower than the best
ABORT_MIN_GAP_SECONDS = 0.01  # ... and this much behind (a 0.1 ms call's ratio is mostly noise)
MAX_ROUNDS = 5
CACHE_FORMAT = 2
CACHE_FILE = "ops_backend_choice.json"
MAX_CACHE_ENTRIES = 64
OPS_DIR = Path(__file__).parent


@dataclass(frozen=True)
class Measurement:
    """What one measurement found: per-frame milliseconds of filtered_lrelu per candidate."""

    backend: str  # the choice
    ms: dict[str, float]  # candidate -> ms per frame (a lower bound for a stopped candidate)
    stopped: tuple[str, ...]  # ms is a lower bound: stopped early as clearly slower, or out of budget
    relative: dict[str, float]  # candidate -> its time / the choice's, on the calls both timed
    calls: tuple[int, int]  # (calls the choice's ms covers, calls per frame); fewer when out of budget
    seconds: float  # wall time of the measurement itself
    rounds: int
    key: str
    model: str  # short description, for people reading the cache or `soundvj info --backend`
    measured_at: str  # ISO 8601, UTC
    from_cache: bool = False

    def describe(self) -> str:
        """One line: the choice's time, the others relative to it, and where the numbers come from."""
        done, total = self.calls
        part = "" if done == total else f" on the first {done} of {total} calls (time budget)"
        others = ", ".join(
            f"{name} {self.relative[name]:.2f}x{' (stopped early)' if name in self.stopped and done == total else ''}"
            for name in sorted(self.relative, key=self.relative.get) if name != self.backend
        )
        origin = f"cached from {self.measured_at}" if self.from_cache else f"measured now in {self.seconds:.2f} s"
        return (f"chose {self.backend} for {self.model}: filtered_lrelu {self.ms[self.backend]:.1f} ms per frame{part}; "
                f"others relative to it: {others or 'none'} ({origin})")


def cache_dir() -> Path:
    """SOUNDVJ_CACHE_DIR, else $XDG_CACHE_HOME/soundvj, else ~/.cache/soundvj."""
    explicit = os.environ.get("SOUNDVJ_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "soundvj"


def cache_path() -> Path:
    return cache_dir() / CACHE_FILE


@functools.lru_cache(maxsize=1)
def _ops_source_digest() -> str:
    """Any change to an op's code (Python or C++) invalidates every cached choice."""
    digest = hashlib.sha256()
    for path in sorted([*OPS_DIR.glob("*.py"), *OPS_DIR.glob("csrc/*")]):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def model_summary(G: torch.nn.Module) -> str:
    kwargs = getattr(G, "init_kwargs", {})
    return (f"{kwargs.get('img_resolution', '?')} px, channel_base {kwargs.get('channel_base', 32768)}, "
            f"channel_max {kwargs.get('channel_max', 512)}")


def _device_of(G: torch.nn.Module) -> torch.device:
    return next(G.parameters()).device


def choice_key(G: torch.nn.Module) -> str:
    """Hash of everything that can change which backend is fastest."""
    device = _device_of(G)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    parts = {
        "cpu_flags": cpp_kernel.cpu_flags(),
        "torch": torch.__version__,
        "ops_source": _ops_source_digest(),
        "model": json.dumps(getattr(G, "init_kwargs", {}), sort_keys=True, default=str),
        "device": device_name,
        "threads": torch.get_num_threads(),
        "candidates": candidates(device),  # a kernel that builds later (a compiler installed) is measured then
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def candidates(device: torch.device) -> list[str]:
    """Backends worth measuring on `device`, fastest expected first (the later ones get capped).

    On CUDA `fast` and `fast-torch` are the same code (the C++ kernel is CPU-only); on CPU `fast` is
    only a candidate once the kernel is loaded."""
    names = []
    if device.type == "cpu" and cpp_kernel.load() is not None:
        names.append("fast")
    names += ["fast-torch", "reference"]
    return names


def _implementation(name: str) -> Callable[..., torch.Tensor]:
    if name == "reference":
        return filtered_lrelu_reference
    return functools.partial(filtered_lrelu_fast, allow_cpp=(name == "fast"))


def layer_calls(G: torch.nn.Module) -> list[tuple[tuple[int, ...], dict[str, Any]]]:
    """(input shape, kwargs) of each synthesis layer's filtered_lrelu call for one float32 frame."""
    return [((1, *layer.filtered_lrelu_input_shape()), layer.filtered_lrelu_kwargs(torch.float32))
            for layer in G.synthesis.layers()]


def make_input(shape: tuple[int, ...], device: torch.device, seed: int = 0) -> torch.Tensor:
    """A stand-in for a conv output: random values (the ops' speed does not depend on them; no
    denormals), one random row repeated down the image (filling a 256 px model's largest inputs with random
    floats would cost a large part of the budget), channels_last on CPU as the conv leaves it."""
    batch, channels, height, width = shape
    row = torch.rand((batch, channels, 1, width), generator=torch.Generator().manual_seed(seed)) * 2 - 1
    x = row.expand(shape).to(device)
    return x.contiguous(memory_format=torch.channels_last if device.type == "cpu" else torch.contiguous_format)


def _clearly_slower(times: list[float], leader: list[float]) -> bool:
    """Over ABORT_FACTOR times and ABORT_MIN_GAP_SECONDS behind the leader in total, and slower on
    at least two thirds of at least two calls (one stalled call is not enough)."""
    total, lead = sum(times), sum(leader)
    slower_calls = sum(t > t_lead for t, t_lead in zip(times, leader))
    return (len(times) >= 2 and 3 * slower_calls >= 2 * len(times)
            and total > ABORT_FACTOR * lead and total - lead > ABORT_MIN_GAP_SECONDS)


def _work(call: tuple[tuple[int, ...], dict[str, Any]]) -> float:
    """Rough cost of a call: samples at the upsampled rate."""
    shape, kwargs = call
    return float(math.prod(shape) * kwargs["up"] ** 2)


@torch.no_grad()
def measure(G: torch.nn.Module, names: list[str], budget_s: float = BUDGET_SECONDS) -> Measurement:
    """Time `names` on G's filtered_lrelu calls (see the module docstring) and pick the fastest."""
    started = time.perf_counter()
    device = _device_of(G)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    # Smallest first: a clear loser is stopped after a cheap call (one call of the reference on a
    # 256 px model's largest layer can take several times the whole budget); the budget left goes
    # to the big ones.
    calls = sorted(layer_calls(G), key=_work)
    work = [_work(c) for c in calls]
    inputs: dict[int, torch.Tensor] = {}  # made when first needed: unmeasured calls cost nothing
    impls = {n: _implementation(n) for n in names}
    best = {n: [math.inf] * len(calls) for n in names}
    running = list(names)
    stopped: dict[str, float] = {}  # stopped in the first round as clearly slower: ms until then
    timed = 0  # calls every running candidate has timed
    rounds = 0

    def cost(n: str, k: int) -> float:
        return sum(best[n][:k])

    while rounds < MAX_ROUNDS:
        complete = True
        for i, (shape, kwargs) in enumerate(calls):
            # Start the call only if all candidates' runs of it should end within the budget (a call
            # not timed yet is guessed from the previous one, scaled by size); the first always runs.
            growth = min(work[i] / work[i - 1], 4.0) if i > 0 else 1.0  # capped: tiny calls are mostly overhead

            def guess(n: str) -> float:
                one = best[n][i] if math.isfinite(best[n][i]) else best[n][i - 1] * growth if i > 0 else 0.0
                return one * (2 if rounds == 0 else 1)

            def late() -> bool:
                return (i > 0 or rounds > 0) and time.perf_counter() - started + sum(map(guess, running)) > budget_s

            # Out of time for everyone: first let go of candidates already ABORT_FACTOR times behind.
            while late() and len(running) > 1 and rounds == 0:
                leader = min(running, key=lambda n: cost(n, timed))
                worst = max(running, key=lambda n: cost(n, timed))
                if cost(worst, timed) <= ABORT_FACTOR * cost(leader, timed):
                    break
                running.remove(worst)
                stopped[worst] = cost(worst, timed) * 1e3
            if late():
                complete = False
                break
            x = inputs[i] if i in inputs else inputs.setdefault(i, make_input(shape, device, seed=i))
            # Interleaved call by call, so every candidate sees the same machine load; twice in the
            # first round (the first run warms up, and one stall of a busy machine is not a verdict).
            for run in range(2 if rounds == 0 else 1):
                if run == 1 and time.perf_counter() - started + sum(best[n][i] for n in running) > budget_s:
                    break  # a second run of a long call would not fit
                for n in running:
                    t0 = time.perf_counter()
                    impls[n](x, **kwargs)
                    sync()
                    best[n][i] = min(best[n][i], time.perf_counter() - t0)
            if rounds == 0:
                timed = i + 1
                leader = min(running, key=lambda n: cost(n, timed))
                for n in [n for n in running if _clearly_slower(best[n][:timed], best[leader][:timed])]:
                    running.remove(n)
                    stopped[n] = cost(n, timed) * 1e3
        if not complete:
            break
        rounds += 1
        if len(running) <= 1:
            break
        leader = min(cost(n, len(calls)) for n in running)
        running = [n for n in running if cost(n, len(calls)) <= 1.5 * leader]  # the rest: clearly slower
        if time.perf_counter() - started + sum(cost(n, len(calls)) for n in running) > budget_s:
            break

    # After a full round, per-frame times; if the budget ran out in the first, the calls all timed.
    k = len(calls) if rounds > 0 else timed
    ms = {n: stopped.get(n, cost(n, k) * 1e3) for n in names}
    choice = min(running, key=lambda n: cost(n, k))
    partial = [n for n in names if n in stopped or rounds == 0]
    timed_by = {n: sum(math.isfinite(t) for t in best[n]) for n in names}
    relative = {}
    for n in names:
        both = min(timed_by[n], timed_by[choice])
        relative[n] = cost(n, both) / max(cost(choice, both), 1e-12)
    return Measurement(
        backend=choice, ms=ms, stopped=tuple(partial), relative=relative, calls=(k, len(calls)),
        seconds=time.perf_counter() - started, rounds=rounds, key=choice_key(G), model=model_summary(G),
        measured_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(cache_path().read_text())
        if isinstance(data, dict) and data.get("format") == CACHE_FORMAT and isinstance(data.get("choices"), dict):
            return data
    except (OSError, ValueError):
        pass
    return {"format": CACHE_FORMAT, "choices": {}}


def load_cached(key: str) -> Measurement | None:
    entry = _read_cache()["choices"].get(key)
    if not isinstance(entry, dict):
        return None
    try:
        fields = {f.name for f in dataclasses.fields(Measurement)} - {"from_cache"}
        m = Measurement(**{k: entry[k] for k in fields})
        m = dataclasses.replace(m, ms={str(k): float(v) for k, v in m.ms.items()}, stopped=tuple(m.stopped),
                                relative={str(k): float(v) for k, v in m.relative.items()},
                                calls=(int(m.calls[0]), int(m.calls[1])), from_cache=True)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return m if m.key == key and m.backend in m.ms else None


def store(m: Measurement) -> None:
    """Add `m` to the cache file, written atomically (a reader never sees half a file).

    The cache is an optimisation: failing to write it (read-only home, full disk) is not an error."""
    data = _read_cache()
    entry = dataclasses.asdict(m)
    entry.pop("from_cache")
    entry["stopped"], entry["calls"] = list(m.stopped), list(m.calls)
    choices = data["choices"]
    choices.pop(m.key, None)
    choices[m.key] = entry
    while len(choices) > MAX_CACHE_ENTRIES:  # oldest first (dicts keep insertion order)
        choices.pop(next(iter(choices)))
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(data, indent=1))
    except OSError:
        pass


def choose(G: torch.nn.Module, remeasure: bool = False) -> Measurement:
    """The cached choice for G on this machine, or a fresh measurement (then cached)."""
    key = choice_key(G)
    if not remeasure:
        cached = load_cached(key)
        if cached is not None:
            return cached
    m = measure(G, candidates(_device_of(G)))
    store(m)
    return m
