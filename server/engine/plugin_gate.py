"""Whether this vLLM process belongs to wattserve's own server: wattserve's vLLM plugins act only there.

vLLM loads every installed `vllm.general_plugins` entry point into every vLLM process of the environment,
`vllm serve` and the benchmarks' reference server included. wattserve's server sets `ENV` before it builds
its engine; vLLM's engine-core and worker processes inherit it from there, and no other vLLM has it, so a
plain vLLM in the same environment runs as vLLM ships.
"""

from __future__ import annotations

import os

ENV = "WATTSERVE_ENGINE"


def in_wattserve_engine() -> bool:
    """Whether wattserve's server started this process's engine (it set `ENV` to 1)."""
    return os.environ.get(ENV) == "1"
