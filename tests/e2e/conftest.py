"""A real wattserve process on the real vLLM CPU build, serving the embedded model."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from loadtest.processes import start_server, stop_server
from server.default_model import BUILD_VERSION, ensure_default_model
from server.engine import plugin_gate, spin_tail
from tests.e2e.adapter_files import copy_adapter
from tests.waiting import wait_until

API_KEY = "e2e-test-key"
ADMIN_KEY = "e2e-admin-key"
MODEL = "wattserve-tiny-llama"
# Engine flags shared with the offline reference run, so both use the same engine configuration.
# Eager: vLLM's torch.compile of the model took 47 s of a 93-s server start on two cores (61 s eager),
# once per engine configuration, and the tests here start some twenty servers; what they test is
# wattserve's serving, the same on a compiled model (the benchmarks and `make serve` run compiled).
ENGINE_FLAGS = ["--max-model-len", "1024", "--max-num-seqs", "32", "--enforce-eager"]
STARTUP_TIMEOUT_S = 300
# Free whitespace off: a random-weight model's forced tool calls and schema answers then end in their
# schema's few tokens, the same on every run (vLLM's `disable_any_whitespace`, which it refuses with its
# `auto` backend; xgrammar is the one `auto` picks here).
WHITESPACE_OFF = [
    "--structured-outputs-config",
    json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
]
# As an agent deployment runs: calls written in the text read by vLLM's hermes parser (the embedded model's
# chat template writes Hermes-style calls), each call's arguments held to its tool's schema
# (`--tool-strict-level parameter`), and free whitespace off as above.
AGENT_FLAGS = ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
AGENT_FLAGS += ["--tool-strict-level", "parameter", *WHITESPACE_OFF]
# Schema caps raised far enough for the structured-output attack's schemas (half the cap in properties),
# and a compile deadline none of them reaches: what those tests show is that a compile stops when its
# client leaves.
SCHEMA_PROPERTIES_CAP = 24000
SCHEMA_CAPS_RAISED = ["--max-schema-properties", str(SCHEMA_PROPERTIES_CAP), "--max-schema-bytes", str(2**20)]
SCHEMA_CAPS_RAISED += ["--max-grammar-compile-seconds", "300"]


@dataclass(frozen=True)
class Server:
    """A running server under test."""

    base_url: str
    cache_dir: Path
    log_path: Path
    adapter_root: Path | None = None

    @property
    def model_dir(self) -> Path:
        """Where the embedded model was built."""
        return self.cache_dir / BUILD_VERSION / "model"

    def http(self, key: str | None = API_KEY) -> httpx.Client:
        """A plain HTTP client, with the bearer key unless `key` is None."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=60)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Launch:
    """A server process being started; `ready()` waits for /health."""

    def __init__(self, root: Path, extra_args: list[str], env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.root = root
        self.log_path = root / "server.log"
        command = [sys.executable, "-m", "server", "serve", "--port", str(self.port), "--api-key", API_KEY]
        # The model cache is shared; the stores are each server's own, or one server would run (and, at its
        # start, fail) another's batches and background responses.
        stores = {
            "WATTSERVE_BATCH_STORE": f"sqlite:///{root / 'batches.sqlite3'}",
            "WATTSERVE_RESPONSES_STORE": str(root / "responses.sqlite3"),
        }
        full_env = {**os.environ, "WATTSERVE_CACHE_DIR": str(_cache_dir(root)), **stores, **(env or {})}
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [*command, *ENGINE_FLAGS, *extra_args], stdout=log, stderr=subprocess.STDOUT, env=full_env
            )
        self.base_url = f"http://127.0.0.1:{self.port}"

    def _healthy_or_exited(self) -> bool:
        if self.process.poll() is not None:
            return True
        try:
            return httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL the server and every process under it (vLLM's engine core and worker would be orphaned)."""
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        self.process.kill()
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        self.process.wait()

    def ready(self) -> Server:
        try:
            wait_until(self._healthy_or_exited, "the server healthy", STARTUP_TIMEOUT_S)
        except pytest.fail.Exception:
            self.kill()
            pytest.fail(
                f"server not healthy after {STARTUP_TIMEOUT_S}s:\n{self.log_path.read_text()[-4000:]}"
            )
        if self.process.poll() is not None:
            pytest.fail(f"server exited with {self.process.returncode}:\n{self.log_path.read_text()[-4000:]}")
        return Server(self.base_url, _cache_dir(self.root), self.log_path)

    def stop(self) -> None:
        """SIGTERM, then wait for the exit and check that the log holds no traceback."""
        self.process.terminate()
        self.wait_stopped()

    def stop_later(self) -> None:
        """SIGTERM now; the exit and the log check wait for the end of the session.

        vLLM's shutdown spends about 5 s waiting on its worker and engine-core processes; meanwhile the
        next module's server starts.
        """
        self.process.terminate()
        _STOPPING.append(self)

    def wait_stopped(self) -> None:
        """Wait for the exit (SIGKILL after 60 s) and check that the log holds no traceback."""
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()
        log_text = self.log_path.read_text()
        assert "Traceback" not in log_text, f"the server logged a traceback:\n{log_text[-6000:]}"


_STOPPING: list[_Launch] = []


@pytest.fixture(scope="session", autouse=True)
def _servers_stopped_later() -> Iterator[None]:
    """At the session's end, every server stopped with `stop_later` has exited with a clean log."""
    yield
    unclean = []
    for launch in _STOPPING:
        try:
            launch.wait_stopped()
        except AssertionError as error:
            unclean.append(f"{launch.root.name}: {error}")
    _STOPPING.clear()
    assert not unclean, "\n".join(unclean)


def _cache_dir(root: Path) -> Path:
    # Shared by both servers: the first to start builds the model, the other waits on the build lock.
    return root.parent / "model-cache"


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """Start both test servers at once (each spends most of its start on one core) and wait for both.

    `plain`: the embedded model without LoRA, as a user's model without adapters is served.
    `lora`: the default configuration (demo adapters), an admin key and an adapter root for the tests, and
    tool calls read as an agent deployment has them read (`AGENT_FLAGS`).
    """
    adapter_root = tmp_path_factory.mktemp("adapter-root")
    (adapter_root / "watched").mkdir()
    launches = {
        # Flex requests wait 0.5 s for companions, not 30, and one batch line runs at a time, so the Batch
        # API tests see lines answered promptly and a batch still running when they cancel it; the meter
        # is named, so their energy source is the same on every machine.
        "plain": _Launch(
            tmp_path_factory.mktemp("plain"),
            ["--no-enable-lora", "--enable-prompt-tokens-details", "--energy-meter", "estimated"]
            + ["--flex-max-wait-seconds", "0.5", "--batch-max-in-flight", "1"],
        ),
        "lora": _Launch(
            tmp_path_factory.mktemp("lora"),
            ["--admin-key", ADMIN_KEY, "--adapter-root", str(adapter_root)]
            + ["--adapter-dir", str(adapter_root / "watched"), "--watch-adapters", "--max-cpu-loras", "16"]
            + ["--energy-meter", "estimated", *AGENT_FLAGS],
        ),
    }
    try:
        ready = {name: launch.ready() for name, launch in launches.items()}
        ready["lora"] = Server(
            ready["lora"].base_url, ready["lora"].cache_dir, ready["lora"].log_path, adapter_root
        )
        yield ready
    finally:
        for launch in launches.values():
            launch.stop_later()


# The embedded model's whole context, so that a long background response is still running when it is cut;
# lone flex requests wait half a second for companions, not 30; the meter is named, so energy reads alike
# on every machine.
STRUCTURED_CONTEXT = 2048
STRUCTURED_FLAGS = ["--no-enable-lora", *WHITESPACE_OFF, *SCHEMA_CAPS_RAISED, "--energy-meter", "estimated"]
STRUCTURED_FLAGS += ["--max-model-len", str(STRUCTURED_CONTEXT), "--flex-max-wait-seconds", "0.5"]


@pytest.fixture(scope="session")
def structured_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The embedded model for the tool, agent, structured-output and Responses API tests, which share its
    flags.

    One server for four modules saves three engine starts (most of a minute each on two cores).
    """
    launch = _Launch(tmp_path_factory.mktemp("structured"), STRUCTURED_FLAGS)
    try:
        yield launch.ready()
    finally:
        launch.stop_later()  # the log is checked for tracebacks at the session's end


# Two admission slots and a queue the router test's flood fits in. The write timeout is longer than the
# engine takes for the slow-client test's unread stream (it counts from the client's last read, not from
# the engine's end), so that stream's slot is seen free before its connection is cut; the head limit is
# what the header flood meets.
SMALL_ADMISSION = 2
SMALL_QUEUE = 16
SMALL_ADMISSION_FLAGS = ["--max-concurrent-requests", str(SMALL_ADMISSION)]
SMALL_ADMISSION_FLAGS += ["--max-queued-requests", str(SMALL_QUEUE), "--energy-meter", "estimated"]
SMALL_ADMISSION_FLAGS += ["--write-timeout-seconds", "60", "--h11-max-incomplete-event-size", "65536"]


@pytest.fixture(scope="session")
def small_admission_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The embedded model with the demo adapters behind two admission slots, for the router and slow-client
    tests: both fill the slots and the queue, then wait until every gauge reads idle again.

    One server for two modules saves an engine start (most of a minute on two cores).
    """
    launch = _Launch(tmp_path_factory.mktemp("small-admission"), SMALL_ADMISSION_FLAGS)
    try:
        yield launch.ready()
    finally:
        launch.stop_later()  # the log is checked for tracebacks at the session's end


@pytest.fixture(scope="session")
def server(servers: dict[str, Server]) -> Server:
    """The server for the OpenAI API tests."""
    return servers["plain"]


@pytest.fixture(scope="session")
def lora_server(servers: dict[str, Server]) -> Server:
    """The server with the demo adapters, an admin key and an adapter root."""
    return servers["lora"]


@pytest.fixture(scope="session")
def client(server: Server) -> openai.OpenAI:
    """The official OpenAI client, pointed at the server under test."""
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="session")
def lora_client(lora_server: Server) -> openai.OpenAI:
    """The official OpenAI client, pointed at the server with adapters."""
    return openai.OpenAI(base_url=f"{lora_server.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=60)


def demo_dir(server: Server, name: str) -> Path:
    """Where the embedded model's demo adapter `name` was built."""
    return server.cache_dir / BUILD_VERSION / "adapters" / name


@pytest.fixture(scope="session")
def versions(lora_server: Server) -> dict[str, Path]:
    """Three weight versions: v1 = demo-alpha, v2 = demo-beta, v3 = demo-alpha with B × -1."""
    root = lora_server.adapter_root
    return {
        "v1": copy_adapter(demo_dir(lora_server, "demo-alpha"), root / "v1"),
        "v2": copy_adapter(demo_dir(lora_server, "demo-beta"), root / "v2"),
        "v3": copy_adapter(demo_dir(lora_server, "demo-alpha"), root / "v3", scale=-1.0),
    }


# vLLM's own OpenAI server on the embedded model, started once per session for the modules that compare
# against it (plugin isolation, side-by-side answers), with the engine flags of the plain test server, so
# the same request gets the same tokens from both. Two settings serve the plugin-isolation test and change
# nothing else: vLLM logs at debug level (it names the plugins it loads only there), and a wattserve
# busy-wait setting is left in its environment, which must not reach a vLLM that is not wattserve's.
STRAY_SPIN_S = "0.02"


@dataclass(frozen=True)
class VllmReference:
    """vLLM's server under comparison: where it answers, and its log."""

    base_url: str
    log_path: Path

    def http(self) -> httpx.Client:
        """A plain HTTP client (vLLM's server runs without a key)."""
        return httpx.Client(base_url=self.base_url, timeout=120)


@pytest.fixture(scope="session")
def vllm_reference(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmReference]:
    """vLLM's server, once it has answered one completion."""
    model_dir = ensure_default_model(server.cache_dir).model_dir  # built by the wattserve fixtures already
    log_path = tmp_path_factory.mktemp("vllm-serve") / "vllm.log"
    env = {
        **{name: value for name, value in os.environ.items() if name != plugin_gate.ENV},
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_LOGGING_LEVEL": "DEBUG",
        spin_tail.ENV: STRAY_SPIN_S,
    }
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir)]
    command += ["--served-model-name", MODEL, "--dtype", "float32", *ENGINE_FLAGS]
    command += ["--enable-prompt-tokens-details"]  # as the plain test server has it
    process, url = start_server(command, log_path, env=env, timeout_s=STARTUP_TIMEOUT_S)
    try:
        body = {"model": MODEL, "prompt": "hello", "max_tokens": 4}
        response = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
        assert response.status_code == 200, response.text
        yield VllmReference(url, log_path)
    finally:
        stop_server(process)
