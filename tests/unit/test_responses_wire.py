"""The Responses request model: what OpenAI's clients send parses, what this server lacks is refused by
name, and the conversation becomes the chat path's messages, tools and formats."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest
from openai._models import validate_type
from openai.types import responses as sdk
from pydantic import BaseModel, ValidationError

from server.request_fields import UNSUPPORTED_CONTENT_PART
from server.responses_answers import (
    OutputFunctionCall,
    OutputMessage,
    OutputReasoning,
    OutputText,
    ReasoningText,
    Response,
    new_id,
)
from server.responses_items import INPUT_ITEMS
from server.responses_wire import (
    INVALID_VALUE,
    UNSUPPORTED_RESPONSES_FIELDS,
    UNSUPPORTED_VALUE,
    ResponsesRequest,
)

MODEL = "wattserve-demo"
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}
CALL = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}
CALL_OUTPUT = {"type": "function_call_output", "call_id": "call_1", "output": "18°C, clear"}


class City(BaseModel):
    name: str


def answer() -> Response:
    """A short answer for the fake transport, its text JSON so the SDK's `parse()` can read it."""
    text = OutputText(text='{"name": "Paris"}')
    return Response(
        id=new_id("resp"),
        status="completed",
        model=MODEL,
        output=[OutputMessage(id=new_id("msg"), status="completed", content=[text])],
    )


def sent_by_the_sdk(call: Callable[[openai.OpenAI], object]) -> dict[str, Any]:
    """The body OpenAI's Python client sends for `call`, answered by a fake transport."""
    bodies: list[dict[str, Any]] = []

    def reply(request: httpx2.Request) -> httpx2.Response:
        bodies.append(json.loads(request.content))
        if bodies[-1].get("stream"):
            return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=b"")
        return httpx2.Response(200, json=answer().model_dump(mode="json"))

    transport = httpx2.MockTransport(reply)
    client = openai.OpenAI(
        api_key="k", base_url="http://test/v1", http_client=httpx2.Client(transport=transport)
    )
    call(client)
    return bodies[-1]


SDK_CALLS: dict[str, Callable[[openai.OpenAI], object]] = {
    "text": lambda client: client.responses.create(model=MODEL, input="Say hi."),
    "settings": lambda client: client.responses.create(
        model=MODEL,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Say hi."}]}],
        instructions="Be brief.",
        max_output_tokens=16,
        temperature=0.7,
        top_p=0.9,
        store=False,
        metadata={"run": "7"},
        user="u-1",
        safety_identifier="hash-1",
        prompt_cache_key="greeting",
        prompt_cache_retention="24h",
        service_tier="flex",
        include=["reasoning.encrypted_content", "message.output_text.logprobs"],
        reasoning={"effort": "low", "summary": "auto"},
        truncation="disabled",
        top_logprobs=0,
        max_tool_calls=2,
        text={"format": {"type": "text"}, "verbosity": "low"},
    ),
    "tool-loop": lambda client: client.responses.create(
        model=MODEL,
        input=[{"role": "user", "content": "Weather in Paris?"}, CALL, CALL_OUTPUT],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
    ),
    "follow-up": lambda client: client.responses.create(
        model=MODEL, input=[CALL_OUTPUT], previous_response_id="resp_1", tools=[WEATHER_TOOL]
    ),
    "stream": lambda client: client.responses.create(
        model=MODEL, input="Say hi.", stream=True, stream_options={"include_obfuscation": False}
    ),
    "background": lambda client: client.responses.create(model=MODEL, input="Say hi.", background=True),
    "json-object": lambda client: client.responses.create(
        model=MODEL, input="JSON please.", text={"format": {"type": "json_object"}}
    ),
    "parse": lambda client: client.responses.parse(
        model=MODEL, input="A city?", text_format=City, verbosity="low"
    ),
}


@pytest.mark.parametrize("name", sorted(SDK_CALLS))
def test_the_openai_clients_ordinary_requests_parse(name: str) -> None:
    ResponsesRequest.model_validate(sent_by_the_sdk(SDK_CALLS[name]))


def replayed_by_an_agent(item: BaseModel) -> dict[str, Any]:
    """An output item as the Agents SDK sends it back: read by OpenAI's client, dumped as it was set."""
    read = validate_type(type_=sdk.ResponseOutputItem, value=item.model_dump(mode="json"))
    return read.model_dump(exclude_unset=True)


def test_an_agent_frameworks_turn_parses_with_the_items_a_response_gave() -> None:
    # The Agents SDK's shape: include and tools always lists, function tools with strict, its output
    # schema as `final_output`, earlier output items sent back as they came.
    outputs = [
        OutputReasoning(id=new_id("rs"), content=[ReasoningText(text="Use the tool.")], status="completed"),
        OutputFunctionCall(
            id=new_id("fc"),
            call_id="call_1",
            name="get_weather",
            arguments=CALL["arguments"],
            status="completed",
        ),
    ]
    body = {
        "model": MODEL,
        "instructions": "You are a weather agent.",
        "input": [
            {"content": "Weather in Paris?", "role": "user"},
            *(replayed_by_an_agent(item) for item in outputs),
            {"call_id": "call_1", "output": "18°C", "type": "function_call_output"},
        ],
        "include": [],
        "tools": [{**WEATHER_TOOL, "description": None}],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "text": {"format": {"type": "json_schema", "name": "final_output", "schema": {}, "strict": False}},
        "stream": True,
    }
    request = ResponsesRequest.model_validate(body)
    assert [message["role"] for message in request.template_messages([])] == [
        "system",
        "user",
        "assistant",
        "tool",
    ]


def test_every_output_item_parses_back_as_input() -> None:
    items = [
        OutputMessage(id=new_id("msg"), status="completed", content=[OutputText(text="Hi.")]),
        OutputFunctionCall(id=new_id("fc"), call_id="c", name="f", arguments="{}", status="completed"),
        OutputReasoning(id=new_id("rs"), content=[ReasoningText(text="Hm.")], status="completed"),
    ]
    parsed = INPUT_ITEMS.validate_python([item.model_dump(mode="json") for item in items])
    assert [item.type for item in parsed] == ["message", "function_call", "reasoning"]


def first_error(body: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(ValidationError) as caught:
        ResponsesRequest.model_validate({"model": MODEL, "input": "Hi.", **body})
    return caught.value.errors()[0]


def named(error: dict[str, Any]) -> str:
    """The field an error names: its `param` when coded, else its location."""
    return error.get("ctx", {}).get("param") or ".".join(str(part) for part in error["loc"])


@pytest.mark.parametrize(
    ("body", "code", "param", "says"),
    [
        (
            {"tools": [WEATHER_TOOL, {"type": "web_search"}]},
            UNSUPPORTED_VALUE,
            "tools.1",
            "'web_search' tools",
        ),
        (
            {"tools": [{"type": "file_search", "vector_store_ids": []}]},
            UNSUPPORTED_VALUE,
            "tools.0",
            "file_search",
        ),
        (
            {"tools": [WEATHER_TOOL], "tool_choice": {"type": "web_search"}},
            UNSUPPORTED_VALUE,
            "tool_choice",
            "'web_search' is not supported",
        ),
        (
            {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "name": "get_time"}},
            INVALID_VALUE,
            "tool_choice",
            "'get_time' is not in tools",
        ),
        ({"tool_choice": "required"}, INVALID_VALUE, "tool_choice", "at least one tool"),
        ({"tools": [WEATHER_TOOL, WEATHER_TOOL]}, INVALID_VALUE, "tools.1.name", "names two tools"),
        (
            {"input": [{"role": "user", "content": "Hi."}, CALL, {**CALL, "arguments": "{city: Paris"}]},
            INVALID_VALUE,
            "input.2.arguments",
            "not JSON",
        ),
        ({"input": [{**CALL, "arguments": "[1]"}]}, INVALID_VALUE, "input.0.arguments", "a JSON object"),
        ({"background": True, "store": False}, INVALID_VALUE, "background", "set store to true"),
        ({"truncation": "auto"}, UNSUPPORTED_VALUE, "truncation", "never drops input"),
        ({"top_logprobs": 2}, UNSUPPORTED_VALUE, "top_logprobs", "only 0"),
        (
            {"input": [CALL_OUTPUT, {"type": "item_reference", "id": "msg_1"}]},
            UNSUPPORTED_VALUE,
            "input.1",
            "'item_reference' items",
        ),
        (
            {
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_text", "text": "What is this?"},
                            {"type": "input_image", "image_url": "data:,"},
                        ],
                    }
                ]
            },
            UNSUPPORTED_CONTENT_PART,
            "input.0.content.1",
            "'input_image' content parts",
        ),
    ],
)
def test_a_refusal_names_the_field(body: dict[str, Any], code: str, param: str, says: str) -> None:
    error = first_error(body)
    assert (error["type"], named(error)) == (code, param)
    assert error["msg"].startswith(f"{param}: ")
    assert says in error["msg"]


@pytest.mark.parametrize("field", sorted(UNSUPPORTED_RESPONSES_FIELDS))
def test_an_unsupported_openai_field_is_refused_by_name(field: str) -> None:
    error = first_error({field: {"id": "x"}})
    assert (error["type"], error["loc"]) == ("extra_forbidden", (field,))


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"stream_options": {"include_obfuscation": False}}, "stream_options"),
        ({"input": [{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]}, "input"),
        ({"tools": [{**WEATHER_TOOL, "name": "get weather"}]}, "tools.0.name"),
        ({"include": ["everything"]}, "include.0"),
        ({"temperature": 3}, "temperature"),
    ],
)
def test_other_invalid_values_are_refused(body: dict[str, Any], where: str) -> None:
    assert named(first_error(body)).startswith(where)


def request(**body: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"model": MODEL, **body})


def test_a_string_input_is_one_user_turn_after_the_instructions() -> None:
    assert request(input="Hi.", instructions="Be brief.").template_messages([]) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi."},
    ]


def test_function_calls_join_the_assistant_turn_and_outputs_become_tool_turns() -> None:
    second_call = {**CALL, "call_id": "call_2", "arguments": '{"city": "Lyon"}'}
    items = [
        {
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": "Use "}, {"type": "input_text", "text": "tools."}],
        },
        {"role": "user", "content": "Paris and Lyon?"},
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [],
            "content": [{"type": "reasoning_text", "text": "?"}],
        },
        {
            "type": "message",
            "role": "assistant",
            "id": "msg_1",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
        },
        {"type": "reasoning", "id": "rs_2", "summary": []},
        CALL,
        second_call,
        CALL_OUTPUT,
        {**CALL_OUTPUT, "call_id": "call_2", "output": [{"type": "input_text", "text": "16°C"}]},
        {**CALL, "call_id": "call_3", "arguments": ""},
    ]
    calls = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
        },
        {
            "id": "call_2",
            "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": "Lyon"}},
        },
    ]
    assert request(input=items, tools=[WEATHER_TOOL]).template_messages([]) == [
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": "Paris and Lyon?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_1", "content": "18°C, clear"},
        {"role": "tool", "tool_call_id": "call_2", "content": "16°C"},
        # After the outputs, a call starts a turn of its own, with no text.
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_3", "type": "function", "function": {"name": "get_weather", "arguments": {}}}
            ],
        },
    ]


def test_the_history_comes_first_and_only_this_requests_instructions_lead() -> None:
    first = request(input="Weather in Paris?", instructions="Old rules.", tools=[WEATHER_TOOL])
    given = OutputFunctionCall(
        id=new_id("fc"), call_id="call_1", name="get_weather", arguments=CALL["arguments"], status="completed"
    )
    # What a stored response keeps for the next one: its input and its output items; never instructions.
    history = [*first.input_items(), given.model_dump(mode="json")]
    follow_up = request(input=[CALL_OUTPUT], instructions="New rules.", previous_response_id="resp_1")
    assert follow_up.template_messages(history) == [
        {"role": "system", "content": "New rules."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18°C, clear"},
    ]
    assert request(input="Hi.").template_messages(history)[0] == {
        "role": "user",
        "content": "Weather in Paris?",
    }


def test_tools_and_tool_choice_in_chat_completions_form() -> None:
    bare = {"type": "function", "name": "now", "parameters": None, "strict": None}
    chat = request(input="Hi.", tools=[WEATHER_TOOL, bare], tool_choice={"type": "function", "name": "now"})
    assert chat.chat_tools == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": WEATHER_TOOL["parameters"],
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}},
    ]
    assert chat.chat_tool_choice == {"type": "function", "function": {"name": "now"}}
    assert request(input="Hi.", tools=[WEATHER_TOOL], tool_choice="none").chat_tool_choice == "none"
    assert request(input="Hi.").chat_tools is None
    assert request(input="Hi.").chat_tool_choice is None


def test_text_format_becomes_the_chat_paths_response_format() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    text = {"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}}
    response_format = request(input="Hi.", text=text).response_format
    assert response_format is not None
    assert response_format.json_schema is not None
    assert (response_format.type, response_format.json_schema.name) == ("json_schema", "city")
    assert response_format.json_schema.schema_ == schema
    json_object = request(input="Hi.", text={"format": {"type": "json_object"}}).response_format
    assert json_object is not None
    assert json_object.type == "json_object"
    assert request(input="Hi.", text={"verbosity": "high"}).response_format is None


def test_the_echo_fills_in_openais_defaults() -> None:
    echoed = request(input="Hi.").echoed()
    assert (echoed["tool_choice"], echoed["tools"]) == ("auto", [])
    assert echoed["text"] == {"format": {"type": "text"}, "verbosity": None}
    assert (echoed["store"], echoed["background"], echoed["parallel_tool_calls"]) == (True, False, True)
    assert (echoed["truncation"], echoed["metadata"]) == ("disabled", {})
    stored = Response(
        id="resp_1", status="queued", model=MODEL, **request(input="Hi.", background=True).echoed()
    )
    assert (stored.background, stored.store) == (True, True)
