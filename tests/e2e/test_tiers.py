"""Service tiers on the real server: flex waits its turn (bounded, 429 when full), priority overtakes, and a
carbon signal from a local file holds flex work back and accounts for the grams it avoided.

The module's server runs 4 requests at once so queues form with little load; its grid intensity comes
from a file the tests rewrite; its engine busy-waits 20 ms between steps. The deadlines below only catch
hangs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.engine import spin_tail
from tests.e2e.conftest import API_KEY, MODEL, _Launch
from tests.waiting import until, wait_until

pytestmark = pytest.mark.e2e
HANG_S = 120
FLEX_WAIT_S = 6.0
FLEX_BATCH = 3
FLEX_QUEUE = 6
DIRTY, CLEAN, LIMIT = 500.0, 100.0, 300.0  # gCO2e/kWh
SPIN_S = 0.02
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("grid") / "intensity.csv"
    path.write_text(f"timestamp,g_per_kwh\n{time.time() - 3600:.0f},{CLEAN}\n")
    return path


def set_grid(grid: Path, value: float) -> None:
    """Append a point for now: the file keeps its history, as a real intensity feed does."""
    with grid.open("a") as handle:
        handle.write(f"{time.time():.3f},{value}\n")


@pytest.fixture(scope="module")
def tiered(tmp_path_factory: pytest.TempPathFactory, grid: Path) -> Iterator[_Launch]:
    flags = ["--max-num-seqs", "4", "--max-concurrent-requests", "4", "--max-queued-requests", "32"]
    flags += ["--flex-max-wait-seconds", str(FLEX_WAIT_S), "--flex-max-queued", str(FLEX_QUEUE)]
    flags += ["--flex-batch-size", str(FLEX_BATCH), "--energy-meter", "estimated", "--no-enable-lora"]
    flags += ["--grid-intensity-source", str(grid), "--grid-intensity-refresh-seconds", "0.2"]
    flags += ["--flex-max-intensity", str(LIMIT), "--engine-spin-seconds", str(SPIN_S)]
    launch = _Launch(tmp_path_factory.mktemp("tiered"), flags)
    launch.ready()
    yield launch
    launch.stop_later()


def body(max_tokens: int, tier: str | None = None, **extra: object) -> dict:
    payload = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": max_tokens, "ignore_eos": True}
    return payload | ({"service_tier": tier} if tier else {}) | extra


def flex_lane_waits(server: _Launch) -> list[tuple[float, float]]:
    page = httpx.get(f"{server.base_url}/metrics").text
    for family in text_string_to_metric_families(page):
        if family.name == "wattserve_flex_lane_wait_seconds":
            return [(float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket")]
    raise AssertionError("no flex lane histogram")


async def timed(client: httpx.AsyncClient, payload: dict) -> tuple[httpx.Response, float, float]:
    sent = time.monotonic()
    response = await client.post("/v1/completions", json=payload)
    return response, sent, time.monotonic()


def gauge(server: _Launch, name: str) -> float:
    page = httpx.get(f"{server.base_url}/metrics").text
    return next(
        sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
        if sample.name == name
    )


def queued(server: _Launch) -> float:
    return gauge(server, "wattserve_requests_queued")


def test_tiers_are_echoed_in_the_response_and_usage(tiered: _Launch) -> None:
    with httpx.Client(base_url=tiered.base_url, headers=AUTH, timeout=HANG_S) as http:
        for asked, served in [
            (None, "default"),
            ("auto", "default"),
            ("priority", "priority"),
            ("flex", "flex"),
        ]:
            answer = http.post("/v1/completions", json=body(4, asked)).json()
            assert (answer["service_tier"], answer["usage"]["service_tier"]) == (served, served)
        streamed = http.post("/v1/completions", json=body(4, "flex", stream=True))
    assert '"service_tier":"flex"' in streamed.text
    assert streamed.text.endswith("data: [DONE]\n\n")


def test_flex_waits_for_room_at_most_its_bound_and_a_full_lane_is_429(tiered: _Launch) -> None:
    async def run() -> tuple[list, list, httpx.Response]:
        async with httpx.AsyncClient(base_url=tiered.base_url, headers=AUTH, timeout=HANG_S) as client:
            # The engine's four places taken by long default streams: no room for flex to ride along.
            busy = [asyncio.create_task(timed(client, body(600))) for _ in range(4)]
            await until(lambda: gauge(tiered, "wattserve_requests_running") == 4, "four running", HANG_S)
            flex = [asyncio.create_task(timed(client, body(8, "flex"))) for _ in range(FLEX_QUEUE)]
            await until(
                lambda: gauge(tiered, "wattserve_requests_in_flex_lane") == FLEX_QUEUE,
                "the lane full",
                HANG_S,
            )
            refused = await client.post("/v1/completions", json=body(8, "flex"))
            return await asyncio.gather(*busy), await asyncio.gather(*flex), refused

    busy, flex, refused = asyncio.run(run())
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert all(response.status_code == 200 for response, _, _ in busy + flex)
    # Released by the bound, a flex request still needs a free place: at worst it waits for the running
    # batch to end (+2 s for its own 8 tokens and scheduling).
    batch_s = max(done - sent for _, sent, done in busy)
    assert all(done - sent <= FLEX_WAIT_S + batch_s + 2.0 for _, sent, done in flex)
    buckets = flex_lane_waits(tiered)
    within_bound = next(count for le, count in buckets if le >= FLEX_WAIT_S + 1)
    assert within_bound == buckets[-1][1]  # no flex request waited in the lane past its bound (+1 s)


def test_priority_requests_overtake_queued_default_ones(tiered: _Launch) -> None:
    async def hold_a_place(client: httpx.AsyncClient, started: asyncio.Event, release: asyncio.Event) -> None:
        async with client.stream("POST", "/v1/completions", json=body(900, stream=True)) as response:
            async for _ in response.aiter_lines():
                started.set()
                if release.is_set():
                    return  # closing the stream frees its place

    async def run() -> tuple[bool, list[int]]:
        async with httpx.AsyncClient(base_url=tiered.base_url, headers=AUTH, timeout=HANG_S) as client:
            started, releases = [asyncio.Event() for _ in range(4)], [asyncio.Event() for _ in range(4)]
            holders = [
                asyncio.create_task(hold_a_place(client, *pair))
                for pair in zip(started, releases, strict=True)
            ]
            await asyncio.gather(*(event.wait() for event in started))  # the engine's 4 places are taken
            defaults = [asyncio.create_task(client.post("/v1/completions", json=body(4))) for _ in range(3)]
            await until(lambda: queued(tiered) == 3, "three queued", HANG_S)
            urgent = asyncio.create_task(client.post("/v1/completions", json=body(4, "priority")))
            await until(lambda: queued(tiered) == 4, "four queued", HANG_S)
            releases[0].set()  # one place frees: the priority request must take it
            await urgent
            overtook = not any(task.done() for task in defaults)
            for release in releases[1:]:
                release.set()
            statuses = [response.status_code for response in await asyncio.gather(*defaults)]
            await asyncio.gather(*holders)
            return overtook and urgent.result().status_code == 200, statuses

    overtook, statuses = asyncio.run(run())
    assert overtook
    assert statuses == [200, 200, 200]


def energy(server: _Launch) -> dict:
    return httpx.get(f"{server.base_url}/v1/energy", headers=AUTH).json()


def test_a_dirty_grid_holds_flex_work_until_it_is_clean_and_the_avoided_grams_add_up(
    tiered: _Launch, grid: Path
) -> None:
    before = energy(tiered)
    set_grid(grid, DIRTY)
    wait_until(
        lambda: gauge(tiered, "wattserve_grid_intensity_grams_per_kwh") == DIRTY,
        "the dirty grid read",
        HANG_S,
    )

    async def run() -> list[tuple[httpx.Response, float, float]]:
        async with httpx.AsyncClient(base_url=tiered.base_url, headers=AUTH, timeout=HANG_S) as client:
            # A full batch on an idle engine would go at once, were the grid not dirty: all of it seen
            # waiting in the lane is the hold.
            held = [asyncio.create_task(timed(client, body(16, "flex"))) for _ in range(FLEX_BATCH)]
            await until(
                lambda: gauge(tiered, "wattserve_requests_in_flex_lane") == FLEX_BATCH,
                "a batch in the lane",
                HANG_S,
            )
            assert not any(task.done() for task in held)
            set_grid(grid, CLEAN)
            return await asyncio.gather(*held)

    results = asyncio.run(run())
    after = energy(tiered)
    assert all(response.status_code == 200 for response, _, _ in results)
    flex_before, flex_after = before["tiers"].get("flex", {}), after["tiers"]["flex"]
    lane_s = flex_after["flex_lane_wait_seconds"] - flex_before.get("flex_lane_wait_seconds", 0.0)
    assert lane_s / FLEX_BATCH < FLEX_WAIT_S - 2  # released by the clean grid, well before the bound
    usage = [response.json()["usage"]["energy"] for response, _, _ in results]
    # Each ran at the clean grid's intensity; held back, it avoided what it would have cost at arrival.
    expected = sum(e["joules"] / 3.6e6 * DIRTY - e["co2e_grams"] for e in usage)
    assert expected > 0
    avoided = after["co2e_avoided_grams"] - before["co2e_avoided_grams"]
    assert avoided == pytest.approx(expected, rel=0.01)
    tier_avoided = flex_after["co2e_avoided_grams"] - flex_before.get("co2e_avoided_grams", 0.0)
    assert tier_avoided == pytest.approx(expected, rel=0.01)
    assert all(e["co2e_grams"] == pytest.approx(e["joules"] / 3.6e6 * CLEAN, rel=0.01) for e in usage)


def test_the_short_busy_wait_acts_in_the_engine_core_and_its_worker(tiered: _Launch) -> None:
    """vLLM's own busy-wait is a second per process after every step: a core each, for nothing.

    The plugin says where it acted; what the short spin saves is measured by the energy-policy benchmark.
    """
    with httpx.Client(base_url=tiered.base_url, headers=AUTH, timeout=HANG_S) as http:
        assert http.post("/v1/completions", json=body(4)).status_code == 200
    applied = spin_tail.APPLIED % (SPIN_S, spin_tail.ENV)
    processes = {
        line.split(" pid=")[0].lstrip("(")
        for line in tiered.log_path.read_text().splitlines()
        if applied in line
    }
    assert {"EngineCore"} <= processes
    assert any("Worker" in process for process in processes), processes
