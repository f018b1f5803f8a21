"""A real wattserve process on the real vLLM CPU build, serving the embedded model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

API_KEY = "e2e-test-key"
MODEL = "wattserve-tiny-llama"
# Engine flags shared with the offline reference run, so both use the same engine configuration.
ENGINE_FLAGS = ["--max-model-len", "1024", "--max-num-seqs", "32"]
STARTUP_TIMEOUT_S = 300


@dataclass(frozen=True)
class Server:
    """A running server under test."""

    base_url: str
    cache_dir: Path
    log_path: Path

    @property
    def model_dir(self) -> Path:
        """Where the embedded model was built."""
        return self.cache_dir / "tiny-llama-v1" / "model"

    def http(self, key: str | None = API_KEY) -> httpx.Client:
        """A plain HTTP client, with the bearer key unless `key` is None."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=60)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Start `python -m server serve` once for the whole session and wait until /health answers."""
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    log_path = root / "server.log"
    env = {**os.environ, "WATTSERVE_CACHE_DIR": str(root / "cache")}
    command = [
        sys.executable,
        "-m",
        "server",
        "serve",
        "--port",
        str(port),
        "--api-key",
        API_KEY,
        *ENGINE_FLAGS,
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"server not healthy after {STARTUP_TIMEOUT_S}s:\n{log_path.read_text()[-4000:]}")
        time.sleep(1)
    try:
        yield Server(base_url, root / "cache", log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        log_text = log_path.read_text()
        assert "Traceback" not in log_text, f"the server logged a traceback:\n{log_text[-6000:]}"


@pytest.fixture(scope="session")
def client(server: Server) -> openai.OpenAI:
    """The official OpenAI client, pointed at the server under test."""
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=60)
