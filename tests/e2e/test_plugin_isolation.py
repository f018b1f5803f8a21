"""wattserve's vLLM plugins act in wattserve's own engine only, never in vLLM's own server beside it.

Installing wattserve registers its `vllm.general_plugins` entry points, which vLLM loads into every one
of its processes in the environment. vLLM's own server started here loads them too, with a stray spin
setting in its environment, and must run as vLLM ships: no plugin says it acted. wattserve's server, from
the same installation, says where they did.
"""

from __future__ import annotations

import re

import pytest

from server.engine import cpu_lora_fix, plugin_gate, spin_tail
from tests.e2e.conftest import Server, VllmReference

pytestmark = pytest.mark.e2e
# Each plugin's "acted" line, without its values: none may appear in vLLM's own log.
ACTED = [re.escape(cpu_lora_fix.APPLIED % plugin_gate.ENV), re.escape(spin_tail.APPLIED.split("%s")[0])]


def test_vllms_own_server_loads_wattserves_plugins_and_neither_acts(vllm_reference: VllmReference) -> None:
    log = vllm_reference.log_path.read_text()
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
