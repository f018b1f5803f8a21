"""Energy on the real server (estimated meter on CPU): responses, idle and metered energy add up."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import API_KEY, MODEL, Server

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
