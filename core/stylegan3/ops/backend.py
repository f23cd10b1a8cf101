"""Which implementation of the resampling ops runs: measured per model and machine, or forced.

- `fast`: the fused C++ kernel where it is built and applies (CPU float32), else the PyTorch fast path;
- `fast-torch`: the pure-PyTorch fast path alone;
- `reference`: NVIDIA's zero-stuffed composition.

By default (`auto`) the backend is chosen by measuring the candidates on the model about to run
(`choose_for_model`, called when a model is loaded, never in the render loop; see `backend_choice`
for the measurement and its cache). Until a model has been measured, `fast` runs.
`SOUNDVJ_OPS=reference|fast|fast-torch` forces one (read once, at import); `set_backend` forces one at
run time (tests, benchmarks), `set_backend("auto")` returns to the measured choice.
"""

from __future__ import annotations

import os
import weakref

import torch

from core.errors import SoundvjError
from core.stylegan3.ops import backend_choice, cpp_kernel, filtered_lrelu_fast
from core.stylegan3.ops.backend_choice import Measurement

CHOICES = ("reference", "fast", "fast-torch")
AUTO = "auto"
DEFAULT = AUTO
UNMEASURED = "fast"  # what runs in auto mode before any model has been measured


def _parse(value: str) -> str:
    name = value.strip().lower() or DEFAULT
    if name not in CHOICES and name != AUTO:
        raise SoundvjError(f"SOUNDVJ_OPS={value!r}: expected one of {', '.join((AUTO,) + CHOICES)}")
    return name


def requested_backend() -> str:
    """What the environment asks for now: 'auto' or one of CHOICES (raises on anything else)."""
    return _parse(os.environ.get("SOUNDVJ_OPS", DEFAULT))


# Read once: a bad value must not break importing the generator, so it is reported, not raised.
try:
    _requested = requested_backend()
    _env_note = ""
except SoundvjError as exc:
    _requested = DEFAULT
    _env_note = f"; {exc} (measuring instead)"
_forced_by_env = _requested != AUTO
_measured: Measurement | None = None  # the choice for the model loaded last (auto mode)
_provisional: weakref.ref | None = None  # a model chosen for before the C++ kernel was ready


def active_backend() -> str:
    """The implementation running now: one of CHOICES."""
    if _requested != AUTO:
        return _requested
    return _measured.backend if _measured is not None else UNMEASURED


def is_forced() -> bool:
    """True when a backend is forced (SOUNDVJ_OPS or `set_backend`), False in auto mode."""
    return _requested != AUTO


def set_backend(name: str) -> None:
    """Force one of CHOICES for every later call (process-wide), or 'auto' for the measured choice."""
    global _requested, _env_note, _forced_by_env
    _requested = _parse(name)
    _env_note = ""
    _forced_by_env = False


def measurement() -> Measurement | None:
    """The measurement behind the current auto choice, if any."""
    return _measured


def choose_for_model(G: torch.nn.Module, wait_for_kernel: bool = False, remeasure: bool = False) -> Measurement | None:
    """In auto mode, switch to the fastest backend for G (cached per machine, else measured; under
    3 s). Call where a model is loaded, never in the render loop or the audio callback.

    On CPU the C++ kernel is a candidate only once built. If a first build is still running and
    `wait_for_kernel` is false (the live app), `fast` runs meanwhile (it switches to the kernel when
    the build lands), nothing is cached, and `prepare(..., wait=True)` or the next load measures.
    Returns the measurement, or None when the backend is forced or the choice is provisional."""
    global _measured, _provisional
    if _requested != AUTO:
        return None
    device_type = next(G.parameters()).device.type
    if device_type == "cpu" and cpp_kernel.load(wait=True if wait_for_kernel else 1.0) is None:
        if "building" in cpp_kernel.status():
            _measured, _provisional = None, weakref.ref(G)
            return None
    _measured = backend_choice.choose(G, remeasure=remeasure)
    _provisional = None
    return _measured


def describe_backend(G: torch.nn.Module | None = None) -> str:
    """For `soundvj info --backend`: which implementation runs and why; with a model in auto mode,
    the measured (or cached) times and the choice."""
    if _requested != AUTO:
        how = "forced by SOUNDVJ_OPS" if _forced_by_env else "forced at run time"
        return f"ops backend: {_describe_one(_requested)} ({how}){_env_note}"
    if G is not None:
        choose_for_model(G, wait_for_kernel=True)
    lines = [f"ops backend: {_describe_one(active_backend())} (auto){_env_note}"]
    if _measured is not None:
        lines.append(f"  {_measured.describe()}")
    else:
        lines.append("  not measured yet: a model is measured when it is loaded (SOUNDVJ_OPS forces one)")
    return "\n".join(lines)


def _describe_one(name: str) -> str:
    if name == "reference":
        return "reference (pure PyTorch, NVIDIA's zero-stuffed composition; nothing compiled)"
    return filtered_lrelu_fast.describe_fast_path(allow_cpp=name == "fast")


def prepare(device_type: str, wait: bool) -> None:
    """Start (and with `wait`, finish) building the C++ kernel if the active backend will use it.

    Offline renders wait, so every frame of a file comes from the same code path; the live app does
    not, and runs the PyTorch path for the few seconds a first build takes. A choice made while the
    kernel was still building is measured again here once it has been built (with `wait`).
    """
    if active_backend() == "fast" and device_type == "cpu":
        cpp_kernel.load(wait=wait)
    G = _provisional() if _provisional is not None else None
    if wait and G is not None and next(G.parameters()).device.type == device_type:
        choose_for_model(G, wait_for_kernel=True)


def kernel_pending(device_type: str) -> bool:
    """True if the active backend wants the C++ kernel on this device and it is not loaded yet
    (so a caller about to wait can tell the user why)."""
    if active_backend() != "fast" or device_type != "cpu":
        return False
    # Only a real compile is worth a message. A cached build loads in well under a second, but on a busy
    # machine it can take longer, so ask whether the build exists instead of timing the load.
    if cpp_kernel.is_built():
        cpp_kernel.load()
        return False
    return cpp_kernel.load(wait=1.0) is None and "building" in cpp_kernel.status()
