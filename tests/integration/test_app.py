"""The app with a fake engine: auth, error bodies, SSE framing, multi-prompt merging, aborts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from server.compose import create_app
from server.energy.meters.base import NullEnergyMeter
from server.settings import ServerSettings
from tests.integration.fake_engine import FakeEngine
from tests.waiting import until

MODEL = FakeEngine.served_model_name


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
async def http(engine: FakeEngine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ServerSettings(api_key="k"), lambda: engine, meter=NullEnergyMeter())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers={"Authorization": "Bearer k"}
        ) as client:
            yield client


def events(body: str) -> list[str]:
    return [line.removeprefix("data: ") for line in body.split("\n\n") if line]


async def test_chat_sse_frames_role_content_finish_usage_and_done(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "a b"}],
            "max_tokens": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = events(response.text)
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(frame) for frame in frames[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert (
        "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks if c["choices"])
        == "alpha beta gamma "
    )
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 4,
        "completion_tokens": 3,
        "total_tokens": 7,
        "service_tier": "default",
        "energy": None,
    }


async def test_completion_prompts_are_merged_by_index(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/completions",
        json={
            "model": MODEL,
            "prompt": ["one", "two three"],
            "max_tokens": 2,
            "n": 2,
            "temperature": 1,
        },
    )
    body = response.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert [c["text"] for c in body["choices"]] == ["alpha beta ", "beta gamma "] * 2
    assert body["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 8,
        "total_tokens": 11,
        "service_tier": "default",
        "energy": None,
    }


async def test_engine_refusal_before_the_stream_is_a_400(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/completions",
        json={
            "model": MODEL,
            "prompt": "x",
            "n": 2,
            "temperature": 0,
            "stream": True,
        },
    )
    assert response.status_code == 400
    assert "greedy" in response.json()["error"]["message"]


@pytest.mark.parametrize(("headers", "status"), [({}, 401), ({"Authorization": "Bearer bad"}, 401)])
async def test_key_is_required(http: httpx.AsyncClient, headers: dict, status: int) -> None:
    http.headers.pop("Authorization")
    response = await http.get("/v1/models", headers=headers)
    assert response.status_code == status
    assert response.json()["error"]["type"] == "authentication_error"


async def test_health_is_503_when_the_engine_is_down(http: httpx.AsyncClient, engine: FakeEngine) -> None:
    assert (await http.get("/health")).status_code == 200
    engine.healthy = False
    response = await http.get("/health")
    assert response.status_code == 503
    assert response.json()["error"]["message"] == "down"


async def test_context_length(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/completions", json={"model": MODEL, "prompt": "a b c", "max_tokens": 62})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    ok = await http.post("/v1/completions", json={"model": MODEL, "prompt": "a b c", "max_tokens": 61})
    assert ok.status_code == 200


async def test_cancelled_multi_prompt_stream_aborts_every_request(
    engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    generating: list[str] = []
    generate = engine.generate

    async def held_after_one_step(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        generating.append(args[2] if len(args) > 2 else kwargs["request_id"])
        async for step in generate(*args, **kwargs):
            yield step
            await asyncio.Event().wait()  # the engine is mid-generation until the request is aborted

    monkeypatch.setattr(engine, "generate", held_after_one_step)
    app = create_app(ServerSettings(), lambda: engine, meter=NullEnergyMeter())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            body = {"model": MODEL, "prompt": ["a", "b"], "max_tokens": 40, "stream": True}

            async def read_until_gone() -> None:
                async with client.stream("POST", "/v1/completions", json=body) as response:
                    async for _ in response.aiter_lines():
                        pass

            task = asyncio.create_task(read_until_gone())
            await until(lambda: len(generating) == 2, "both prompts generating")
            task.cancel()  # the client goes away mid-stream
            with pytest.raises(asyncio.CancelledError):
                await task
            await until(lambda: len(engine.aborted) == 2, "both requests aborted")
    assert sorted(request_id.rsplit("-", 1)[1] for request_id in engine.aborted) == ["0", "1"]


async def test_engine_health_is_exported_and_drops_when_the_engine_dies(
    http: httpx.AsyncClient, engine: FakeEngine
) -> None:
    def healthy(text: str) -> str:
        return next(line for line in text.splitlines() if line.startswith("wattserve_engine_healthy "))

    assert healthy((await http.get("/metrics")).text) == "wattserve_engine_healthy 1.0"
    engine.is_dead = True
    assert healthy((await http.get("/metrics")).text) == "wattserve_engine_healthy 0.0"
