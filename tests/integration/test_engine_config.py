"""wattserve resolves the same engine configuration as `vllm serve` for the same command line.

vLLM sizes its scheduler by usage context: under `vllm serve` (OPENAI_API_SERVER) an H100 gets
max_num_seqs 1024 and max_num_batched_tokens 8192, a bare engine (ENGINE_CONTEXT) 128 and 2048. On the CPU
build both contexts resolve alike, so these tests stand in an H100's table for vLLM's device lookup and
stop the engine before it starts: only the configuration is compared, no engine process runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from vllm.engine.arg_utils import EngineArgs
from vllm.entrypoints.launchers.api_server.entry import build_async_engine_client
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.usage.usage_lib import UsageContext
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.v1.engine.async_llm import AsyncLLM

from server.cli import parse_command_line
from server.default_model import ensure_default_model
from server.engine.cli_args import engine_args_from
from server.engine.vllm_engine import VllmEngine

# vLLM's own table for GPUs with >= 70 GiB that are not A100s (vllm/engine/arg_utils.py).
H100_BATCHED_TOKENS = {UsageContext.LLM_CLASS: 16384, UsageContext.OPENAI_API_SERVER: 8192}
H100_MAX_NUM_SEQS = {UsageContext.LLM_CLASS: 1024, UsageContext.OPENAI_API_SERVER: 1024}
# Everything the scheduler and the KV cache are sized by, plus the context length.
COMPARED = {"scheduler_config": None, "cache_config": None, "model_config": ("max_model_len", "dtype")}


@dataclass
class Captured(Exception):
    """Raised in place of starting the engine, carrying what it was built with."""

    kwargs: dict[str, Any]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_default_model(tmp_path_factory.mktemp("model-cache")).model_dir


@pytest.fixture
def on_h100(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM's batch defaults as it resolves them on an H100."""
    defaults = classmethod(lambda cls, world_size: (H100_BATCHED_TOKENS, H100_MAX_NUM_SEQS))
    monkeypatch.setattr(EngineArgs, "get_batch_defaults", defaults)


@pytest.fixture
def capture_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop `AsyncLLM` construction, however it is reached, and report its arguments."""

    def capture(self: AsyncLLM, *args: Any, **kwargs: Any) -> None:
        raise Captured(kwargs)

    monkeypatch.setattr(AsyncLLM, "__init__", capture)


def wattserve_engine(argv: list[str]) -> dict[str, Any]:
    args = parse_command_line(["serve", *argv])
    with pytest.raises(Captured) as caught:
        VllmEngine.start(engine_args_from(args))
    return caught.value.kwargs


def vllm_serve_engine(argv: list[str]) -> dict[str, Any]:
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)

    async def build() -> None:
        async with build_async_engine_client(args):
            pass

    with pytest.raises(Captured) as caught:
        asyncio.run(build())
    return caught.value.kwargs


@pytest.mark.usefixtures("on_h100", "capture_engine")
def test_engine_is_built_in_the_openai_server_usage_context(model_dir: Path) -> None:
    built = wattserve_engine(["--model", str(model_dir)])
    assert built["usage_context"] == UsageContext.OPENAI_API_SERVER
    scheduler = built["vllm_config"].scheduler_config
    assert (scheduler.max_num_seqs, scheduler.max_num_batched_tokens) == (1024, 8192)


@pytest.mark.usefixtures("on_h100", "capture_engine")
@pytest.mark.parametrize(
    "flags",
    [
        [],
        ["--max-num-seqs", "64", "--enable-prefix-caching"],
        ["--max-model-len", "512", "--max-num-batched-tokens", "4096", "--block-size", "32"],
    ],
)
def test_resolved_configuration_equals_vllm_serve(model_dir: Path, flags: list[str]) -> None:
    argv = ["--model", str(model_dir), "--dtype", "float32", *flags]
    ours, theirs = wattserve_engine(argv), vllm_serve_engine(argv)
    for section, chosen in COMPARED.items():
        mine, vllms = getattr(ours["vllm_config"], section), getattr(theirs["vllm_config"], section)
        names = chosen or [field.name for field in dataclasses.fields(mine)]
        assert {n: getattr(mine, n) for n in names} == {n: getattr(vllms, n) for n in names}, section
    for option in ("usage_context", "log_stats", "log_requests"):
        assert ours[option] == theirs[option], option
