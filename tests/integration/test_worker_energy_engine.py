"""A real vLLM engine (CPU build, embedded model): its worker meters itself through the worker extension.

One engine start: the worker answers `collective_rpc` with its labelled estimate and its node, and the
cumulative joules gathered by the server's worker meter grow once the engine has generated tokens.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from vllm import AsyncEngineArgs
from vllm.v1.engine.async_llm import AsyncLLM

from server.default_model import ensure_default_model
from server.energy.meters.device_probe import ESTIMATED
from server.engine.step_relay import StepRelay
from server.engine.types import SamplingSpec
from server.engine.vllm_engine import VllmEngine, engine_config
from server.engine.worker_energy import EXTENSION, READ_RPC, add_energy_extension
from server.engine.worker_meter import WorkerEnergyMeter
from tests.waiting import until_checked

PROBE_PERIOD_S = 0.05


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_default_model(tmp_path_factory.mktemp("model-cache")).model_dir


@pytest.fixture
async def engine(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[VllmEngine]:
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the embedded model needs little
    args = AsyncEngineArgs(
        model=str(model_dir), dtype="float32", max_model_len=256, max_num_seqs=4, enforce_eager=True
    )
    assert add_energy_extension(args, required=True)
    assert args.worker_extension_cls == EXTENSION
    llm = AsyncLLM.from_vllm_config(engine_config(args), disable_log_stats=True)
    try:
        yield VllmEngine(llm, ["model"], StepRelay())
    finally:
        llm.shutdown()
        # vLLM closes its sockets but leaves its ZMQ context to the collector, whose ResourceWarning is
        # an error here (a server exits instead; this process lives on). Its asyncio context is a shadow
        # of this one: terminating this one ends both.
        llm.engine_core.resources.ctx.destroy(linger=0)


async def test_the_cpu_worker_reports_a_growing_labelled_estimate(engine: VllmEngine) -> None:
    meter = await WorkerEnergyMeter.open(engine, watts_per_core=15.0, period_s=PROBE_PERIOD_S)
    (reading,) = meter.device_readings()
    assert (reading.node, reading.kind) == (socket.gethostname(), ESTIMATED)
    assert reading.device == "cpu-rank0"
    assert "estimated" in reading.note
    assert (meter.source, meter.devices) == ("estimated", [f"{socket.gethostname()}/cpu-rank0"])

    # The server reads the meter on its sampler thread; the RPC itself runs on this loop.
    (before,) = await asyncio.to_thread(meter.read_joules)
    prompt = await engine.render_completion("The energy of a token")
    spec = SamplingSpec(max_tokens=32, temperature=0.0, ignore_eos=True)
    tokens = 0
    async for step in engine.generate(prompt, spec, "energy-1"):
        tokens += step.token_count
    assert tokens == 32

    async def grown() -> bool:
        (joules,) = await asyncio.to_thread(meter.read_joules)
        return joules > before

    # The worker's probe refreshes its cached reading every PROBE_PERIOD_S: wait for the one after the work.
    await until_checked(grown, "the worker's joules grew after generating", timeout_s=30)
    raw = await engine.collective_rpc(READ_RPC)
    assert [reply["kind"] for reply in raw] == [ESTIMATED]  # plain data per worker, as vLLM carries it
