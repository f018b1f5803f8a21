"""A fake engine that takes adapters, and the app around it, for the adapter and router-metric tests."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from adapters.types import AdapterRef
from server.compose import create_app
from server.energy.meters.base import NullEnergyMeter
from server.settings import ServerSettings
from tests.integration.fake_engine import FakeEngine


class LoraEngine(FakeEngine):
    """Takes adapters (a load waits for `loads_open`, open by default) and records each one it took."""

    lora_enabled = True
    max_lora_rank = 8
    max_loras = 2

    def __init__(self, *, max_loras: int = 2) -> None:
        super().__init__()
        self.max_loras = max_loras
        self.added: list[AdapterRef] = []
        self.loads_open = asyncio.Event()
        self.loads_open.set()

    async def add_lora(self, ref: AdapterRef) -> None:
        self.added.append(ref)
        await self.loads_open.wait()

    async def remove_lora(self, adapter_id: int) -> None:
        pass

    async def pin_lora(self, adapter_id: int) -> None:
        pass


def write_adapter(directory: Path) -> Path:
    """A LoRA folder the fake engine's base model accepts."""
    directory.mkdir(parents=True)
    config = {
        "peft_type": "LORA",
        "r": 8,
        "lora_alpha": 16,
        "target_modules": ["q_proj"],
        "base_model_name_or_path": FakeEngine.model_path,
    }
    (directory / "adapter_config.json").write_text(json.dumps(config))
    header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    (directory / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    return directory


@asynccontextmanager
async def serving(settings: ServerSettings, engine: FakeEngine) -> AsyncIterator[httpx.AsyncClient]:
    """The app on `engine`, up, with a client."""
    app = create_app(
        settings.model_copy(update={"scrape_min_interval_ms": 0}), lambda: engine, meter=NullEnergyMeter()
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            yield client


async def samples(http: httpx.AsyncClient, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of family `name` in one scrape, as (labels, value)."""
    page = (await http.get("/metrics")).text
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(page)
        if family.name == name
        for sample in family.samples
    ]


async def values(http: httpx.AsyncClient, *names: str) -> dict[str, float]:
    """The unlabelled gauges `names`, read from one scrape."""
    page = (await http.get("/metrics")).text
    found = {
        family.name: family.samples[0].value
        for family in text_string_to_metric_families(page)
        if family.name in names
    }
    assert set(found) == set(names), f"missing from /metrics: {set(names) - set(found)}"
    return found
