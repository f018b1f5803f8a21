"""wattserve's vLLM plugins act in wattserve's own engine only, never in vLLM's own server beside it.

Installing wattserve registers its `vllm.general_plugins` entry points, which vLLM loads into every one
of its processes in the environment. vLLM's own server started here loads them too, with a stray spin
setting in its environment, and must run as vLLM ships: no plugin says it acted. wattserve's server, from
the same installation, says where they did.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtest.processes import start_server, stop_server
from server.default_model import ensure_default_model
from server.engine import cpu_lora_fix, plugin_gate, spin_tail
from tests.e2e.conftest import MODEL, Server

pytestmark = pytest.mark.e2e
STARTUP_TIMEOUT_S = 300
# Each plugin's "acted" line, without its values: none may appear in vLLM's own log.
ACTED = [re.escape(cpu_lora_fix.APPLIED % plugin_gate.ENV), re.escape(spin_tail.APPLIED.split("%s")[0])]


@pytest.fixture(scope="module")
def vllm_log(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """vLLM's own OpenAI server on the embedded model, after it answered one completion: its log."""
    model_dir = ensure_default_model(server.cache_dir).model_dir  # built by the wattserve fixtures already
    log_path = tmp_path_factory.mktemp("vllm-serve") / "vllm.log"
    env = {
        **{name: value for name, value in os.environ.items() if name != plugin_gate.ENV},
        "VLLM_CPU_KVCACHE_SPACE": "1",
        # vLLM logs the plugins it loads at debug level only: the log must show they were loaded.
        "VLLM_LOGGING_LEVEL": "DEBUG",
        # A spin setting left in the environment must not reach a vLLM that is not wattserve's.
        spin_tail.ENV: "0.02",
    }
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir)]
    command += ["--served-model-name", MODEL, "--max-model-len", "1024", "--dtype", "float32"]
    process, url = start_server(command, log_path, env=env, timeout_s=STARTUP_TIMEOUT_S)
    try:
        body = {"model": MODEL, "prompt": "hello", "max_tokens": 4}
        response = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
        assert response.status_code == 200, response.text
        yield log_path
    finally:
        stop_server(process)


def test_vllms_own_server_loads_wattserves_plugins_and_neither_acts(vllm_log: Path) -> None:
    log = vllm_log.read_text()
    assert "wattserve_cpu_lora_fix -> server.engine.cpu_lora_fix:register" in log
    assert "wattserve_engine_spin -> server.engine.spin_tail:register" in log
    for acted in ACTED:
        assert not re.search(acted, log), f"a wattserve plugin acted in vLLM's own server: {acted}"


def test_wattserves_own_server_says_where_the_lora_fix_acted(server: Server, lora_server: Server) -> None:
    # Neither e2e server sets a busy-wait (tests/e2e/test_tiers.py checks the spin line on one that does);
    # the LoRA fix acts in every engine wattserve starts, with adapters or without.
    applied = cpu_lora_fix.APPLIED % plugin_gate.ENV
    for launched in (server, lora_server):
        processes = {
            line.split(" pid=")[0].lstrip("(")
            for line in launched.log_path.read_text().splitlines()
            if applied in line
        }
        assert any("EngineCore" in process or "Worker" in process for process in processes), processes
