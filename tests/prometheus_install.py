"""Find Prometheus and promtool, or install Debian's `prometheus` package when the tests may.

The install runs only as root on a machine with apt-get; otherwise the tests that need the binaries are
skipped with the reason. The package would start its own service: a policy-rc.d that refuses starts is
put in place for the install when none exists, and removed after it.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

APT_TIMEOUT_S = 600
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


@dataclass(frozen=True)
class Binaries:
    """Paths of the two binaries; `missing` says why they are not there instead."""

    prometheus: str | None = None
    promtool: str | None = None
    missing: str | None = None


def _found() -> Binaries | None:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    return Binaries(prometheus, promtool) if prometheus and promtool else None


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Another apt run holding the lock is waited for, not failed on.
    command = ["apt-get", "-o", "DPkg::Lock::Timeout=120", *args]
    return subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=APT_TIMEOUT_S, check=False
    )


def _install() -> str | None:
    """Install the package; the reason it failed, or None."""
    added_policy = not POLICY_RC_D.exists()
    if added_policy:
        POLICY_RC_D.write_text("#!/bin/sh\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
    try:
        install = ("install", "-y", "--no-install-recommends", "prometheus")
        result = _apt_get(*install)
        if result.returncode != 0:  # a fresh image may have no package lists yet
            _apt_get("update")
            result = _apt_get(*install)
    except subprocess.TimeoutExpired:
        return f"apt-get install prometheus took over {APT_TIMEOUT_S} s"
    finally:
        if added_policy:
            POLICY_RC_D.unlink(missing_ok=True)
    if result.returncode != 0:
        return f"apt-get install prometheus failed: {result.stderr.strip()[-300:]}"
    return None


@functools.cache
def binaries() -> Binaries:
    """The binaries, installing them once per test run if allowed and needed."""
    if found := _found():
        return found
    if not shutil.which("apt-get"):
        return Binaries(missing="prometheus/promtool not on PATH and no apt-get to install them")
    if os.geteuid() != 0:
        return Binaries(missing="prometheus/promtool not on PATH; installing them needs root")
    if reason := _install():
        return Binaries(missing=reason)
    return _found() or Binaries(missing="apt-get installed prometheus, but it is not on PATH")
