"""Running a test file's `inner` tests inside a loopback-only network namespace.

Ableton Link and NDI multicast on every network interface, so their tests never run in the test
run's own network. The outer test re-runs the file's inner tests under `unshare -n` (a new network
namespace, as root) after `ip link set lo up` and a multicast route on `lo`; the inner tests check
again that they see no interface but `lo` before they start anything. Without the package under
test, without permission for `unshare -n`, or without `ip`, the outer test skips and says why.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def only_loopback() -> bool:
    """True if this process's network namespace has no interface but `lo`."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def inner_only(flag: str, outer: str) -> pytest.MarkDecorator:
    """Skip a test unless environment variable `flag` is "1" (set for the re-run inside the namespace
    that test `outer` makes)."""
    return pytest.mark.skipif(
        os.environ.get(flag) != "1",
        reason=f"runs only inside the loopback-only network namespace that {outer} makes",
    )


def namespace_problem(module: str, what: str) -> str | None:
    """Why the inner tests cannot run here (`module` missing, described as `what`; no `unshare` or
    `ip`; no permission for a new network namespace), or None."""
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed ({what})"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        done = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare -n failed: {e}"
    if done.returncode != 0:
        return f"unshare -n is not permitted here: {done.stderr.strip()[:200]}"
    return None


def run_inner_tests(test_file: str, flag: str, env: dict[str, str] | None = None,
                    timeout: float = 180) -> subprocess.CompletedProcess:
    """Run `test_file`'s tests whose names contain "inner" in a new loopback-only network namespace,
    with environment variable `flag` set to "1" (and `env` added). Asserts that they all ran and passed."""
    script = ("set -e; ip link set lo up; ip route add 224.0.0.0/4 dev lo || true; "
              f'exec "$0" -m pytest -q -rs -p no:cacheprovider -k inner {test_file}')
    done = subprocess.run(["unshare", "-n", "sh", "-c", script, sys.executable], cwd=ROOT,
                          env={**os.environ, **(env or {}), flag: "1"}, capture_output=True, text=True,
                          timeout=timeout)
    output = (done.stdout + done.stderr)[-4000:]
    assert done.returncode == 0, output
    assert " passed" in done.stdout and "failed" not in done.stdout and "error" not in done.stdout, output
    assert "skipped" not in done.stdout, output  # every inner test ran
    return done
