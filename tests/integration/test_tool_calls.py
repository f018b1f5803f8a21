"""Tool calls and reasoning through vLLM's own parsers, on an engine that says scripted text.

The script is tokenized by the embedded model's tokenizer and said a token per step, so vLLM's `hermes`
tool parser and `deepseek_r1` reasoning parser read exactly what a model writing that text would give
them, streamed and whole.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from server.compose import create_app
from server.energy.meters.base import NullEnergyMeter
from server.settings import ServerSettings
from tests.integration.fake_engine import FakeEngine
from tests.integration.test_openai_surface import KEY, MODEL, chunks

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
ASK = [{"role": "user", "content": "Weather in Oslo?"}]
HERMES_CALL = 'Let me look. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'


@asynccontextmanager
async def serving(engine: FakeEngine, **settings: object) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ServerSettings(api_key="k", **settings), lambda: engine, meter=NullEnergyMeter())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=KEY) as client:
            yield client


async def chat(engine: FakeEngine, **body: Any) -> httpx.Response:
    async with serving(engine) as http:
        return await http.post("/v1/chat/completions", json={"model": MODEL, "messages": ASK, **body})


def assembled(stream: list[dict]) -> tuple[dict[int, dict[str, str]], str, str, list[str | None]]:
    """Tool calls, content and reasoning put together from chunks, as the SDK's stream helpers do."""
    calls: dict[int, dict[str, str]] = {}
    content = reasoning = ""
    finishes = []
    for chunk in stream:
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content += delta.get("content") or ""
            reasoning += delta.get("reasoning") or ""
            for piece in delta.get("tool_calls") or ():
                call = calls.setdefault(piece["index"], {"id": "", "name": "", "arguments": ""})
                call["id"] += piece.get("id") or ""
                call["name"] += piece["function"].get("name") or ""
                call["arguments"] += piece["function"].get("arguments") or ""
            finishes.append(choice.get("finish_reason"))
    return calls, content, reasoning, finishes


async def test_a_required_call_is_constrained_by_the_tools_schema_and_parsed() -> None:
    engine = FakeEngine(script='[{"name": "get_weather", "parameters": {"city": "Oslo"}}]')
    answer = await chat(engine, tools=[WEATHER, TIME], tool_choice="required")
    assert answer.status_code == 200, answer.text
    choice = answer.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert (call["type"], call["function"]["name"]) == ("function", "get_weather")
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    assert call["id"]
    spec = engine.specs[-1]
    assert spec.structured_param == "tools"
    names = [option["properties"]["name"]["enum"] for option in spec.json_schema["items"]["anyOf"]]
    assert names == [["get_weather"], ["get_time"]]
    assert engine.template_kwargs[-1]["tools"] == [WEATHER, TIME]


async def test_a_named_call_streams_its_arguments_in_pieces_and_finishes_with_stop() -> None:
    engine = FakeEngine(script='{"city": "Oslo"}')
    answer = await chat(
        engine,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
    )
    stream = chunks(answer.text)
    calls, content, _, finishes = assembled(stream)
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Oslo"}
    assert calls[0]["id"].startswith("chatcmpl-tool-")
    pieces = [c for c in stream if c["choices"] and c["choices"][0]["delta"].get("tool_calls")]
    assert len(pieces) > 2  # argument text arrives as it is generated
    assert content == ""
    assert finishes[-1] == "stop"
    assert engine.specs[-1].json_schema == WEATHER["function"]["parameters"]


async def test_parallel_tool_calls_false_keeps_one_call() -> None:
    script = (
        '[{"name": "get_weather", "parameters": {"city": "Oslo"}}, {"name": "get_time", "parameters": {}}]'
    )
    answer = await chat(
        FakeEngine(script=script), tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False
    )
    assert [c["function"]["name"] for c in answer.json()["choices"][0]["message"]["tool_calls"]] == [
        "get_weather"
    ]


@pytest.mark.parametrize("stream", [False, True])
async def test_auto_calls_are_found_in_hermes_text_by_vllms_parser(stream: bool) -> None:
    engine = FakeEngine(script=HERMES_CALL, tool_call_parser="hermes")
    answer = await chat(engine, tools=[WEATHER], stream=stream)
    assert answer.status_code == 200, answer.text
    if stream:
        calls, content, _, finishes = assembled(chunks(answer.text))
        call = calls[0]
        finish = [f for f in finishes if f][-1]
    else:
        choice = answer.json()["choices"][0]
        content, finish = choice["message"]["content"], choice["finish_reason"]
        (wire,) = choice["message"]["tool_calls"]
        call = {"name": wire["function"]["name"], "arguments": wire["function"]["arguments"]}
    assert call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Oslo"}
    assert content.strip() == "Let me look."
    assert finish == "tool_calls"
    assert engine.specs[-1].json_schema is None  # auto: the model chooses, nothing is forced


async def test_auto_text_without_a_call_stays_content() -> None:
    answer = await chat(FakeEngine(script="No tool needed.", tool_call_parser="hermes"), tools=[WEATHER])
    choice = answer.json()["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == ("No tool needed.", "stop")
    assert "tool_calls" not in choice["message"]


@pytest.mark.parametrize("stream", [False, True])
async def test_reasoning_is_split_out_and_counted(stream: bool) -> None:
    engine = FakeEngine(
        script="<think>Oslo is in Norway.</think>It is sunny.", reasoning_parser="deepseek_r1"
    )
    body: dict[str, Any] = {"stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    answer = await chat(engine, **body)
    if stream:
        stream_chunks = chunks(answer.text)
        _, content, reasoning, _ = assembled(stream_chunks)
        usage = stream_chunks[-1]["usage"]
    else:
        message = answer.json()["choices"][0]["message"]
        content, reasoning, usage = message["content"], message["reasoning"], answer.json()["usage"]
    assert (reasoning, content) == ("Oslo is in Norway.", "It is sunny.")
    reasoning_tokens = usage["completion_tokens_details"]["reasoning_tokens"]
    assert 0 < reasoning_tokens < usage["completion_tokens"]


async def test_history_with_tool_calls_and_results_reaches_the_template() -> None:
    engine = FakeEngine(script="It is sunny.")
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    async with serving(engine) as http:
        answer = await http.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": history, "tools": [WEATHER], "tool_choice": "none"},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "It is sunny."


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"tools": [WEATHER]}, "tool_choice", None),  # auto needs --enable-auto-tool-choice
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
            "invalid_tool_choice",
        ),
        ({"tool_choice": "required"}, "tool_choice", "invalid_tool_choice"),
        ({"tools": []}, "tools", None),
        ({"tools": [WEATHER] * 3, "tool_choice": "required"}, "tools", None),
        (
            {"tools": [{"type": "function", "function": {"name": "bad name!"}}], "tool_choice": "required"},
            "tools.0.function.name",
            None,
        ),
        (
            {"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}},
            None,
            None,
        ),
        (
            {
                "messages": [
                    *ASK,
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
                        ],
                    },
                ]
            },
            "messages.1.tool_calls.0.function.arguments",
            "invalid_tool_call_arguments",
        ),
        ({"messages": [*ASK, {"role": "tool", "content": "x"}]}, "messages.1", None),
        ({"functions": [WEATHER["function"]]}, "functions", None),
    ],
)
async def test_bad_tool_input_is_a_400_naming_the_field(
    body: dict[str, Any], param: str | None, code: str | None
) -> None:
    engine = FakeEngine(script="x")
    async with serving(engine, max_tools=2) as http:
        answer = await http.post("/v1/chat/completions", json={"model": MODEL, "messages": ASK, **body})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    assert engine.specs == []  # nothing reached the engine
