"""Find a tool the tests run (PostgreSQL, HAProxy, Prometheus) on this machine, or install Debian's package.

A package is installed only when the tests run as root on a machine with apt-get; otherwise, or when the
install fails, the caller gets the reason, and the tests that need the tool are skipped with it. Debian's
packages start their own service on install: a policy-rc.d that refuses starts is put in place for the
install when none exists, and removed after it, so the machine runs only what the tests start themselves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

APT_TIMEOUT_S = 600
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")

Found = TypeVar("Found")


@dataclass(frozen=True)
class Lookup(Generic[Found]):
    """What was found; `missing` says why nothing was instead."""

    found: Found | None = None
    missing: str | None = None


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Another apt run holding the lock is waited for, not failed on.
    command = ["apt-get", "-o", "DPkg::Lock::Timeout=120", *args]
    return subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=APT_TIMEOUT_S, check=False
    )


def install(package: str) -> str | None:
    """Install Debian's `package`; the reason it failed, or None."""
    added_policy = not POLICY_RC_D.exists()
    if added_policy:
        POLICY_RC_D.write_text("#!/bin/sh\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
    try:
        command = ("install", "-y", "--no-install-recommends", package)
        result = _apt_get(*command)
        if result.returncode != 0:  # a fresh image may have no package lists yet
            _apt_get("update")
            result = _apt_get(*command)
    except subprocess.TimeoutExpired:
        return f"apt-get install {package} took over {APT_TIMEOUT_S} s"
    finally:
        if added_policy:
            POLICY_RC_D.unlink(missing_ok=True)
    if result.returncode != 0:
        return f"apt-get install {package} failed: {result.stderr.strip()[-300:]}"
    return None


def find_or_install(package: str, what: str, find: Callable[[], Found | None]) -> Lookup[Found]:
    """What `find` finds, installing `package` first if it finds nothing and the tests may install.

    Args:
        package: Debian's package that provides it.
        what: The missing thing, as the reason names it ("haproxy", "prometheus/promtool").
        find: Looks for it on this machine; None when it is not there.

    Returns:
        What `find` returned, or why there is nothing.
    """
    if (found := find()) is not None:
        return Lookup(found)
    if not shutil.which("apt-get"):
        return Lookup(missing=f"{what} not found and no apt-get to install it")
    if os.geteuid() != 0:
        return Lookup(missing=f"{what} not found; installing it needs root")
    if reason := install(package):
        return Lookup(missing=reason)
    if (found := find()) is not None:
        return Lookup(found)
    return Lookup(missing=f"apt-get installed {package}, but {what} is not found")
