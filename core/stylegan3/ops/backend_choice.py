"""Measure which ops backend is fastest for one model on this machine, and remember the answer.

The backends differ only in `filtered_lrelu` (every other op of the generator is the same code), so
the measurement times exactly those calls: every synthesis layer's filtered_lrelu with its own
filters, factors and padding, on a random input of the shape its modulated conv produces (batch 1,
float32: the live path). No full frame is synthesised, so a 256 px model whose frame takes seconds
on a CPU is measured in well under the budget. Candidates replay the calls in interleaved rounds; a
candidate's cost is the sum over calls of each call's minimum over rounds, which a machine shared with
other work disturbs far less than a mean of whole frames. The first round runs each call twice
(warm-up, then timed). A candidate more than ABORT_FACTOR times slower than the best so far is
stopped mid-round, so the whole measurement stays within BUDGET_SECONDS.

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
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from core.stylegan3.ops import cpp_kernel
from core.stylegan3.ops.filtered_lrelu import filtered_lrelu_reference
from core.stylegan3.ops.filtered_lrelu_fast import filtered_lrelu_fast

BUDGET_SECONDS = 2.0  # the issue allows 3 s; one call can overrun by a fraction of a second on a busy machine
ABORT_FACTOR = 2.0  # stop timing a candidate once it is this many times slower than the best
MAX_ROUNDS = 5
CACHE_FORMAT = 1
CACHE_FILE = "ops_backend_choice.json"
MAX_CACHE_ENTRIES = 64
OPS_DIR = Path(__file__).parent


@dataclass(frozen=True)
class Measurement:
    """What one measurement found: per-frame milliseconds of filtered_lrelu per candidate."""

    backend: str  # the choice
    ms: dict[str, float]  # candidate -> ms per frame (a lower bound for a stopped candidate)
    stopped: tuple[str, ...]  # candidates stopped early as clearly slower
    seconds: float  # wall time of the measurement itself
    rounds: int
    key: str
    model: str  # short description, for people reading the cache or `soundvj info --backend`
    measured_at: str  # ISO 8601, UTC
    from_cache: bool = False

    def describe(self) -> str:
        """One line: the times and the choice."""
        times = ", ".join(
            f"{name} {'>' if name in self.stopped else ''}{ms:.1f}" for name, ms in sorted(self.ms.items(), key=lambda kv: kv[1])
        )
        origin = f"cached from {self.measured_at}" if self.from_cache else f"measured now in {self.seconds:.2f} s"
        return f"measured filtered_lrelu ms per frame ({self.model}): {times}; chose {self.backend} ({origin})"


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


def layer_calls(G: torch.nn.Module, seed: int = 0) -> list[tuple[torch.Tensor, dict[str, Any]]]:
    """(x, kwargs) of each synthesis layer's filtered_lrelu call for one float32 frame; x is random
    (the ops' speed does not depend on the values) and, on CPU, channels_last as the conv leaves it."""
    device = _device_of(G)
    gen = torch.Generator().manual_seed(seed)
    calls = []
    for layer in G.synthesis.layers():
        x = torch.randn((1, *layer.filtered_lrelu_input_shape()), generator=gen).to(device)
        if device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        calls.append((x, layer.filtered_lrelu_kwargs(torch.float32)))
    return calls


@torch.no_grad()
def measure(G: torch.nn.Module, names: list[str], budget_s: float = BUDGET_SECONDS) -> Measurement:
    """Time `names` on G's filtered_lrelu calls (see the module docstring) and pick the fastest."""
    started = time.perf_counter()
    device = _device_of(G)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    calls = layer_calls(G)
    best = {name: [math.inf] * len(calls) for name in names}
    partial_ms: dict[str, float] = {}  # candidates stopped mid-round: time until they were stopped
    out: list[str] = []  # no further rounds: stopped mid-round, or clearly slower after a full round
    rounds = 0

    def total(name: str) -> float:
        return sum(best[name])

    while rounds < MAX_ROUNDS:
        for name in names:
            if name in out:
                continue
            others = [total(n) for n in names if n != name and n not in partial_ms and math.isfinite(total(n))]
            cap = ABORT_FACTOR * min(others) if others else math.inf
            impl, spent = _implementation(name), 0.0
            for i, (x, kwargs) in enumerate(calls):
                for _ in range(2 if rounds == 0 else 1):  # the first round warms each call up
                    t0 = time.perf_counter()
                    impl(x, **kwargs)
                    sync()
                    best[name][i] = min(best[name][i], time.perf_counter() - t0)
                spent += best[name][i]
                out_of_time = time.perf_counter() - started > budget_s and not math.isfinite(total(name))
                if spent > cap or out_of_time:
                    out.append(name)
                    partial_ms[name] = spent * 1e3
                    break
        rounds += 1
        running = [n for n in names if n not in out]
        if len(running) <= 1:
            break
        leader = min(total(n) for n in running)
        out += [n for n in running if total(n) > 1.5 * leader]  # clearly slower: no more rounds for it
        # Another round only while it fits in the budget.
        round_s = sum(total(n) for n in names if n not in out)
        if time.perf_counter() - started + round_s > budget_s:
            break

    ms = {n: partial_ms[n] if n in partial_ms else total(n) * 1e3 for n in names}
    finished = [n for n in names if n not in partial_ms]
    if finished:
        choice = min(finished, key=lambda n: ms[n])
    else:  # nothing finished within the budget (a huge model, a busy machine): compare the calls all timed
        common = min(sum(math.isfinite(t) for t in best[n]) for n in names)
        choice = min(names, key=lambda n: sum(best[n][:common])) if common else names[0]
    stopped = [n for n in names if n in partial_ms]
    return Measurement(
        backend=choice, ms=ms, stopped=tuple(stopped), seconds=time.perf_counter() - started, rounds=rounds,
        key=choice_key(G), model=model_summary(G),
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
                                from_cache=True)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return m if m.key == key and m.backend in m.ms else None


def store(m: Measurement) -> None:
    """Add `m` to the cache file: write a temp file, fsync, rename (a reader never sees half a file).

    The cache is an optimisation: failing to write it (read-only home, full disk) is not an error."""
    data = _read_cache()
    entry = dataclasses.asdict(m)
    entry.pop("from_cache")
    entry["stopped"] = list(m.stopped)
    choices = data["choices"]
    choices.pop(m.key, None)
    choices[m.key] = entry
    while len(choices) > MAX_CACHE_ENTRIES:  # oldest first (dicts keep insertion order)
        choices.pop(next(iter(choices)))
    path = cache_path()
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{CACHE_FILE}.", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError:
        pass
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)


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
