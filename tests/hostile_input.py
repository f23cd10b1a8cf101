"""Running the real `soundvj` command on hostile input, under a memory cap and a time limit.

The cap is RLIMIT_DATA (private writable memory: heap and anonymous maps), 3 GB. RLIMIT_AS cannot be
used: importing torch maps about 3.3 GB of address space (its CUDA libraries) before doing anything,
so `soundvj info` on the embedded model dies under a 3 GB RLIMIT_AS; it runs with RLIMIT_DATA 1.2 GB.
The child's peak resident size (ru_maxrss from wait4) is reported too. Linux carries a process's
peak over `exec` from the memory it had before, and a child forked from pytest starts with pytest's
memory (over 1.5 GB late in the suite), so the command is forked from a small launcher process: its
peak is then its own, whichever tests ran before.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MEMORY_CAP_BYTES = 3 << 30
TIME_LIMIT_SECONDS = 60.0
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class CliRun:
    returncode: int  # negative: killed by that signal
    stdout: str
    stderr: str
    seconds: float
    peak_rss_bytes: int
    timed_out: bool


def run_soundvj(argv: list[str], cap_bytes: int = MEMORY_CAP_BYTES, timeout: float = TIME_LIMIT_SECONDS,
                cwd: Path | None = None, stdin: bytes | None = None, max_file_bytes: int | None = None) -> CliRun:
    """`python -m core.cli ARGV` in a fresh process under the memory cap; killed after `timeout` s.
    `max_file_bytes` makes writing a larger file fail with EFBIG, like a full disk fails with ENOSPC."""

    env = dict(os.environ, PYTHONPATH=str(REPO))
    out_path = Path(cwd or REPO)
    with tempfile.TemporaryDirectory(prefix="soundvj-run-") as scratch:
        report = Path(scratch) / "report.json"
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(cap_bytes), str(max_file_bytes or 0), str(report), *argv],
            cwd=out_path, env=env, start_new_session=True,  # one process group: a timeout kills both
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            out, err = _communicate(proc, stdin)
            proc.wait()
        finally:
            timer.cancel()
        child = json.loads(report.read_text()) if report.exists() else {"status": None, "maxrss_kb": 0}
    returncode = os.waitstatus_to_exitcode(child["status"]) if child["status"] is not None else -signal.SIGKILL
    return CliRun(
        returncode=returncode,
        stdout=out.decode(errors="replace"),
        stderr=err.decode(errors="replace"),
        seconds=time.monotonic() - started,
        peak_rss_bytes=child["maxrss_kb"] * 1024,
        timed_out=timed_out.is_set(),
    )


# Runs in a fresh, small Python: forks `python -m core.cli ARGV` under the limits, waits for it and
# writes its exit status and peak resident size (wait4's rusage, the child's alone) to REPORT.
_LAUNCHER = """
import json, os, resource, signal, sys
cap, max_file, report, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
pid = os.fork()
if pid == 0:
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    if max_file:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file, max_file))
    os.execv(sys.executable, [sys.executable, "-m", "core.cli", *argv])
_, status, usage = os.wait4(pid, 0)
with open(report, "w") as fh:
    json.dump({"status": status, "maxrss_kb": usage.ru_maxrss}, fh)
"""


def _communicate(proc: subprocess.Popen, stdin: bytes | None) -> tuple[bytes, bytes]:
    # Read both pipes to the end without reaping the child (wait4 must get its rusage).
    chunks: dict[str, bytes] = {}

    def drain(name: str, pipe) -> None:
        chunks[name] = pipe.read()

    readers = [threading.Thread(target=drain, args=(n, p)) for n, p in (("out", proc.stdout), ("err", proc.stderr))]
    for r in readers:
        r.start()
    if stdin is not None:
        try:
            proc.stdin.write(stdin)
        except BrokenPipeError:
            pass
        proc.stdin.close()
    for r in readers:
        r.join()
    return chunks.get("out", b""), chunks.get("err", b"")


def assert_refused(run: CliRun, *expected: str) -> None:
    """Exactly one `soundvj: error:` line, exit 2, within the time limit and the memory cap."""
    assert not run.timed_out, f"still running after the time limit ({run.seconds:.0f} s)"
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("soundvj: error: "), run.stderr[-2000:]
    assert run.peak_rss_bytes < MEMORY_CAP_BYTES
    for text in expected:
        assert text in lines[0], lines[0]
