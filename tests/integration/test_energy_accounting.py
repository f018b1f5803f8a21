"""Energy through the app with a fake engine and a fake meter: usage.energy, /metrics, /v1/energy add up."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.compose import create_app
from server.settings import ServerSettings
from tests.integration.fake_engine import FakeEngine


class TickingMeter:
    """0.5 J more at every read, on two devices."""

    source = "fake"
    devices = ["dev0", "dev1"]  # noqa: RUF012

    def __init__(self) -> None:
        self.reads = 0

    def read_joules(self) -> list[float]:
        self.reads += 1
        return [0.25 * self.reads, 0.25 * self.reads]

    def close(self) -> None:
        pass


def samples(text: str, name: str) -> dict[tuple, float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def test_usage_energy_adds_up_to_the_metered_total() -> None:
    engine = FakeEngine(step_delay_s=0.002)
    settings = ServerSettings(energy_sample_period_s=0.01, max_concurrent_requests=64)
    app = create_app(settings, lambda: engine, meter=TickingMeter())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            bodies = [
                {"model": FakeEngine.served_model_name, "prompt": "a b c", "max_tokens": 5 + i % 7}
                | ({"stream": True, "stream_options": {"include_usage": True}} if i % 2 else {})
                for i in range(40)
            ]
            responses = await asyncio.gather(*(http.post("/v1/completions", json=body) for body in bodies))
            energies = []
            for response in responses:
                if response.headers["content-type"].startswith("text/event-stream"):
                    last = [line for line in response.text.split("\n\n") if line.startswith("data: {")][-1]
                    energies.append(
                        httpx.Response(200, content=last.removeprefix("data: ")).json()["usage"]["energy"]
                    )
                else:
                    energies.append(response.json()["usage"]["energy"])
            # Stop the sampler, then take the last reading here: the ledger ignores a reading older than
            # its last, so whatever the thread handed over is counted or superseded, and /metrics and
            # /v1/energy below describe one and the same ledger state.
            sampler = app.state.wattserve.serving.intake.services.books.sampler
            sampler.stop()
            await sampler.read_now()
            summary = (await http.get("/v1/energy")).json()
            metrics = (await http.get("/metrics")).text
    assert all(energy["source"] == "fake" for energy in energies)
    reported = sum(energy["joules"] for energy in energies)
    assert reported > 0
    assert reported + summary["idle_joules"] == pytest.approx(summary["joules_since_start"], rel=1e-6)
    assert summary["attributed_joules"] == pytest.approx(reported, rel=1e-6)
    by_phase = samples(metrics, "wattserve_energy_joules_total")
    assert sum(by_phase.values()) == pytest.approx(reported, rel=1e-6)
    idle = samples(metrics, "wattserve_idle_energy_joules_total")
    assert sum(idle.values()) == pytest.approx(summary["idle_joules"], rel=1e-6)
    ok = (("adapter", "base"), ("status", "ok"), ("tier", "default"))
    assert samples(metrics, "wattserve_requests_total")[ok] == 40
    assert sum(samples(metrics, "wattserve_generation_tokens_total").values()) == sum(
        5 + i % 7 for i in range(40)
    )
