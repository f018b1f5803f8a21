"""Starting the real server as deployments do: a `vllm serve` YAML config, a startup adapter that cannot
load, a flag wattserve does not support.

A replica must either come up with everything it was started with or not come up at all: a startup
adapter that fails stops the process (exit status 1, the reason logged) instead of a healthy server
missing it, and an unsupported vLLM flag stops it with one line naming the flag (exit status 2).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.runtime.lifecycle import EXIT_STARTUP_FAILED
from tests.e2e.conftest import ENGINE_FLAGS, Server, _Launch, demo_dir
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e
EXIT_DEADLINE_S = 300  # an engine load, then the exit: only a hang reaches it
ALIASES = ["tiny", "tiny-alias"]


def deployment_yaml(adapter: Path) -> str:
    """Flags deployments carry in their manifests, in vLLM's config-file form."""
    return f"""\
served-model-name: [{", ".join(ALIASES)}]
lora-modules:
  - '{{"name": "sql", "path": "{adapter}", "base_model_name": "tiny"}}'
max-log-len: 200
enable-request-id-headers: true
response-role: assistant
chat-template-content-format: string
enable-force-include-usage: true
enable-server-load-tracking: true
api-server-count: 1
return-tokens-as-token-ids: false
default-chat-template-kwargs: {{enable_thinking: false}}
enable-log-outputs: true
disable-fastapi-docs: false
allow-credentials: false
fingerprint-mode: hash
"""


@pytest.fixture(scope="module")
def launches(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, _Launch]]:
    # `server` first: the embedded model and its demo adapters are built in the shared cache.
    config = tmp_path_factory.mktemp("config") / "vllm.yaml"
    config.write_text(deployment_yaml(demo_dir(server, "demo-alpha")))
    started = {
        "configured": _Launch(tmp_path_factory.mktemp("configured"), ["--config", str(config)]),
        "broken": _Launch(
            tmp_path_factory.mktemp("broken"),
            ["--lora-modules", f"broken={tmp_path_factory.getbasetemp()}/none"],
        ),
    }
    yield started
    for launch in started.values():
        if launch.process.poll() is None:
            launch.stop_later()


def test_a_deployment_config_starts_and_serves_as_vllm_would(launches: dict[str, _Launch]) -> None:
    configured = launches["configured"].ready()
    with configured.http() as http:
        cards = [card["id"] for card in http.get("/v1/models").json()["data"]]
        assert cards[:2] == ALIASES
        assert "sql" in cards
        body = {"model": "tiny-alias", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        answer = http.post("/v1/chat/completions", json=body, headers={"X-Request-Id": "deploy-1"})
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-request-id"] == "deploy-1"
        assert answer.json()["usage"]["completion_tokens"] == 4  # forced usage
        assert answer.json()["system_fingerprint"].startswith("vllm-")
        adapter = http.post("/v1/completions", json={"model": "sql", "prompt": "hi", "max_tokens": 4})
        assert adapter.status_code == 200, adapter.text


def test_a_startup_adapter_that_cannot_load_stops_the_process(launches: dict[str, _Launch]) -> None:
    broken = launches["broken"]
    wait_until(lambda: broken.process.poll() is not None, "the server exiting", EXIT_DEADLINE_S)
    log = broken.log_path.read_text()
    assert broken.process.returncode == EXIT_STARTUP_FAILED, log[-3000:]
    assert "adapter not loaded: broken" in log
    assert "--allow-missing-adapters" in log


def test_an_unsupported_vllm_flag_stops_startup_with_one_line() -> None:
    command = [sys.executable, "-m", "server", "serve", *ENGINE_FLAGS, "--tool-server", "demo"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert finished.returncode == 2
    # vLLM's import may log a line of its own first (Triton on CPU); wattserve's refusal is one line.
    (refusal,) = [line for line in finished.stderr.splitlines() if line.startswith("wattserve:")]
    assert "--tool-server" in refusal
    assert finished.stderr.strip().endswith(refusal)
