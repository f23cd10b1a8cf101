"""Optional C++ kernel for the CPU fast path: built with ninja on first use, never required.

`csrc/filtered_lrelu_cpu.cpp` is compiled by `torch.utils.cpp_extension.load` into
`~/.cache/soundvj/torch_extensions/<tag>` (tag: source, torch, Python and CPU flags, so a cache
shared between different CPUs never loads code built with `-march=native` for another one). Without a
compiler or ninja, or if anything fails, the pure-PyTorch fast path runs and `status()` says why.

The build runs in a background thread by default, so the first frames render on the PyTorch path
instead of stalling for the ~10 s compile; `load(wait=True)` blocks (tests, benchmarks).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

SOURCE = Path(__file__).parent / "csrc" / "filtered_lrelu_cpu.cpp"
_log = logging.getLogger(__name__)
STALE_LOCK_SECONDS = 300
WAIT_SECONDS = 600  # load(wait=True) gives up after this (a hung compiler must not hang the caller)

KERNEL_ISA_ENV = "SOUNDVJ_KERNEL_ISA"
_lock = threading.Lock()
_thread: threading.Thread | None = None
_op: Any = None  # torch.ops.soundvj_ops.filtered_lrelu_cpu once loaded
_status = "C++ kernel not built yet (builds on first use)"


def cpu_flags() -> str:
    """The CPU's feature flags (from /proc/cpuinfo; empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def kernel_isa_limit() -> str | None:
    """"avx2" when `SOUNDVJ_KERNEL_ISA=avx2` asks for the kernel an AVX2-only CPU gets (built without
    AVX-512), so one AVX-512 machine can measure both kinds of host; None otherwise."""
    value = os.environ.get(KERNEL_ISA_ENV, "").strip().lower()
    return "avx2" if value == "avx2" else None


def vector_extensions(flags_text: str | None = None) -> str:
    """The SIMD extensions of this CPU (or of `flags_text`), e.g. "sse2 avx avx2 fma avx512f", for reports."""
    flags = set((cpu_flags() if flags_text is None else flags_text).split())
    return " ".join(f for f in ("sse2", "avx", "avx2", "fma", "avx512f", "asimd") if f in flags) or "unknown"


def compiler_flags(flags_text: str) -> list[str]:
    """The C++ kernel's compiler flags for a CPU with `flags_text` (built where it runs, so `-march=native`)."""
    # -fopenmp: at::parallel_for is an OpenMP loop; the extension then shares torch's libgomp.
    flags = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]  # torch adds its own -std
    if sys.platform.startswith("linux") and os.uname().machine in ("x86_64", "aarch64"):
        flags.append("-march=native")  # built where it runs; the cache tag includes the CPU flags
        if kernel_isa_limit() == "avx2" and " avx512f " in f" {flags_text} ":
            flags.append("-mno-avx512f")  # what an AVX2-only host builds (8-float blocks)
        elif " avx512f " in f" {flags_text} ":
            flags.append("-mprefer-vector-width=512")  # 16 channels per FMA
    return flags


def _missing_tool() -> str | None:
    """Why the kernel cannot be built here, or None."""
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r} not found)"
    # ninja from the venv counts even when the venv is not activated.
    venv_bin = str(Path(sys.executable).parent)
    if shutil.which("ninja") is None and shutil.which("ninja", path=venv_bin) is not None:
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
    if shutil.which("ninja") is None:
        return "ninja not found"
    return None


def _build_target() -> tuple[str, list[str], Path]:
    """(tag, compiler flags, build folder): the tag names this source, torch, Python and CPU flags."""
    flags_text = cpu_flags()
    cflags = compiler_flags(flags_text)
    # The source's path is in the key: torch's ninja build rebuilds when another checkout's path is in its
    # build file, so one folder per checkout keeps "built" meaning built.
    key = "\n".join([str(SOURCE.resolve()), SOURCE.read_text(), torch.__version__, sys.version, flags_text,
                     " ".join(cflags)])
    tag = hashlib.sha256(key.encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return tag, cflags, cache / "soundvj" / "torch_extensions" / tag


def is_built() -> bool:
    """True if this machine already has the compiled kernel for this source (loading it needs no compile)."""
    try:
        tag, _, build_dir = _build_target()
    except Exception:  # noqa: BLE001 - no answer means: maybe not built
        return False
    return (build_dir / f"soundvj_ops_{tag}.so").exists()


def _build() -> None:
    global _op, _status
    try:
        reason = _missing_tool()
        if reason is not None:
            _status = f"C++ kernel not built: {reason}"
            return
        tag, cflags, build_dir = _build_target()
        build_dir.mkdir(parents=True, exist_ok=True)
        # torch waits forever on a lock left by a build that was killed; no real build takes this long.
        lock = build_dir / "lock"
        if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
            lock.unlink(missing_ok=True)
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # CUDA_HOME chatter
        from torch.utils import cpp_extension

        cpp_extension.load(
            name=f"soundvj_ops_{tag}",
            sources=[str(SOURCE)],
            extra_cflags=cflags,
            extra_ldflags=["-fopenmp"],
            build_directory=str(build_dir),
            is_python_module=False,
            verbose=False,
        )
        _op = torch.ops.soundvj_ops.filtered_lrelu_cpu
        _status = f"C++ kernel loaded from {build_dir}"
    except Exception as exc:  # any failure means: use the PyTorch path, and say why
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        first = next((line for line in lines if "error:" in line), lines[0])  # the compiler's own words
        _status = f"C++ kernel not built: {type(exc).__name__}: {first.strip()[:240]}"
        _log.debug("C++ kernel build failed", exc_info=True)


def load(wait: bool | float = False) -> Any:
    """The kernel op if it is ready, else None; starts the build on the first call.

    `wait`: True waits for the build (up to WAIT_SECONDS), a number waits at most that many seconds."""
    global _thread
    if _op is not None:
        return _op
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_build, name="soundvj-cpp-build", daemon=True)
            _thread.start()
    if wait is True:
        _thread.join(WAIT_SECONDS)
    elif wait:
        _thread.join(float(wait))
    return _op


def status() -> str:
    """What happened to the kernel, in words."""
    if _thread is not None and _thread.is_alive():
        return "C++ kernel building in the background (PyTorch path meanwhile)"
    return _status
