"""What routers read off the app: served adapter names in vLLM's LoRA info, residency, requests waiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY, Gauge

from server.settings import ServerSettings
from tests.integration.fake_engine import FakeEngine
from tests.integration.lora_engine import LoraEngine, samples, serving, values, write_adapter
from tests.waiting import until_checked

LORA_INFO = "vllm:lora_requests_info"


@pytest.fixture
def vllm_lora_info() -> Iterator[Gauge]:
    """vLLM's gauge as its Prometheus stat logger declares it, on the process-wide registry.

    vllm/v1/metrics/loggers.py: one series per (max_lora, waiting, running) label set, valued with the
    time it was last set; here the test sets the times, so which sample is newest is not left to a clock.
    """
    gauge = Gauge(
        LORA_INFO,
        "Running stats on lora requests.",
        ["max_lora", "waiting_lora_adapters", "running_lora_adapters"],
        registry=REGISTRY,
    )
    yield gauge
    REGISTRY.unregister(gauge)


async def newest_lora_info(http: httpx.AsyncClient) -> dict[str, str]:
    """The labels of the newest `vllm:lora_requests_info` sample, as a router reads it."""
    rows = await samples(http, LORA_INFO)
    return max(rows, key=lambda row: row[1])[0]


async def test_lora_requests_info_names_adapters_as_clients_do_before_and_after_a_swap(
    tmp_path: Path, vllm_lora_info: Gauge
) -> None:
    engine = LoraEngine()
    settings = ServerSettings(
        adapter_roots=[tmp_path], lora_modules=[f"demo={write_adapter(tmp_path / 'v1')}"]
    )
    async with serving(settings, engine) as http:
        old = engine.added[-1].engine_name
        assert "@" in old  # the engine's key is not the name clients send
        vllm_lora_info.labels("2", "", old).set(1000.0)
        assert await newest_lora_info(http) == {
            "max_lora": "2",
            "waiting_lora_adapters": "",
            "running_lora_adapters": "demo",
        }

        swapped = await http.post(
            "/v1/adapters", json={"name": "demo", "path": str(write_adapter(tmp_path / "v2"))}
        )
        assert swapped.status_code == 200, swapped.text
        new = engine.added[-1].engine_name
        assert new != old
        # During the swap both versions run, and a request waits on the new one.
        vllm_lora_info.labels("2", new, f"{old},{new}").set(3000.0)
        # An older sample whose labels become those of the first one: the two merge, the newer time kept.
        vllm_lora_info.labels("2", "", new).set(2000.0)

        rows = await samples(http, LORA_INFO)
        label_sets = [tuple(sorted(labels.items())) for labels, _ in rows]
        assert len(label_sets) == len(set(label_sets)), rows  # a repeated label set breaks the scrape
        assert all("@" not in value and "#" not in value for labels, _ in rows for value in labels.values())
        assert await newest_lora_info(http) == {
            "max_lora": "2",
            "waiting_lora_adapters": "demo",
            "running_lora_adapters": "demo",
        }
        merged = {labels["waiting_lora_adapters"]: value for labels, value in rows}
        assert merged == {"": 2000.0, "demo": 3000.0}


async def resident(http: httpx.AsyncClient) -> set[tuple[str, str, str]]:
    rows = await samples(http, "wattserve_adapter_resident")
    assert all(value == 1 for _, value in rows)
    return {(labels["adapter"], labels["slot"], labels["pinned"]) for labels, _ in rows}


async def test_residency_series_follow_loads_pins_and_unloads(tmp_path: Path) -> None:
    engine = LoraEngine(max_loras=2)
    settings = ServerSettings(adapter_roots=[tmp_path], lora_modules=[f"a={write_adapter(tmp_path / 'a')}"])
    async with serving(settings, engine) as http:
        assert await resident(http) == {("a", "gpu", "false")}

        async def load(name: str) -> None:
            answer = await http.post(
                "/v1/adapters", json={"name": name, "path": str(write_adapter(tmp_path / name))}
            )
            assert answer.status_code == 200, answer.text

        await load("b")
        assert await resident(http) == {("a", "gpu", "false"), ("b", "gpu", "false")}
        # Three versions in two slots: vLLM's LRU decides which sit in a slot, unseen from here.
        await load("c")
        assert await resident(http) == {("a", "cpu", "false"), ("b", "cpu", "false"), ("c", "cpu", "false")}
        assert (await http.delete("/v1/adapters/c")).status_code == 200
        assert await resident(http) == {("a", "gpu", "false"), ("b", "gpu", "false")}
        assert (await http.post("/v1/adapters/a/pin")).status_code == 200
        assert await resident(http) == {("a", "gpu", "true"), ("b", "gpu", "false")}
        # vLLM cannot unpin: the engine keeps the version pinned, and the gauge says so.
        assert (await http.post("/v1/adapters/a/unpin")).status_code == 200
        assert await resident(http) == {("a", "gpu", "true"), ("b", "gpu", "false")}
        assert (await http.delete("/v1/adapters/b")).status_code == 200
        assert await resident(http) == {("a", "gpu", "true")}


class HeldEngine(FakeEngine):
    """Generates only once `go` is set: an admitted request holds its slot until then."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()

    async def generate(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        await self.go.wait()
        async for step in super().generate(*args, **kwargs):
            yield step


WAITING = ("wattserve_requests_queued", "wattserve_requests_in_flex_lane", "wattserve_num_requests_waiting")


async def test_requests_waiting_counts_admission_queue_flex_lane_and_the_engine_queue() -> None:
    engine = HeldEngine()
    # One request at a time; flex requests stay in the lane (no batch of 50 forms, no wait bound is reached).
    settings = ServerSettings(
        max_concurrent_requests=1, max_queued_requests=10, flex_batch_size=50, flex_max_wait_seconds=600
    )
    body = {"model": FakeEngine.served_model_name, "prompt": "a b", "max_tokens": 2}
    async with serving(settings, engine) as http:
        default = [asyncio.create_task(http.post("/v1/completions", json=body)) for _ in range(4)]
        flex = [
            asyncio.create_task(http.post("/v1/completions", json=body | {"service_tier": "flex"}))
            for _ in range(2)
        ]
        assert engine.on_step is not None
        # vLLM's scheduler: a full batch (so no flex request boards it) and three in its own queue.
        engine.on_step(False, FakeEngine.max_num_seqs, 3)
        last: dict[str, float] = {}

        async def held() -> bool:
            last.update(await values(http, *WAITING))
            return last["wattserve_requests_queued"] == 3 and last["wattserve_requests_in_flex_lane"] == 2

        await until_checked(held, "three requests queued for admission and two in the flex lane")
        assert last["wattserve_num_requests_waiting"] == 3 + 2 + 3

        for task in flex:
            task.cancel()
        engine.go.set()
        answers = await asyncio.gather(*default)
        assert [answer.status_code for answer in answers] == [200] * 4
        await asyncio.gather(*flex, return_exceptions=True)
        engine.on_step(True, 0, 0)
        assert (await values(http, *WAITING))["wattserve_num_requests_waiting"] == 0
