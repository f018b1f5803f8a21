"""Start a server process on a free port, wait until it answers `/health`, and stop it with its children.

The one launcher of the harness (`wattserve-bench calibrate` starts the stub with it) and of the
project's benchmarks. Each server leads its own process group, so stopping it stops every process it
started: an engine's worker processes hold the GPU's memory, and the next server must find it free.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

__all__ = ["free_port", "start_server", "stop_server", "wait_healthy"]


def free_port() -> int:
    """A TCP port free on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 600) -> None:
    """Poll `/health` until it answers 200.

    Raises:
        RuntimeError: If the server exits first.
        TimeoutError: If it does not answer 200 within `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not healthy after {timeout_s}s")


def start_server(
    command: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 600,
) -> tuple[subprocess.Popen, str]:
    """Start `command --port <free port>` as the leader of a new process group; return it once healthy.

    Args:
        command: The server's command line, without `--port`.
        log_path: Where the server's stdout and stderr go.
        env: The server's environment (default: ours).
        timeout_s: How long to wait for `/health` to answer 200.

    Returns:
        The process and its base URL.

    Raises:
        RuntimeError: If the server exits before it is healthy.
        TimeoutError: If it is not healthy within `timeout_s`.
    """
    port = free_port()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, timeout_s)
    except BaseException:
        stop_server(process)
        raise
    return process, url


def _group_alive(pgid: int) -> bool:
    proc = Path("/proc")
    if proc.is_dir():
        # A killed member whose new parent never reaps it stays a zombie in the group: it holds no GPU
        # memory any more, so only live members count (signal 0 would count zombies too).
        for stat in proc.glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # gone meanwhile
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal still exists
        return True
    return True


def _wait_group_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def stop_server(process: subprocess.Popen, grace_s: float = 60) -> None:
    """Stop a server started by `start_server`: SIGTERM to its group, SIGKILL after `grace_s`.

    The engine's worker processes are in the group and hold the GPU's memory, so this waits for the
    whole group, not only its leader: the next server must find the GPU free.

    Args:
        process: The group's leader.
        grace_s: How long the group may take to stop after SIGTERM.
    """
    pgid = process.pid  # a session leader's process group id is its pid
    deadline = time.monotonic() + grace_s
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
    if not _wait_group_gone(pgid, max(0.0, deadline - time.monotonic())):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    process.wait()
    _wait_group_gone(pgid, 10)
