"""Tool calls through the official `openai` client on the real server: forced calls (a named function and
`required`) whose arguments follow the tools' schemas, whole and streamed through the SDK's own stream
helper, a two-turn tool loop, `parallel_tool_calls`, and tool choices the server refuses.

The embedded model has random weights, so what it writes is bounded by constraint. Every call here is
forced: structured outputs hold the output to the tools' JSON schemas. The server runs with free whitespace
off (with it on, the grammar lets a random model write whitespace until `max_tokens`), and every parameter
is an enum, a boolean or a string whose pattern bounds its length and characters, with no other properties
allowed, so each call closes well inside `max_tokens`. Generation is greedy, so a streamed answer can be
compared with the whole one.

The server runs without a tool-call or reasoning parser: a random model rarely writes a call by itself
(`auto` is tested on scripted text in tests/integration/test_tool_calls.py), and with `deepseek_r1` all it
writes would be reasoning, unconstrained, since it never closes a `</think>`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionMessageToolCall

from tests.e2e.conftest import API_KEY, MODEL, Server

pytestmark = pytest.mark.e2e
# vLLM refuses `disable_any_whitespace` with its `auto` backend; xgrammar is the one `auto` picks here.
MAX_TOKENS = 400  # room for several calls (about 60 tokens each) beside the ~600 the tools take
ASK = [{"role": "user", "content": "What is the weather in Oslo, and the time there?"}]
# `strict`: the SDK's stream helper parses the arguments of strict tools only (and refuses the others).
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "enum": ["Oslo", "Paris", "Lima"]},
                "metric": {"type": "boolean"},
            },
            "required": ["city", "metric"],
            "additionalProperties": False,
        },
    },
}
# A free string bounded by a pattern, not `maxLength`: xgrammar's rule for `maxLength` lets raw control
# characters into the string, which is not JSON, and a random model writes them.
TIME: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time in a time zone.",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "pattern": "^[a-z]{1,12}$"}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, TIME]


@pytest.fixture(scope="module")
def client(structured_server: Server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{structured_server.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=120
    ) as sdk:
        yield sdk


def named(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


def ask(client: openai.OpenAI, **fields: Any) -> ChatCompletion:
    body: dict[str, Any] = {"model": MODEL, "messages": ASK, "max_tokens": MAX_TOKENS, "temperature": 0}
    return client.chat.completions.create(**(body | fields))


def streamed(client: openai.OpenAI, **fields: Any) -> tuple[ChatCompletion, list[str]]:
    """The answer assembled by the SDK's stream helper, and the types of the events it gave on the way."""
    body: dict[str, Any] = {"model": MODEL, "messages": ASK, "max_tokens": MAX_TOKENS, "temperature": 0}
    with client.chat.completions.stream(**(body | fields)) as stream:
        events = [event.type for event in stream]
        return stream.get_final_completion(), events


def checked_calls(answer: ChatCompletion, tools: Sequence[dict[str, Any]]) -> list[tuple[str, Any]]:
    """Each call's name and parsed arguments, once each is checked against its tool's schema."""
    schemas = {tool["function"]["name"]: tool["function"]["parameters"] for tool in tools}
    calls: list[ChatCompletionMessageToolCall] = list(answer.choices[0].message.tool_calls or ())
    assert calls, answer
    found = []
    for call in calls:
        assert call.type == "function"
        assert call.id
        assert call.function.name in schemas
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, schemas[call.function.name])
        found.append((call.function.name, arguments))
    assert len({call.id for call in calls}) == len(calls)
    return found


def test_a_named_call_is_that_function_with_arguments_its_schema_allows(client: openai.OpenAI) -> None:
    answer = ask(client, tools=TOOLS, tool_choice=named("get_time"))
    choice = answer.choices[0]
    assert choice.finish_reason == "stop"  # as OpenAI and vLLM finish a named call
    ((name, _),) = checked_calls(answer, TOOLS)
    assert name == "get_time"  # the second tool: the name comes from the choice, not the list's order
    assert not choice.message.content


def test_required_calls_one_of_the_tools_with_arguments_its_schema_allows(client: openai.OpenAI) -> None:
    answer = ask(client, tools=TOOLS, tool_choice="required")
    assert answer.choices[0].finish_reason == "tool_calls"
    checked_calls(answer, TOOLS)
    assert not answer.choices[0].message.content


@pytest.mark.parametrize("tool_choice", [named("get_time"), "required"], ids=["named", "required"])
def test_a_streamed_call_assembled_by_the_sdk_is_the_whole_answers_call(
    client: openai.OpenAI, tool_choice: Any
) -> None:
    final, events = streamed(client, tools=TOOLS, tool_choice=tool_choice)
    whole = ask(client, tools=TOOLS, tool_choice=tool_choice)
    assert final.choices[0].finish_reason == whole.choices[0].finish_reason
    assert checked_calls(final, TOOLS) == checked_calls(whole, TOOLS)
    for call in final.choices[0].message.tool_calls or ():
        assert call.function.parsed_arguments == json.loads(call.function.arguments)  # the SDK read them
    assert "tool_calls.function.arguments.delta" in events
    assert "tool_calls.function.arguments.done" in events


def test_a_tool_loop_sends_the_call_and_its_result_back_and_gets_an_answer(client: openai.OpenAI) -> None:
    first = ask(client, tools=[WEATHER], tool_choice=named("get_weather"))
    checked_calls(first, [WEATHER])
    (call,) = first.choices[0].message.tool_calls or ()
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 degrees."},
    ]
    second = ask(client, messages=history, tools=[WEATHER], tool_choice="none", max_tokens=16)
    choice = second.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert isinstance(choice.message.content, str)
    assert choice.message.content
    assert choice.message.tool_calls is None
    # The call and its result were rendered into the prompt, after the first turn's.
    assert second.usage is not None
    assert first.usage is not None
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


def test_the_sdks_own_assistant_message_goes_back_in_the_history(client: openai.OpenAI) -> None:
    # OpenAI's guide appends the answer's message object itself to the history before the tool's result.
    first = ask(client, tools=[WEATHER], tool_choice=named("get_weather"))
    message = first.choices[0].message
    (call,) = message.tool_calls or ()
    history = [*ASK, message, {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 degrees."}]
    second = ask(client, messages=history, tools=[WEATHER], tool_choice="none", max_tokens=16)
    assert second.choices[0].message.content


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_parallel_tool_calls_false_gives_exactly_one_call(client: openai.OpenAI, stream: bool) -> None:
    fields = {"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False}
    answer = streamed(client, **fields)[0] if stream else ask(client, **fields)
    assert answer.choices[0].finish_reason == "tool_calls"
    assert len(checked_calls(answer, TOOLS)) == 1


def test_a_tool_choice_naming_a_missing_tool_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, tools=TOOLS, tool_choice=named("get_tide"))
    assert refused.value.status_code == 400
    error = refused.value.body
    assert isinstance(error, dict)
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        "tool_choice",
        "invalid_tool_choice",
    )
    assert "'get_tide'" in error["message"]
    assert "get_time, get_weather" in error["message"]


def test_auto_without_a_tool_call_parser_is_refused_naming_tool_choice(client: openai.OpenAI) -> None:
    # Tools without a tool_choice mean `auto`, which needs --enable-auto-tool-choice and a parser.
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, tools=TOOLS)
    assert refused.value.status_code == 400
    assert refused.value.param == "tool_choice"
    assert "--enable-auto-tool-choice" in refused.value.message
