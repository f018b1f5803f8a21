"""Every Responses API answer wattserve builds, against OpenAI's published schemas and its Python SDK.

Each `Response` and each stream event is serialised as the server sends it (`model_dump_json`) and checked
against the pinned subset of OpenAI's OpenAPI document (tests/contract): required fields, types, enums.
OpenAI's schemas leave unnamed properties allowed, so each answer is also walked for properties its
schema does not name: only wattserve's deliberate extensions may appear. The official `openai` client
must read each one into its own types.
"""

from __future__ import annotations

import json
import typing

import pytest
from openai._models import validate_type
from openai.types import responses as sdk
from pydantic import BaseModel

from server.answers import EnergyUsage, PromptTokensDetails, Usage
from server.responses_answers import (
    IncompleteDetails,
    OutputFunctionCall,
    OutputMessage,
    OutputReasoning,
    OutputText,
    ReasoningText,
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseError,
    ResponseErrorEvent,
    ResponseFailedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseIncompleteEvent,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseReasoningTextDeltaEvent,
    ResponseReasoningTextDoneEvent,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
    ResponseUsage,
    new_id,
)
from server.responses_wire import ResponsesRequest
from tests.contract.openai_schemas import violations
from tests.contract.trim_openapi import ROOT_SCHEMAS
from tests.contract.undocumented_properties import undocumented

MODEL = "wattserve-demo"
CREATED = 1_767_225_600
# Properties OpenAI's schema does not name that the server sends on purpose; nothing else may be unnamed.
# `usage.energy` is wattserve's: the energy of the response beside its tokens, as in chat's usage.
# `store` is OpenAI's own: its live responses and the examples in its API reference repeat it, its
# document and SDK types leave it out (a client reading it from the raw JSON finds it, as from OpenAI).
EXTENSIONS = {f"$.{root}{field}" for root in ("", "response.") for field in ("usage.energy", "store")}

REQUEST = ResponsesRequest.model_validate(
    {
        "model": MODEL,
        "input": "What is the weather in Paris? Answer as JSON.",
        "instructions": "You are terse.",
        "tools": [
            {
                "type": "function",
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "strict": True,
            },
            {"type": "function", "name": "now", "parameters": None, "strict": None},
        ],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "text": {
            "format": {
                "type": "json_schema",
                "name": "weather",
                "schema": {"type": "object"},
                "strict": True,
            },
            "verbosity": "low",
        },
        "reasoning": {"effort": "low"},
        "max_output_tokens": 64,
        "temperature": 0.2,
        "metadata": {"conversation": "c-1"},
        "user": "user-7",
    }
)
ENERGY = EnergyUsage(
    joules=12.5, dynamic_joules=8.25, joules_per_output_token=0.52, co2e_grams=0.0013, source="nvml"
)
CHAT_USAGE = Usage(
    prompt_tokens=41,
    completion_tokens=24,
    total_tokens=65,
    prompt_tokens_details=PromptTokensDetails(cached_tokens=32),
    energy=ENERGY,
)
USAGE = ResponseUsage.from_chat_usage(CHAT_USAGE, reasoning_tokens=9)

MESSAGE_ID, CALL_ID, REASONING_ID = new_id("msg"), new_id("fc"), new_id("rs")
ANSWER = '{"city": "Paris", "sky": "clear"}'
ARGUMENTS = '{"city": "Paris"}'
REASONING = "The user wants the weather; call get_weather."
REASONING_ITEM = OutputReasoning(id=REASONING_ID, content=[ReasoningText(text=REASONING)], status="completed")
CALL = OutputFunctionCall(
    id=CALL_ID, call_id=new_id("call"), name="get_weather", arguments=ARGUMENTS, status="completed"
)
MESSAGE = OutputMessage(id=MESSAGE_ID, status="completed", content=[OutputText(text=ANSWER)])


def response(**fields: object) -> Response:
    return Response(id=new_id("resp"), created_at=CREATED, model=MODEL, **{**REQUEST.echoed(), **fields})


IN_PROGRESS = response(status="in_progress", service_tier="default")
COMPLETED = response(
    status="completed",
    completed_at=CREATED + 2,
    output=[REASONING_ITEM, CALL, MESSAGE],
    usage=USAGE,
    service_tier="default",
)
INCOMPLETE = response(
    status="incomplete",
    incomplete_details=IncompleteDetails(reason="max_output_tokens"),
    output=[OutputMessage(id=MESSAGE_ID, status="incomplete", content=[OutputText(text='{"city": "Pa')])],
    usage=USAGE,
)
FAILED = response(
    status="failed", error=ResponseError(code="server_error", message="The engine stopped; retry.")
)
UNMETERED = Response(
    id=new_id("resp"),
    created_at=CREATED,
    model=MODEL,
    status="completed",
    output=[MESSAGE],
    usage=ResponseUsage.from_chat_usage(CHAT_USAGE.model_copy(update={"energy": None})),
)


def started(item: BaseModel) -> BaseModel:
    """The item as `response.output_item.added` carries it: in progress, nothing generated yet."""
    empty = {"content": []} if not isinstance(item, OutputFunctionCall) else {"arguments": ""}
    return item.model_copy(update={"status": "in_progress", **empty})


EVENTS: list[BaseModel] = [
    ResponseCreatedEvent(sequence_number=0, response=IN_PROGRESS),
    ResponseInProgressEvent(sequence_number=1, response=IN_PROGRESS),
    ResponseOutputItemAddedEvent(sequence_number=2, output_index=0, item=started(REASONING_ITEM)),
    ResponseContentPartAddedEvent(
        sequence_number=3,
        item_id=REASONING_ID,
        output_index=0,
        content_index=0,
        part=ReasoningText(text=""),
    ),
    ResponseReasoningTextDeltaEvent(
        sequence_number=4, item_id=REASONING_ID, output_index=0, content_index=0, delta="The user"
    ),
    ResponseReasoningTextDoneEvent(
        sequence_number=5, item_id=REASONING_ID, output_index=0, content_index=0, text=REASONING
    ),
    ResponseContentPartDoneEvent(
        sequence_number=6,
        item_id=REASONING_ID,
        output_index=0,
        content_index=0,
        part=ReasoningText(text=REASONING),
    ),
    ResponseOutputItemDoneEvent(sequence_number=7, output_index=0, item=REASONING_ITEM),
    ResponseOutputItemAddedEvent(sequence_number=8, output_index=1, item=started(CALL)),
    ResponseFunctionCallArgumentsDeltaEvent(
        sequence_number=9, item_id=CALL_ID, output_index=1, delta='{"city": '
    ),
    ResponseFunctionCallArgumentsDoneEvent(
        sequence_number=10, item_id=CALL_ID, output_index=1, name="get_weather", arguments=ARGUMENTS
    ),
    ResponseOutputItemDoneEvent(sequence_number=11, output_index=1, item=CALL),
    ResponseOutputItemAddedEvent(sequence_number=12, output_index=2, item=started(MESSAGE)),
    ResponseContentPartAddedEvent(
        sequence_number=13, item_id=MESSAGE_ID, output_index=2, content_index=0, part=OutputText(text="")
    ),
    ResponseTextDeltaEvent(
        sequence_number=14, item_id=MESSAGE_ID, output_index=2, content_index=0, delta='{"city"'
    ),
    ResponseTextDoneEvent(
        sequence_number=15, item_id=MESSAGE_ID, output_index=2, content_index=0, text=ANSWER
    ),
    ResponseContentPartDoneEvent(
        sequence_number=16, item_id=MESSAGE_ID, output_index=2, content_index=0, part=OutputText(text=ANSWER)
    ),
    ResponseOutputItemDoneEvent(sequence_number=17, output_index=2, item=MESSAGE),
    ResponseCompletedEvent(sequence_number=18, response=COMPLETED),
    ResponseIncompleteEvent(sequence_number=6, response=INCOMPLETE),
    ResponseFailedEvent(sequence_number=3, response=FAILED),
    ResponseErrorEvent(
        sequence_number=4, code="server_error", message="The engine stopped mid-stream.", param=None
    ),
]
RESPONSES = {
    "in-progress": IN_PROGRESS,
    "completed": COMPLETED,
    "incomplete": INCOMPLETE,
    "failed": FAILED,
    "unmetered": UNMETERED,
}
# Each answer under the name of the schema it claims: our class names are OpenAI's schema names.
ANSWERS = [(f"Response-{name}", body) for name, body in RESPONSES.items()] + [
    (f"{type(event).__name__}-{event.sequence_number}", event) for event in EVENTS
]


def schema_of(answer: BaseModel) -> str:
    return type(answer).__name__


def wire(answer: BaseModel) -> dict[str, object]:
    """The answer's JSON, exactly as the server sends it."""
    return json.loads(answer.model_dump_json())


@pytest.mark.parametrize("answer", [answer for _, answer in ANSWERS], ids=[name for name, _ in ANSWERS])
def test_the_answer_matches_openais_schema(answer: BaseModel) -> None:
    schema = schema_of(answer)
    assert schema in ROOT_SCHEMAS
    problems = violations(schema, wire(answer))
    assert not problems, f"{schema} breaks OpenAI's schema:\n" + "\n".join(problems)


@pytest.mark.parametrize("answer", [answer for _, answer in ANSWERS], ids=[name for name, _ in ANSWERS])
def test_the_answer_has_no_property_openai_does_not_name_but_ours(answer: BaseModel) -> None:
    assert set(undocumented(schema_of(answer), wire(answer))) <= EXTENSIONS


@pytest.mark.parametrize("answer", [answer for _, answer in ANSWERS], ids=[name for name, _ in ANSWERS])
def test_openais_client_reads_the_answer(answer: BaseModel) -> None:
    kind = sdk.Response if isinstance(answer, Response) else sdk.ResponseStreamEvent
    read = validate_type(type_=kind, value=wire(answer))
    assert type(read).__name__ == schema_of(answer)


def test_every_event_the_server_sends_is_checked() -> None:
    (events, _discriminator) = typing.get_args(ResponseStreamEvent)
    assert set(typing.get_args(events)) == {type(event) for event in EVENTS}


def test_usage_carries_the_energy_and_openais_token_details() -> None:
    usage = wire(COMPLETED)["usage"]
    assert usage["energy"] == ENERGY.model_dump()
    assert usage["input_tokens_details"] == {"cached_tokens": 32, "cache_write_tokens": 0}
    assert usage["output_tokens_details"] == {"reasoning_tokens": 9}
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (41, 24, 65)
    assert wire(UNMETERED)["usage"]["energy"] is None
    assert "usage" not in wire(IN_PROGRESS)  # OpenAI's schema has no null usage


def test_the_echo_repeats_the_requests_settings() -> None:
    body = wire(COMPLETED)
    assert body["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert body["tools"][1] == {
        "type": "function",
        "name": "now",
        "description": None,
        "parameters": None,
        "strict": None,
    }
    assert body["text"]["format"] == {
        "type": "json_schema",
        "name": "weather",
        "schema": {"type": "object"},
        "strict": True,
    }
    assert (body["instructions"], body["max_output_tokens"], body["user"]) == ("You are terse.", 64, "user-7")


def test_the_walk_finds_a_misspelt_field_and_allows_data_keys() -> None:
    body = wire(COMPLETED)
    body["complete_at"] = 1
    body["output"][2]["content"][0]["annotation"] = []
    body["metadata"]["any key"] = "is data"
    found = undocumented("Response", body)
    assert sorted(found) == [
        "$.complete_at",
        "$.output[2].content[0].annotation",
        "$.store",
        "$.usage.energy",
    ]
