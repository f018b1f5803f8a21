"""On a real GPU: the joules the engine's worker reports through `collective_rpc` match NVML read here.

Both read the same GPU's total-energy counter, the worker in its own process (its cached reading), this
process directly. No two moments are compared blind: each worker reading is bracketed by two readings
here (one before the worker's probe read, one after the RPC returned), so over the window the worker's
joules must lie within the bracket, and the bracket is checked to be within 1 % of this process's figure.
Run with `pytest -m gpu tests/gpu -s` on a machine with the GPU extra (vLLM's CUDA build).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.default_model import ensure_default_model
from server.energy.meters.device_probe import NVML
from server.energy.meters.nvml import NvmlMeter
from server.engine.types import SamplingSpec
from tests.waiting import until_checked

pytestmark = pytest.mark.gpu

PROBE_PERIOD_S = 0.02
LOAD_REQUESTS = 64


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_default_model(tmp_path_factory.mktemp("model-cache")).model_dir


@pytest.fixture
async def engine(model_dir: Path) -> AsyncIterator[object]:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here (vLLM's CPU build)")
    from vllm import AsyncEngineArgs  # noqa: PLC0415 - only where a GPU build is installed
    from vllm.v1.engine.async_llm import AsyncLLM  # noqa: PLC0415

    from server.engine.step_relay import StepRelay  # noqa: PLC0415
    from server.engine.vllm_engine import VllmEngine, engine_config  # noqa: PLC0415
    from server.engine.worker_energy import add_energy_extension  # noqa: PLC0415

    args = AsyncEngineArgs(
        model=str(model_dir),
        dtype="float32",
        max_model_len=512,
        gpu_memory_utilization=0.3,
        enforce_eager=True,
    )
    assert add_energy_extension(args, required=True)
    llm = AsyncLLM.from_vllm_config(engine_config(args), disable_log_stats=True)
    try:
        yield VllmEngine(llm, ["model"], StepRelay())
    finally:
        llm.shutdown()


async def bracketed(workers: object, here: NvmlMeter) -> tuple[float, float, float]:
    """(here before, the worker's reading, here after), the worker's taken by a probe read after `before`."""
    before = here.read_joules()[0]
    (seen,) = await asyncio.to_thread(workers.read_joules)  # type: ignore[attr-defined]
    latest: list[float] = [seen]

    async def fresh() -> bool:
        # A value other than `seen` comes from a probe read after that RPC, so after `before`.
        (latest[0],) = await asyncio.to_thread(workers.read_joules)  # type: ignore[attr-defined]
        return latest[0] != seen

    await until_checked(fresh, "the worker's probe read the counter again", timeout_s=10)
    return before, latest[0], here.read_joules()[0]


async def test_worker_joules_match_nvml_read_here_within_1_percent(engine: object) -> None:
    from server.engine.worker_meter import WorkerEnergyMeter  # noqa: PLC0415

    workers = await WorkerEnergyMeter.open(engine, watts_per_core=15.0, period_s=PROBE_PERIOD_S)  # type: ignore[arg-type]
    (reading,) = workers.device_readings()
    assert reading.kind == NVML, reading.note
    here = NvmlMeter(reading.device)  # the worker's GPU, by the UUID it reported
    try:
        start = await bracketed(workers, here)

        async def one(index: int) -> None:
            prompt = await engine.render_completion(f"request {index}")  # type: ignore[attr-defined]
            spec = SamplingSpec(max_tokens=400, temperature=1.0, ignore_eos=True)
            async for _ in engine.generate(prompt, spec, f"load-{index}"):  # type: ignore[attr-defined]
                pass

        await asyncio.gather(*(one(i) for i in range(LOAD_REQUESTS)))
        end = await bracketed(workers, here)
    finally:
        here.close()
    worker_j = end[1] - start[1]
    low_j, high_j = end[0] - start[2], end[2] - start[0]  # what the counter can have done in between
    print(f"worker {worker_j:.1f} J; here {low_j:.1f}..{high_j:.1f} J")  # noqa: T201 - the figures
    assert low_j <= worker_j <= high_j
    here_j = end[0] - start[0]
    assert high_j == pytest.approx(here_j, rel=0.01)
    assert low_j == pytest.approx(here_j, rel=0.01)
    assert worker_j == pytest.approx(here_j, rel=0.01)
