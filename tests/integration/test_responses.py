"""`/v1/responses` in the in-process app, driven by OpenAI's client: answers, streams, tools, the store,
follow-ups, background runs, cancel, and the refusals."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import openai
import pytest

from server.compose import create_app
from server.energy.meters.base import NullEnergyMeter
from server.settings import ServerSettings
from tests.integration.fake_engine import FakeEngine
from tests.waiting import until_checked

MODEL = FakeEngine.served_model_name
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@asynccontextmanager
async def client(
    engine: FakeEngine, cache_dir: Path, key: str = "k", **more: object
) -> AsyncIterator[openai.AsyncOpenAI]:
    settings = ServerSettings(api_key=["k", "other"], cache_dir=cache_dir, **more)
    app = create_app(settings, lambda: engine, meter=NullEnergyMeter())
    async with app.router.lifespan_context(app):
        transport = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test/v1")
        async with transport:
            yield openai.AsyncOpenAI(
                api_key=key, base_url="http://test/v1", http_client=transport, max_retries=0
            )


async def test_a_text_input_is_answered_with_usage_and_stored(tmp_path: Path) -> None:
    async with client(FakeEngine(script="Hello there."), tmp_path) as api:
        response = await api.responses.create(model=MODEL, input="Hi", instructions="Be brief.")
        assert (response.status, response.output_text) == ("completed", "Hello there.")
        assert response.usage.output_tokens > 0
        assert response.usage.input_tokens > 0
        again = await api.responses.retrieve(response.id)
        assert again.output_text == "Hello there."
        assert again.instructions == "Be brief."


async def test_the_stream_has_openais_event_order_and_its_final_response(tmp_path: Path) -> None:
    async with (
        client(FakeEngine(script="Hello there."), tmp_path) as api,
        api.responses.stream(model=MODEL, input="Hi") as stream,
    ):
        types = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(types[4:-4]) == {"response.output_text.delta"}
    assert final.output_text == "Hello there."


@pytest.mark.parametrize("stream", [False, True])
async def test_a_forced_function_call_is_a_function_call_item(tmp_path: Path, stream: bool) -> None:
    engine = FakeEngine(script='{"city": "Oslo"}')
    async with client(engine, tmp_path) as api:
        kwargs = {
            "model": MODEL,
            "input": "Weather?",
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "name": "get_weather"},
        }
        if stream:
            async with api.responses.stream(**kwargs) as events:
                deltas = [e.delta async for e in events if e.type == "response.function_call_arguments.delta"]
                response = await events.get_final_response()
            assert "".join(deltas) == '{"city": "Oslo"}'
        else:
            response = await api.responses.create(**kwargs)
    (call,) = response.output
    assert (call.type, call.name, json.loads(call.arguments)) == (
        "function_call",
        "get_weather",
        {"city": "Oslo"},
    )
    assert engine.specs[-1].json_schema == WEATHER["parameters"]


async def test_a_follow_up_continues_the_stored_conversation_with_the_tool_result(tmp_path: Path) -> None:
    engine = FakeEngine(script='{"city": "Oslo"}')
    async with client(engine, tmp_path) as api:
        first = await api.responses.create(
            model=MODEL,
            input="Weather?",
            tools=[WEATHER],
            tool_choice={"type": "function", "name": "get_weather"},
        )
        (call,) = first.output
        engine.script = "It is sunny."
        second = await api.responses.create(
            model=MODEL,
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        )
    assert second.output_text == "It is sunny."
    roles = [message["role"] for message in engine.rendered[-1]]
    assert roles == ["user", "assistant", "tool"]
    assert engine.rendered[-1][1]["tool_calls"][0]["id"] == call.call_id


async def test_the_store_survives_a_restart_and_keeps_keys_apart(tmp_path: Path) -> None:
    async with client(FakeEngine(script="Hello."), tmp_path) as api:
        first = await api.responses.create(model=MODEL, input="Hi")
    async with client(FakeEngine(script="Again."), tmp_path) as api:
        follow = await api.responses.create(model=MODEL, input="More", previous_response_id=first.id)
        assert follow.output_text == "Again."
    async with client(FakeEngine(script="x"), tmp_path, key="other") as api:
        with pytest.raises(openai.NotFoundError) as missing:
            await api.responses.retrieve(first.id)
    assert missing.value.body["code"] == "response_not_found"


async def test_delete_then_retrieve_and_follow_up_are_404(tmp_path: Path) -> None:
    async with client(FakeEngine(script="Hello."), tmp_path) as api:
        response = await api.responses.create(model=MODEL, input="Hi")
        await api.responses.delete(response.id)
        with pytest.raises(openai.NotFoundError):
            await api.responses.retrieve(response.id)
        with pytest.raises(openai.NotFoundError) as follow:
            await api.responses.create(model=MODEL, input="More", previous_response_id=response.id)
    assert follow.value.body["param"] == "previous_response_id"


async def test_store_false_keeps_nothing(tmp_path: Path) -> None:
    async with client(FakeEngine(script="Hello."), tmp_path) as api:
        response = await api.responses.create(model=MODEL, input="Hi", store=False)
        with pytest.raises(openai.NotFoundError):
            await api.responses.retrieve(response.id)


async def test_a_length_cut_answer_is_incomplete(tmp_path: Path) -> None:
    async with client(FakeEngine(), tmp_path) as api:
        response = await api.responses.create(model=MODEL, input="Hi", max_output_tokens=3)
    assert (response.status, response.incomplete_details.reason) == ("incomplete", "max_output_tokens")


async def test_a_flex_background_response_is_polled_to_completion(tmp_path: Path) -> None:
    # A lone flex request on an idle engine waits for companions, at most the lane's bound.
    async with client(FakeEngine(script="Done later."), tmp_path, flex_max_wait_seconds=0.5) as api:
        queued = await api.responses.create(model=MODEL, input="Hi", background=True, service_tier="flex")
        assert queued.status == "queued"

        async def finished() -> bool:
            return (await api.responses.retrieve(queued.id)).status == "completed"

        await until_checked(finished, "the background response completes")
        done = await api.responses.retrieve(queued.id)
    assert (done.output_text, done.service_tier) == ("Done later.", "flex")


async def test_a_background_response_is_cancelled(tmp_path: Path) -> None:
    async with client(FakeEngine(step_delay_s=0.2), tmp_path) as api:
        queued = await api.responses.create(model=MODEL, input="Hi", background=True, max_output_tokens=50)

        async def running() -> bool:
            return (await api.responses.retrieve(queued.id)).status == "in_progress"

        await until_checked(running, "the background response starts")
        cancelled = await api.responses.cancel(queued.id)
        assert cancelled.status == "cancelled"
        assert (await api.responses.retrieve(queued.id)).status == "cancelled"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools.0"),
        (
            {"input": "x", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}},
            "tool_choice",
        ),
        (
            {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{oops"}]},
            "input.0.arguments",
        ),
        ({"input": "x", "background": True, "store": False}, "background"),
        ({"input": "x", "truncation": "auto"}, "truncation"),
        ({"input": "x", "conversation": "c"}, "conversation"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(tmp_path: Path, body: dict, param: str) -> None:
    engine = FakeEngine(script="x")
    async with client(engine, tmp_path) as api:
        with pytest.raises(openai.BadRequestError) as refused:
            await api.post("/responses", body={"model": MODEL, **body}, cast_to=object)
    assert refused.value.body["param"] == param
    assert engine.specs == []


async def test_an_unknown_model_is_404_before_anything_is_stored(tmp_path: Path) -> None:
    async with client(FakeEngine(script="x"), tmp_path) as api:
        with pytest.raises(openai.NotFoundError):
            await api.responses.create(model="nope", input="Hi")


async def test_a_background_response_that_cannot_be_served_is_stored_as_failed(tmp_path: Path) -> None:
    async with client(FakeEngine(script="x"), tmp_path) as api:
        queued = await api.responses.create(model=MODEL, input="Hi", background=True, max_output_tokens=1000)

        async def ended() -> bool:
            return (await api.responses.retrieve(queued.id)).status not in ("queued", "in_progress")

        await until_checked(ended, "the background response ends")
        failed = await api.responses.retrieve(queued.id)
    assert failed.status == "failed"
    assert "maximum context length" in failed.error.message


@pytest.mark.parametrize("stream", [False, True])
async def test_reasoning_is_a_reasoning_item_counted_in_usage(tmp_path: Path, stream: bool) -> None:
    engine = FakeEngine(script="<think>Oslo is in Norway.</think>Sunny.", reasoning_parser="deepseek_r1")
    async with client(engine, tmp_path) as api:
        if stream:
            async with api.responses.stream(model=MODEL, input="Weather?") as events:
                response = await events.get_final_response()
        else:
            response = await api.responses.create(model=MODEL, input="Weather?")
    reasoning, message = response.output
    assert (reasoning.type, reasoning.content[0].text) == ("reasoning", "Oslo is in Norway.")
    assert response.output_text == "Sunny."
    assert 0 < response.usage.output_tokens_details.reasoning_tokens < response.usage.output_tokens
