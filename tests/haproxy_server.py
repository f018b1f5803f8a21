"""An HAProxy of the test's own in front of several servers: Debian's package, installed when allowed.

The binary is looked for on PATH and in /usr/sbin; missing, Debian's `haproxy` package is installed when
the tests run as root on a machine with apt-get (a policy-rc.d that refuses starts keeps the package from
starting its own service), otherwise the tests that need it are skipped with the reason.

The balancer runs in the foreground (`-db`), on a free loopback port, from a config written for the
test: round robin over the backends, an HTTP health check on `GET /health` every half second (two
failures take a backend out, two successes put it back), a refused connection retried and sent to
another backend (`retries`, `option redispatch`), and timeouts far above any answer of the test's
model. A second listener serves HAProxy's statistics page, which says whether each backend is UP.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import shutil
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

APT_TIMEOUT_S = 600
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
BACKEND = "replicas"
CHECK_INTERVAL = "500ms"


@dataclass(frozen=True)
class Binary:
    """The haproxy binary; `missing` says why there is none instead."""

    path: str | None = None
    missing: str | None = None


def _found() -> str | None:
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Another apt run holding the lock is waited for, not failed on.
    command = ["apt-get", "-o", "DPkg::Lock::Timeout=120", *args]
    return subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=APT_TIMEOUT_S, check=False
    )


def _install() -> str | None:
    """Install Debian's haproxy package; the reason it failed, or None."""
    added_policy = not POLICY_RC_D.exists()
    if added_policy:
        POLICY_RC_D.write_text("#!/bin/sh\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
    try:
        install = ("install", "-y", "--no-install-recommends", "haproxy")
        result = _apt_get(*install)
        if result.returncode != 0:  # a fresh image may have no package lists yet
            _apt_get("update")
            result = _apt_get(*install)
    except subprocess.TimeoutExpired:
        return f"apt-get install haproxy took over {APT_TIMEOUT_S} s"
    finally:
        if added_policy:
            POLICY_RC_D.unlink(missing_ok=True)
    if result.returncode != 0:
        return f"apt-get install haproxy failed: {result.stderr.strip()[-300:]}"
    return None


@functools.cache
def binary() -> Binary:
    """The binary, installing it once per test run if allowed and needed."""
    if found := _found():
        return Binary(found)
    if not shutil.which("apt-get"):
        return Binary(missing="haproxy not found and no apt-get to install it")
    if os.geteuid() != 0:
        return Binary(missing="haproxy not found; installing it needs root")
    if reason := _install():
        return Binary(missing=reason)
    found = _found()
    return Binary(found) if found else Binary(missing="apt-get installed haproxy, but it is not found")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def config(port: int, stats_port: int, backends: dict[str, str]) -> str:
    """The config: `backends` maps each server's name to its `host:port`."""
    servers = "".join(f"    server {name} {address} check\n" for name, address in backends.items())
    return f"""global
    maxconn 512

defaults
    mode http
    timeout connect 2s
    timeout client 600s
    timeout server 600s
    timeout check 2s
    # A connection refused (a backend that died and is not yet out) is tried again, on another backend.
    retries 3
    option redispatch 1
    default-server inter {CHECK_INTERVAL} fall 2 rise 2

frontend api
    bind 127.0.0.1:{port}
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
{servers}
listen stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
"""


class HAProxy:
    """One balancer process; `url` is where clients reach the backends through it."""

    def __init__(self, executable: str, root: Path, backends: dict[str, str]) -> None:
        self.port, self._stats_port = _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = root / "haproxy.cfg"
        self.config_path.write_text(config(self.port, self._stats_port, backends))
        self.log_path = root / "haproxy.log"
        self._executable = executable
        checked = subprocess.run(
            [executable, "-c", "-f", str(self.config_path)], capture_output=True, text=True, check=False
        )
        if checked.returncode != 0:
            raise RuntimeError(f"haproxy refused its config: {checked.stdout}{checked.stderr}")
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [executable, "-db", "-f", str(self.config_path)], stdout=log, stderr=subprocess.STDOUT
            )

    def states(self) -> dict[str, str]:
        """Each backend server's status as HAProxy's statistics page gives it (UP, DOWN, ...); {} unread."""
        try:
            page = httpx.get(f"http://127.0.0.1:{self._stats_port}/stats;csv", timeout=10).text
        except httpx.HTTPError:
            return {}
        rows = csv.DictReader(io.StringIO(page.removeprefix("# ")))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["pxname"] == BACKEND and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def all_up(self, names: Sequence[str]) -> bool:
        """Whether each named backend is UP (its status may carry a transition, as `UP 1/2`)."""
        found = self.states()
        return all(found.get(name, "").split(" ")[0] == "UP" for name in names)

    def exited(self) -> int | None:
        """The exit status if the process ended, else None."""
        return self.process.poll()

    def stop(self) -> None:
        """End the process (it was started by this object alone)."""
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


def start(root: Path, backends: dict[str, str]) -> HAProxy:
    """An HAProxy started in front of `backends` (name -> host:port), its files under `root`.

    Raises:
        RuntimeError: No binary (the message says why), or it refused its config.
    """
    found = binary()
    if found.path is None:
        raise RuntimeError(found.missing)
    return HAProxy(found.path, root, backends)
