"""A throwaway PostgreSQL server for the tests: the machine's binaries, or Debian's package when allowed.

The binaries are looked for on PATH, then in Debian's `/usr/lib/postgresql/<version>/bin`; missing, the
`postgresql` package is installed by `tests/debian_packages.py` when the tests run as root on a machine
with apt-get (the package's own cluster kept from starting), otherwise the tests that need it are
skipped with the reason.

The cluster lives in a temporary folder: `initdb` with trust authentication, then `postgres` listening
on no TCP address, only on a unix socket in that folder (named by a free port number, so two test runs
never meet), with fsync off (the tests kill clients, never the server). initdb and postgres refuse to run
as root: as root, both run as the unprivileged `nobody` through `runuser -u nobody --`, the folder handed
to nobody first; the tests, still root, reach the socket as any user may.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.debian_packages import find_or_install

START_TIMEOUT_S = 60
UNPRIVILEGED = "nobody"
BINARIES = ("initdb", "pg_ctl", "postgres")


@dataclass(frozen=True)
class Binaries:
    """The folder holding initdb, pg_ctl and postgres; `missing` says why there is none instead."""

    folder: Path | None = None
    missing: str | None = None


def _found() -> Path | None:
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = [path for path in debian.iterdir() if path.name.isdigit()]
        candidates += [path / "bin" for path in sorted(versions, key=lambda p: int(p.name), reverse=True)]
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in BINARIES):
            return folder
    return None


@functools.cache
def binaries() -> Binaries:
    """The binaries, installing them once per test run if allowed and needed."""
    lookup = find_or_install("postgresql", "PostgreSQL's initdb/pg_ctl/postgres", _found)
    return Binaries(lookup.found, lookup.missing)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """One running cluster; `url(database)` reaches it as the `postgres` superuser."""

    def __init__(self, folder: Path, root: Path) -> None:
        self._folder = folder
        self._root = root
        self.socket_dir = root / "socket"
        self.port = _free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            if not shutil.which("runuser"):
                raise RuntimeError("running as root and no runuser to start PostgreSQL as another user")
            self._as_user = ["runuser", "-u", UNPRIVILEGED, "--"]

    def _run(self, *command: str) -> None:
        result = subprocess.run(
            [*self._as_user, *command], capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False
        )
        if result.returncode != 0:
            log = self._root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(command[:2])} failed: {result.stderr.strip()[-2000:]}\n{tail}")

    def start(self) -> None:
        """initdb a cluster in the folder and start it; RuntimeError with its output if either fails."""
        self.socket_dir.mkdir()
        if self._as_user:
            entry = pwd.getpwnam(UNPRIVILEGED)
            for path in (self._root, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        data = self._root / "data"
        self._run(
            str(self._folder / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
            "--no-sync", "--no-locale", "-E", "UTF8",
        )  # fmt: skip
        options = (
            f"-k {self.socket_dir} -p {self.port} -c listen_addresses='' -c fsync=off -c max_connections=200"
        )
        log = str(self._root / "server.log")
        self._run(str(self._folder / "pg_ctl"), "-D", str(data), "-l", log, "-w", "-o", options, "start")

    def url(self, database: str = "postgres") -> str:
        """A libpq URL for `database` on this server."""
        return f"postgresql://postgres@/{database}?host={self.socket_dir}&port={self.port}"

    def stop(self) -> None:
        """Stop the server (fast: open connections are cut) and delete its folder."""
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run(
                str(self._folder / "pg_ctl"), "-D", str(self._root / "data"), "-m", "fast", "-w", "stop"
            )
        shutil.rmtree(self._root, ignore_errors=True)


def start_server() -> PostgresServer:
    """A started server in a fresh temporary folder.

    Raises:
        RuntimeError: No binaries (the message says why), or the cluster would not start.
    """
    found = binaries()
    if found.folder is None:
        raise RuntimeError(found.missing)
    root = Path(tempfile.mkdtemp(prefix="wattserve-postgres-"))
    server = PostgresServer(found.folder, root)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server
