"""An HAProxy of the test's own in front of several servers: Debian's package, installed when allowed.

The binary is looked for on PATH and in /usr/sbin; missing, Debian's `haproxy` package is installed by
`tests/debian_packages.py` when the tests run as root on a machine with apt-get (the package's own
service kept from starting), otherwise the tests that need it are skipped with the reason.

The balancer runs in the foreground (`-db`), on a free loopback port, from a config written for the
test: round robin over the backends, an HTTP health check on `GET /health` every half second (two
failures take a backend out, two successes put it back; a test may leave checks out), and timeouts far
above any answer of the test's model. A second listener serves HAProxy's statistics page, which says
whether each backend is UP and counts its retries and redispatches.

Retries are safe, never duplicates: a request is sent again, to another backend, only when its
connection failed before any byte of it left (`retry-on conn-failure`, with `retries` and
`option redispatch`). A request a backend received and then died on (no answer, a cut answer) is an
error to its client, since the backend may have run it. Each request gets a connection of its own to
its backend (`option http-server-close`): a reused idle connection to a backend that died meanwhile
would fail only once the request is written to it, which HAProxy cannot tell from a request received.
"""

from __future__ import annotations

import csv
import functools
import io
import shutil
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.debian_packages import find_or_install

BACKEND = "replicas"
CHECK_INTERVAL = "500ms"


@dataclass(frozen=True)
class Binary:
    """The haproxy binary; `missing` says why there is none instead."""

    path: str | None = None
    missing: str | None = None


def _found() -> str | None:
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


@functools.cache
def binary() -> Binary:
    """The binary, installing it once per test run if allowed and needed."""
    lookup = find_or_install("haproxy", "haproxy", _found)
    return Binary(lookup.found, lookup.missing)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def config(port: int, stats_port: int, backends: dict[str, str], *, health_checks: bool = True) -> str:
    """The config: `backends` maps each server's name to its `host:port`.

    Without `health_checks` every backend counts as UP for good, so a dead one stays in the rotation.
    """
    check = " check" if health_checks else ""
    servers = "".join(f"    server {name} {address}{check}\n" for name, address in backends.items())
    return f"""global
    maxconn 512

defaults
    mode http
    timeout connect 2s
    timeout client 600s
    timeout server 600s
    timeout check 2s
    # A connection refused (a backend that died and is not yet out) is tried again, on another backend;
    # nothing else is: a request that reached a backend may have run there.
    retry-on conn-failure
    retries 3
    option redispatch 1
    # A connection of its own per request, so a dead backend shows as a refused connection.
    option http-server-close
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

    def __init__(
        self, executable: str, root: Path, backends: dict[str, str], *, health_checks: bool = True
    ) -> None:
        self.port, self._stats_port = _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = root / "haproxy.cfg"
        self.config_path.write_text(
            config(self.port, self._stats_port, backends, health_checks=health_checks)
        )
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

    def _servers(self) -> dict[str, dict[str, str]]:
        """Each backend server's row of HAProxy's statistics page; {} when it cannot be read."""
        try:
            page = httpx.get(f"http://127.0.0.1:{self._stats_port}/stats;csv", timeout=10).text
        except httpx.HTTPError:
            return {}
        rows = csv.DictReader(io.StringIO(page.removeprefix("# ")))
        return {
            row["svname"]: row
            for row in rows
            if row["pxname"] == BACKEND and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def states(self) -> dict[str, str]:
        """Each backend server's status as HAProxy's statistics page gives it (UP, DOWN, ...); {} unread."""
        return {name: row["status"] for name, row in self._servers().items()}

    def redispatches(self) -> dict[str, int]:
        """Each backend server's requests HAProxy sent on to another server after their connection failed."""
        return {name: int(row["wredis"] or 0) for name, row in self._servers().items()}

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


def start(root: Path, backends: dict[str, str], *, health_checks: bool = True) -> HAProxy:
    """An HAProxy started in front of `backends` (name -> host:port), its files under `root`.

    Raises:
        RuntimeError: No binary (the message says why), or it refused its config.
    """
    found = binary()
    if found.path is None:
        raise RuntimeError(found.missing)
    return HAProxy(found.path, root, backends, health_checks=health_checks)
