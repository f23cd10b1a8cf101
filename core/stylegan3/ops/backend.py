"""Which implementation of the resampling ops runs (`SOUNDVJ_OPS=reference|fast`, fast by default).

`fast` uses the fused C++ kernel where it is built and applies, else the pure-PyTorch fast path;
`fast-torch` forces the latter (comparisons, or a machine where the kernel misbehaves).
The environment variable is read once, at import; `set_backend` switches at run time (tests, benchmarks).
"""

from __future__ import annotations

import os

from core.errors import SoundvjError

CHOICES = ("reference", "fast", "fast-torch")
DEFAULT = "fast"


def _parse(value: str) -> str:
    name = value.strip().lower() or DEFAULT
    if name not in CHOICES:
        raise SoundvjError(f"SOUNDVJ_OPS={value!r}: expected one of {', '.join(CHOICES)}")
    return name


def requested_backend() -> str:
    """What the environment asks for now (raises on a value that is not a backend)."""
    return _parse(os.environ.get("SOUNDVJ_OPS", DEFAULT))


# Read once: a bad value must not break importing the generator, so it is reported, not raised.
try:
    _active = requested_backend()
    _env_note = ""
except SoundvjError as exc:
    _active = DEFAULT
    _env_note = f"; {exc} (using {DEFAULT})"


def active_backend() -> str:
    """One of CHOICES."""
    return _active


def set_backend(name: str) -> None:
    """Switch the implementation for every later call (process-wide)."""
    global _active, _env_note
    _active = _parse(name)
    _env_note = ""


def describe_backend() -> str:
    """One line for `soundvj info --backend`: which implementation runs, and why."""
    if _active == "reference":
        return f"ops backend: reference (pure PyTorch, NVIDIA's zero-stuffed composition; nothing compiled){_env_note}"
    from core.stylegan3.ops import filtered_lrelu_fast

    return f"ops backend: {filtered_lrelu_fast.describe_fast_path(allow_cpp=_active == 'fast')}{_env_note}"


def prepare(device_type: str, wait: bool) -> None:
    """Start (and with `wait`, finish) building the C++ kernel if the active backend will use it.

    Offline renders wait, so every frame of a file comes from the same code path; the live app does
    not, and runs the PyTorch path for the few seconds a first build takes.
    """
    if _active == "fast" and device_type == "cpu":
        from core.stylegan3.ops import cpp_kernel

        cpp_kernel.load(wait=wait)


def kernel_pending(device_type: str) -> bool:
    """True if the active backend wants the C++ kernel on this device and it is not loaded yet
    (so a caller about to wait can tell the user why)."""
    if _active != "fast" or device_type != "cpu":
        return False
    from core.stylegan3.ops import cpp_kernel

    # A cached build loads in well under a second; only a real compile is worth a message.
    return cpp_kernel.load(wait=1.0) is None and "building" in cpp_kernel.status()
