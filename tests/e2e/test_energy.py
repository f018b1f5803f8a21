"""Energy on the real server (estimated meter on CPU): responses, idle and metered energy add up."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import API_KEY, MODEL, Server
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e
ADAPTERS = [MODEL, "demo-alpha", "demo-beta"]
LABEL = {MODEL: "base", "demo-alpha": "demo-alpha", "demo-beta": "demo-beta"}
DOCUMENTED_LABELS = {
    "wattserve_time_to_first_token_seconds": {"adapter", "tier"},
    "wattserve_inter_token_latency_seconds": {"adapter", "tier"},
    "wattserve_e2e_request_latency_seconds": {"adapter", "tier"},
    "wattserve_request_queue_time_seconds": {"adapter", "tier"},
    "wattserve_request_energy_joules": {"adapter", "tier"},
    "wattserve_request_dynamic_energy_joules": {"adapter", "tier"},
    "wattserve_request_joules_per_output_token": {"adapter", "tier"},
    "wattserve_requests": {"adapter", "tier", "status"},
    "wattserve_prompt_tokens": {"adapter", "tier"},
    "wattserve_generation_tokens": {"adapter", "tier"},
    "wattserve_energy_joules": {"adapter", "tier", "phase"},
    "wattserve_dynamic_energy_joules": {"adapter", "tier"},
    "wattserve_idle_energy_joules": set(),
    "wattserve_metered_energy_joules": {"source"},
    "wattserve_co2e_grams": {"adapter", "tier"},
    "wattserve_power_watts": {"device", "source"},
    "wattserve_idle_floor_watts": {"source"},
    "wattserve_requests_running": set(),
    "wattserve_requests_waiting": set(),
    "wattserve_requests_queued": set(),
    "wattserve_requests_admitted": set(),
    "wattserve_energy_meter_info": {"source"},
}


def scrape(http: httpx.Client) -> dict[str, list]:
    families = {}
    for family in text_string_to_metric_families(http.get("/metrics").text):
        families[family.name] = family.samples
    return families


def total(families: dict[str, list], sample_name: str, **labels: str) -> float:
    family = sample_name.removesuffix("_total")
    return sum(
        s.value
        for s in families.get(family, [])
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def one(http: httpx.AsyncClient, index: int) -> tuple[str, float]:
    model = ADAPTERS[index % 3]
    body = {"model": model, "prompt": f"Number {index} says", "max_tokens": 8 + index % 17, "temperature": 0}
    if index % 2:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
        response = await http.post("/v1/completions", json=body)
        last = [line for line in response.text.split("\n\n") if line.startswith("data: {")][-1]
        usage = json.loads(last.removeprefix("data: "))["usage"]
    else:
        response = await http.post("/v1/completions", json=body)
        usage = response.json()["usage"]
    assert usage["energy"]["source"] == "estimated"
    assert usage["energy"]["co2e_grams"] >= 0
    return model, usage["energy"]["joules"]


def test_responses_plus_idle_equal_metered_energy(lora_server: Server) -> None:
    with lora_server.http() as http:
        before = scrape(http)

        async def run() -> list[tuple[str, float]]:
            headers = {"Authorization": f"Bearer {API_KEY}"}
            async with httpx.AsyncClient(
                base_url=lora_server.base_url, headers=headers, timeout=120
            ) as client:
                return await asyncio.gather(*(one(client, i) for i in range(48)))

        results = asyncio.run(run())
        after = scrape(http)
        summary = http.get("/v1/energy").json()
    reported = sum(joules for _, joules in results)
    metered = total(after, "wattserve_metered_energy_joules_total") - total(
        before, "wattserve_metered_energy_joules_total"
    )
    idle = total(after, "wattserve_idle_energy_joules_total") - total(
        before, "wattserve_idle_energy_joules_total"
    )
    assert reported > 0
    assert reported + idle == pytest.approx(metered, rel=0.01)
    for model in ADAPTERS:
        label = LABEL[model]
        counted = total(after, "wattserve_energy_joules_total", adapter=label) - total(
            before, "wattserve_energy_joules_total", adapter=label
        )
        assert counted == pytest.approx(sum(j for m, j in results if m == model), rel=0.01, abs=1e-9)
    assert summary["source"] == "estimated"
    assert summary["estimated"] is True
    assert summary["joules_since_start"] >= metered


def test_every_metric_parses_with_its_documented_labels(lora_server: Server) -> None:
    with lora_server.http() as http:
        families = list(text_string_to_metric_families(http.get("/metrics").text))
    ours = {family.name: family for family in families if family.name.startswith("wattserve_")}
    assert set(DOCUMENTED_LABELS) <= set(ours)
    for name, labels in DOCUMENTED_LABELS.items():
        for sample in ours[name].samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample.labels)
    assert any(family.name.startswith("vllm:") for family in families)


SATURATING_STREAMS = 48  # more than the server's --max-num-seqs 32: some wait in the engine's queue
SATURATING_TOKENS = 160


def energy(http: httpx.Client) -> dict:
    return http.get("/v1/energy").json()


def wait_for_measured_floor(http: httpx.Client) -> dict:
    """The floor is learnt from an idle stretch: give the server one (only a hang reaches the deadline)."""
    wait_until(lambda: energy(http)["idle_floor_measured"], "the idle floor measured", timeout_s=120)
    return energy(http)


def test_saturated_engine_books_no_idle_and_dynamic_is_what_rose_above_the_floor(lora_server: Server) -> None:
    with lora_server.http() as http:
        before = wait_for_measured_floor(http)
        marks: dict[str, dict] = {}
        first_tokens = threading.Semaphore(0)
        first_finished = threading.Event()

        async def stream(client: httpx.AsyncClient, index: int) -> dict:
            body = {
                "model": ADAPTERS[index % 3],
                "prompt": f"Saturation {index}",
                "max_tokens": SATURATING_TOKENS,
                "ignore_eos": True,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            usage, started = None, False
            async with client.stream("POST", "/v1/completions", json=body) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: {"):
                        chunk = json.loads(line.removeprefix("data: "))
                        if chunk.get("usage"):
                            usage = chunk["usage"]
                        elif not started:
                            started = True
                            first_tokens.release()
            first_finished.set()
            return usage

        def mark_window() -> None:
            # Saturated: as many streams as the engine runs at once have their first token, none finished.
            for _ in range(32):
                first_tokens.acquire()
            with lora_server.http() as marker:
                marks["start"] = energy(marker)
                first_finished.wait()
                marks["end"] = energy(marker)

        async def run() -> list[dict]:
            headers = {"Authorization": f"Bearer {API_KEY}"}
            async with httpx.AsyncClient(
                base_url=lora_server.base_url, headers=headers, timeout=300
            ) as client:
                return await asyncio.gather(*(stream(client, i) for i in range(SATURATING_STREAMS)))

        marker = threading.Thread(target=mark_window)
        marker.start()
        usages = asyncio.run(run())
        marker.join(300)
        after = energy(http)

    def delta(key: str, start: dict = before, end: dict = after) -> float:
        return end[key] - start[key]

    # Inside the saturated window the engine always held requests: almost no idle energy.
    window_metered = delta("joules_since_start", marks["start"], marks["end"])
    assert window_metered > 0
    assert delta("idle_joules", marks["start"], marks["end"]) < 0.02 * window_metered
    # Over the whole run, responses and idle add up to what was metered.
    responses = [usage["energy"] for usage in usages]
    joules = sum(e["joules"] for e in responses)
    assert joules + delta("idle_joules") == pytest.approx(delta("joules_since_start"), rel=0.01)
    assert all(0 <= e["dynamic_joules"] <= e["joules"] for e in responses)
    # Dynamic = what the responses were given minus the idle floor (learnt before the run) over the time
    # the engine was busy. Idle stretches are left out on both sides: what the server spends there above
    # the floor (answering these /v1/energy reads, accepting connections) is idle energy, no request's.
    expected_dynamic = joules - before["idle_floor_watts"] * delta("busy_seconds")
    assert sum(e["dynamic_joules"] for e in responses) == pytest.approx(
        expected_dynamic, abs=0.02 * delta("joules_since_start")
    )
