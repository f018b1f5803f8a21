"""response_format schemas through the app: size caps before anything compiles, the engine's grammar check
after, and a client that leaves mid-check stops it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from server.compose import create_app
from server.energy.meters.base import NullEnergyMeter
from server.errors import GrammarTooComplexError
from server.settings import ServerSettings
from tests.integration.fake_engine import FakeEngine
from tests.waiting import until

MODEL = FakeEngine.served_model_name


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
async def http(engine: FakeEngine) -> AsyncIterator[httpx.AsyncClient]:
    settings = ServerSettings(max_schema_enum_values=10, max_schema_properties=10, max_schema_bytes=4096)
    app = create_app(settings, lambda: engine, meter=NullEnergyMeter())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def chat(schema: dict) -> dict:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "a"}],
        "max_tokens": 2,
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    }


def enum_schema(count: int) -> dict:
    return {"type": "object", "properties": {"v": {"enum": [f"e{i}" for i in range(count)]}}}


@pytest.mark.parametrize(
    "schema",
    [
        enum_schema(11),
        {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(11)}},
        {"type": "object", "description": "x" * 5000},
    ],
)
async def test_a_schema_over_a_cap_is_a_400_before_the_engine_compiles_it(
    http: httpx.AsyncClient, engine: FakeEngine, schema: dict
) -> None:
    response = await http.post("/v1/chat/completions", json=chat(schema))
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("response_format", "response_format_too_large")
    assert engine.grammar_checks == []


async def test_a_schema_within_the_caps_is_checked_by_the_engine_as_vllm_serializes_it(
    http: httpx.AsyncClient, engine: FakeEngine
) -> None:
    response = await http.post("/v1/chat/completions", json=chat(enum_schema(10)))
    assert response.status_code == 200, response.text
    assert engine.grammar_checks == [json.dumps(enum_schema(10))]


async def test_a_schema_the_engine_cannot_compile_in_time_is_a_400(
    http: httpx.AsyncClient, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def too_slow(schema_json: str) -> None:
        raise GrammarTooComplexError("too slow", param="response_format")

    monkeypatch.setattr(engine, "check_grammar", too_slow)
    response = await http.post("/v1/chat/completions", json={**chat(enum_schema(1)), "stream": True})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("response_format", "response_format_too_complex")


async def test_a_client_leaving_mid_check_cancels_it_and_frees_its_slot(
    http: httpx.AsyncClient, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    checking: list[str] = []
    cancelled: list[str] = []

    async def never_done(schema_json: str) -> None:
        checking.append(schema_json)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(schema_json)
            raise

    monkeypatch.setattr(engine, "check_grammar", never_done)
    task = asyncio.create_task(http.post("/v1/chat/completions", json=chat(enum_schema(1))))
    await until(lambda: len(checking) == 1, "the grammar check under way")
    task.cancel()  # the client goes away
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: len(cancelled) == 1, "the grammar check cancelled")
    metrics = (await http.get("/metrics")).text
    assert "wattserve_requests_admitted 0.0" in metrics
