"""Pydantic wire models of what the Responses API answers: the `Response` object, its items, stream events.

Names follow OpenAI's schemas (`ResponseTextDeltaEvent` is OpenAI's `ResponseTextDeltaEvent`). Usage
carries energy where the server meters it, as chat's does. The request's model is in
`server.responses_wire`.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from server.answers import EnergyUsage, Usage

ItemStatus = Literal["in_progress", "completed", "incomplete"]
ResponseStatus = Literal["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"]
IdPrefix = Literal["resp", "msg", "fc", "rs", "call"]


def new_id(prefix: IdPrefix) -> str:
    """A fresh id in OpenAI's form: `resp_` (response), `msg_`, `fc_`, `rs_` (items), `call_` (call ids)."""
    return f"{prefix}_{uuid.uuid4().hex}"


def _absent(value: object) -> bool:
    return value is None


class InputTokensDetails(BaseModel):
    """`usage.input_tokens_details`."""

    cached_tokens: int = 0  # input tokens the prefix cache served
    # OpenAI's count of tokens written at explicit cache breakpoints, which this server has none of; its
    # schema requires the count.
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    """`usage.output_tokens_details`."""

    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    """Token counts of one response, and its energy when metered (null otherwise, as in chat's usage)."""

    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int
    energy: EnergyUsage | None = None

    @classmethod
    def from_chat_usage(cls, usage: Usage, reasoning_tokens: int = 0) -> ResponseUsage:
        """The usage of the chat generation that made the response, in the Responses API's names.

        Args:
            usage: The chat path's usage.
            reasoning_tokens: How many of the output tokens were reasoning.
        """
        details = usage.prompt_tokens_details
        return cls(
            input_tokens=usage.prompt_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=details.cached_tokens if details else 0),
            output_tokens=usage.completion_tokens,
            output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning_tokens),
            total_tokens=usage.total_tokens,
            energy=usage.energy,
        )


class OutputText(BaseModel):
    """An `output_text` part of a message."""

    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[dict[str, Any]] = Field(default_factory=list)  # never any here
    logprobs: list[dict[str, Any]] = Field(default_factory=list)  # required by OpenAI's schema; none sent


class ReasoningText(BaseModel):
    """A `reasoning_text` part of a reasoning item."""

    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


ContentPart = Annotated[OutputText | ReasoningText, Field(discriminator="type")]


class OutputMessage(BaseModel):
    """The assistant's message."""

    type: Literal["message"] = "message"
    id: str
    status: ItemStatus
    role: Literal["assistant"] = "assistant"
    content: list[OutputText] = Field(default_factory=list)


class OutputFunctionCall(BaseModel):
    """A call of one of the caller's functions; `arguments` is JSON text."""

    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str
    status: ItemStatus


class OutputReasoning(BaseModel):
    """The reasoning of a model that reasons, as text; never summarised or encrypted here."""

    type: Literal["reasoning"] = "reasoning"
    id: str
    summary: list[dict[str, Any]] = Field(default_factory=list)
    content: list[ReasoningText] = Field(default_factory=list)
    status: ItemStatus


OutputItem = Annotated[OutputMessage | OutputFunctionCall | OutputReasoning, Field(discriminator="type")]


class FunctionTool(BaseModel):
    """A function tool as the response repeats it."""

    type: Literal["function"] = "function"
    name: str
    description: str | None = None
    # Required by OpenAI's schema, null when the request gave none.
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolChoiceFunction(BaseModel):
    """`tool_choice` naming one function."""

    type: Literal["function"] = "function"
    name: str


class TextConfig(BaseModel):
    """`text`: the answer's format, as the request gave it (`{"type": "text"}` when it gave none)."""

    format: dict[str, Any] = Field(default_factory=lambda: {"type": "text"})
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(BaseModel):
    """`reasoning`, as the request gave it."""

    effort: str | None = None
    summary: str | None = None


class ResponseError(BaseModel):
    """Why a response failed; `code` is one of OpenAI's response error codes."""

    code: Literal["server_error", "rate_limit_exceeded", "invalid_prompt"]
    message: str


class IncompleteDetails(BaseModel):
    """Why a response is incomplete: cut by `max_output_tokens` (or the context's end)."""

    reason: Literal["max_output_tokens", "content_filter"]


class Response(BaseModel):
    """The Responses API's `Response` object: a body, a stored answer, and the state stream events carry.

    The request's settings it repeats come from `ResponsesRequest.echoed()`.
    """

    id: str
    object: Literal["response"] = "response"
    created_at: int = Field(default_factory=lambda: int(time.time()))
    status: ResponseStatus
    background: bool = False
    completed_at: int | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: ReasoningConfig | None = None
    service_tier: str | None = None
    store: bool = True
    temperature: float | None = None
    text: TextConfig = Field(default_factory=TextConfig)
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceFunction = "auto"
    tools: list[FunctionTool] = Field(default_factory=list)
    top_p: float | None = None
    truncation: Literal["disabled"] = "disabled"
    # Known once generation ends. OpenAI's schema has both as strings or objects, never null: absent.
    usage: ResponseUsage | None = Field(default=None, exclude_if=_absent)
    user: str | None = Field(default=None, exclude_if=_absent)
    metadata: dict[str, str] = Field(default_factory=dict)


class ResponseStreamEventBase(BaseModel):
    """What every stream event has: its type, and its place in the stream (from 0)."""

    type: str
    sequence_number: int


class ResponseCreatedEvent(ResponseStreamEventBase):
    """The response exists (`in_progress`, no output yet)."""

    type: Literal["response.created"] = "response.created"
    response: Response


class ResponseInProgressEvent(ResponseStreamEventBase):
    """Generation has started."""

    type: Literal["response.in_progress"] = "response.in_progress"
    response: Response


class ResponseCompletedEvent(ResponseStreamEventBase):
    """The response finished, with its output and usage."""

    type: Literal["response.completed"] = "response.completed"
    response: Response


class ResponseIncompleteEvent(ResponseStreamEventBase):
    """The response ended cut short (see its `incomplete_details`)."""

    type: Literal["response.incomplete"] = "response.incomplete"
    response: Response


class ResponseFailedEvent(ResponseStreamEventBase):
    """The response failed (see its `error`)."""

    type: Literal["response.failed"] = "response.failed"
    response: Response


class ResponseOutputItemAddedEvent(ResponseStreamEventBase):
    """An output item begins (`in_progress`, empty)."""

    type: Literal["response.output_item.added"] = "response.output_item.added"
    output_index: int
    item: OutputItem


class ResponseOutputItemDoneEvent(ResponseStreamEventBase):
    """An output item is whole."""

    type: Literal["response.output_item.done"] = "response.output_item.done"
    output_index: int
    item: OutputItem


class ResponseContentPartAddedEvent(ResponseStreamEventBase):
    """A content part of an item begins (empty)."""

    type: Literal["response.content_part.added"] = "response.content_part.added"
    item_id: str
    output_index: int
    content_index: int
    part: ContentPart


class ResponseContentPartDoneEvent(ResponseStreamEventBase):
    """A content part of an item is whole."""

    type: Literal["response.content_part.done"] = "response.content_part.done"
    item_id: str
    output_index: int
    content_index: int
    part: ContentPart


class ResponseTextDeltaEvent(ResponseStreamEventBase):
    """More text of a message's `output_text` part."""

    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[dict[str, Any]] = Field(default_factory=list)  # required by OpenAI's schema; none sent


class ResponseTextDoneEvent(ResponseStreamEventBase):
    """A message's `output_text` part is whole."""

    type: Literal["response.output_text.done"] = "response.output_text.done"
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class ResponseFunctionCallArgumentsDeltaEvent(ResponseStreamEventBase):
    """More JSON text of a function call's arguments."""

    type: Literal["response.function_call_arguments.delta"] = "response.function_call_arguments.delta"
    item_id: str
    output_index: int
    delta: str


class ResponseFunctionCallArgumentsDoneEvent(ResponseStreamEventBase):
    """A function call's arguments are whole."""

    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    item_id: str
    output_index: int
    name: str
    arguments: str


class ResponseReasoningTextDeltaEvent(ResponseStreamEventBase):
    """More text of a reasoning item's `reasoning_text` part."""

    type: Literal["response.reasoning_text.delta"] = "response.reasoning_text.delta"
    item_id: str
    output_index: int
    content_index: int
    delta: str


class ResponseReasoningTextDoneEvent(ResponseStreamEventBase):
    """A reasoning item's `reasoning_text` part is whole."""

    type: Literal["response.reasoning_text.done"] = "response.reasoning_text.done"
    item_id: str
    output_index: int
    content_index: int
    text: str


class ResponseErrorEvent(ResponseStreamEventBase):
    """The stream broke off: OpenAI's error, in place of the events that did not come."""

    type: Literal["error"] = "error"
    code: str | None
    message: str
    param: str | None


ResponseStreamEvent = Annotated[
    ResponseCreatedEvent
    | ResponseInProgressEvent
    | ResponseOutputItemAddedEvent
    | ResponseContentPartAddedEvent
    | ResponseTextDeltaEvent
    | ResponseTextDoneEvent
    | ResponseContentPartDoneEvent
    | ResponseOutputItemDoneEvent
    | ResponseFunctionCallArgumentsDeltaEvent
    | ResponseFunctionCallArgumentsDoneEvent
    | ResponseReasoningTextDeltaEvent
    | ResponseReasoningTextDoneEvent
    | ResponseCompletedEvent
    | ResponseIncompleteEvent
    | ResponseFailedEvent
    | ResponseErrorEvent,
    Field(discriminator="type"),
]
