"""Pydantic wire model of OpenAI's Responses request, and its conversion into the chat path's terms.

`POST /v1/responses` is generated through the same path as chat completions: the request's items become
chat-template messages (`server.responses_items`), its function tools and `tool_choice` their
chat-completions forms, `text.format` a `response_format`. The answers' models (the `Response` object, its
items and stream events) are in `server.responses_answers`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from server.protocol import INT32_MAX, RequestBody
from server.request_fields import (
    UNSUPPORTED_CONTENT_PART,
    FunctionDefinition,
    JsonSchemaSpec,
    Metadata,
    ResponseFormat,
    StrictModel,
)
from server.responses_items import (
    INPUT_ITEM_TYPES,
    INPUT_ITEMS,
    MESSAGE_PART_TYPES,
    FunctionCallItem,
    InputItem,
    MessageItem,
    chat_messages,
)
from server.tiers import RequestedTier, Tier, served_tier

# Validation errors that carry their own `code` and `param` (in the error's context), answered as such:
# a value this server does not implement, and a value at odds with the rest of the request.
UNSUPPORTED_VALUE = "unsupported_value"
INVALID_VALUE = "invalid_value"
CODED_ERRORS = frozenset({UNSUPPORTED_VALUE, INVALID_VALUE})

# Fields OpenAI documents that this server does not implement and that would change the answer: a
# request naming one gets a 400 that says which, instead of being silently served differently.
UNSUPPORTED_RESPONSES_FIELDS = frozenset(
    {
        "conversation",
        "prompt",
        "context_management",
        "moderation",
        "prompt_cache_options",
        "background_options",
        "image",
        "access_programs",
    }
)
# OpenAI's `include` values. Each names output this server never makes (built-in tool results, input
# images, encrypted reasoning) or, for logprobs, sends empty: they are accepted and change nothing.
Includable = Literal[
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
]
# A function without declared parameters takes none; chat templates read `parameters.properties`.
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


class FunctionToolParam(FunctionDefinition):
    """A function the caller offers the model (the one kind of tool here): chat's definition, flat."""

    type: Literal["function"]


class ToolChoiceFunctionParam(StrictModel):
    """`tool_choice` naming the one function the model must call."""

    type: Literal["function"]
    name: str


class TextFormatText(StrictModel):
    """`text.format`: free text."""

    type: Literal["text"]


class TextFormatJsonObject(StrictModel):
    """`text.format`: any JSON object."""

    type: Literal["json_object"]


class TextFormatJsonSchema(StrictModel):
    """`text.format`: JSON matching a schema."""

    type: Literal["json_schema"]
    name: str = Field(max_length=64)
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


TextFormat = Annotated[
    TextFormatText | TextFormatJsonObject | TextFormatJsonSchema, Field(discriminator="type")
]


class TextParam(StrictModel):
    """`text`: the answer's format; `verbosity` is a hint OpenAI's models follow and served models lack."""

    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningParam(StrictModel):
    """`reasoning`: accepted, with no effect: a served model that reasons does so at its own length."""

    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class ResponsesStreamOptions(StrictModel):
    """`stream_options`: obfuscation pads delta events against length side channels; none is sent here."""

    include_obfuscation: bool | None = None


def _coded(code: str, param: str, message: str, **values: Any) -> PydanticCustomError:
    return PydanticCustomError(code, "{param}: " + message, {"param": param, **values})


def _refuse_unsupported_kinds(data: Any) -> None:
    """Refuse tools, tool choices, items and content parts of kinds this server lacks, naming each.

    Runs on the raw body, before its parts are validated, so the error names the kind rather than a
    mismatch with another kind's shape.
    """
    if not isinstance(data, dict):
        return
    tools = data.get("tools")
    for index, tool in enumerate(tools if isinstance(tools, list) else []):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and kind != "function":
            message = "'{kind}' tools are not supported: this server calls the caller's functions only"
            raise _coded(UNSUPPORTED_VALUE, f"tools.{index}", message, kind=kind)
    choice = data.get("tool_choice")
    kind = choice.get("type") if isinstance(choice, dict) else None
    if isinstance(kind, str) and kind != "function":
        message = "'{kind}' is not supported: give none, auto, required or a function"
        raise _coded(UNSUPPORTED_VALUE, "tool_choice", message, kind=kind)
    items = data.get("input")
    for index, item in enumerate(items if isinstance(items, list) else []):
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if isinstance(kind, str) and kind not in INPUT_ITEM_TYPES:
            message = "'{kind}' items are not supported: give messages, function calls and their outputs"
            raise _coded(UNSUPPORTED_VALUE, f"input.{index}", message, kind=kind)
        content = item.get("content") if kind == "message" else None
        for position, part in enumerate(content if isinstance(content, list) else []):
            part_kind = part.get("type") if isinstance(part, dict) else None
            if isinstance(part_kind, str) and part_kind not in MESSAGE_PART_TYPES:
                message = "'{kind}' content parts are not supported: the served model takes text"
                param = f"input.{index}.content.{position}"
                raise _coded(UNSUPPORTED_CONTENT_PART, param, message, kind=part_kind)


class ResponsesRequest(StrictModel, RequestBody):
    """Body of `POST /v1/responses`.

    Accepted and ignored, as bookkeeping that changes no answer: `metadata`, `user`, `safety_identifier`,
    `prompt_cache_key`, `prompt_cache_retention`, `include`, `stream_options`, `max_tool_calls` (it
    bounds built-in tools, which this server has none of), `reasoning` and `verbosity` (`text`'s or
    top-level).
    """

    model: str = Field(min_length=1)
    input: str | Annotated[list[InputItem], Field(min_length=1)]
    instructions: str | None = None
    tools: list[FunctionToolParam] = Field(default_factory=list)
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceFunctionParam | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    text: TextParam | None = None
    stream: bool | None = False
    stream_options: ResponsesStreamOptions | None = None
    store: bool | None = True
    background: bool | None = False
    service_tier: RequestedTier | None = None
    previous_response_id: str | None = Field(default=None, min_length=1)
    truncation: Literal["auto", "disabled"] | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    reasoning: ReasoningParam | None = None
    metadata: Metadata | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    include: list[Includable] | None = None
    max_tool_calls: int | None = Field(default=None, ge=1)
    # The SDK's `responses.parse()` sends `text.verbosity` here, at the top level.
    verbosity: Literal["low", "medium", "high"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _supported_kinds(cls, data: Any) -> Any:
        _refuse_unsupported_kinds(data)
        return data

    @model_validator(mode="after")
    def _check_settings(self) -> ResponsesRequest:
        if self.stream_options is not None and not self.stream:
            raise _coded(INVALID_VALUE, "stream_options", "only allowed when stream is true")
        if self.background and self.store is False:
            message = "a background response is stored until it is fetched; set store to true"
            raise _coded(INVALID_VALUE, "background", message)
        if self.truncation == "auto":
            message = "'auto' is not supported: this server never drops input to fit; too long is refused"
            raise _coded(UNSUPPORTED_VALUE, "truncation", message)
        if self.top_logprobs:
            raise _coded(UNSUPPORTED_VALUE, "top_logprobs", "only 0 is supported: no alternatives are sent")
        self._check_tools()
        self._check_function_arguments()
        return self

    def _check_tools(self) -> None:
        names = [tool.name for tool in self.tools]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise _coded(INVALID_VALUE, f"tools.{index}.name", "'{name}' names two tools", name=name)
        if self.tool_choice == "required" and not self.tools:
            raise _coded(INVALID_VALUE, "tool_choice", "'required' needs at least one tool in tools")
        if isinstance(self.tool_choice, ToolChoiceFunctionParam) and self.tool_choice.name not in names:
            message = "the function '{name}' is not in tools"
            raise _coded(INVALID_VALUE, "tool_choice", message, name=self.tool_choice.name)

    def _check_function_arguments(self) -> None:
        for index, item in enumerate(self.items):
            if not isinstance(item, FunctionCallItem):
                continue
            try:
                arguments = item.parsed_arguments
            except json.JSONDecodeError as err:
                message = "the arguments are not JSON ({reason})"
                raise _coded(INVALID_VALUE, f"input.{index}.arguments", message, reason=str(err)) from err
            if not isinstance(arguments, dict):
                # Chat templates read arguments as name-value pairs, as OpenAI's functions take them.
                message = "the arguments must be a JSON object"
                raise _coded(INVALID_VALUE, f"input.{index}.arguments", message)

    @property
    def items(self) -> list[InputItem]:
        """The input as items: a string is one user message."""
        if isinstance(self.input, str):
            return [MessageItem(role="user", content=self.input)]
        return list(self.input)

    def input_items(self) -> list[dict[str, Any]]:
        """The input as JSON items, as a later response's `history` takes them back."""
        return [item.model_dump(mode="json", by_alias=True, exclude_none=True) for item in self.items]

    def template_messages(self, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The conversation as chat-template messages (`server.responses_items.chat_messages`).

        `instructions` lead as a system message: this request's own, since OpenAI carries no instructions
        over from a previous response.

        Args:
            history: The items of the responses before this one (each one's input and output items, as
                JSON, oldest first); empty without `previous_response_id`.

        Returns:
            The messages, in the chat path's dict forms.
        """
        system = [] if self.instructions is None else [{"role": "system", "content": self.instructions}]
        return system + chat_messages([*INPUT_ITEMS.validate_python(history), *self.items])

    @property
    def chat_tools(self) -> list[dict[str, Any]] | None:
        """The tools in chat-completions form, or None without tools."""
        if not self.tools:
            return None
        tools = []
        for tool in self.tools:
            function: dict[str, Any] = {"name": tool.name}
            if tool.description is not None:
                function["description"] = tool.description
            function["parameters"] = tool.parameters if tool.parameters is not None else NO_PARAMETERS
            if tool.strict is not None:
                function["strict"] = tool.strict
            tools.append({"type": "function", "function": function})
        return tools

    @property
    def chat_tool_choice(self) -> str | dict[str, Any] | None:
        """`tool_choice` in chat-completions form (None when unset)."""
        if isinstance(self.tool_choice, ToolChoiceFunctionParam):
            return {"type": "function", "function": {"name": self.tool_choice.name}}
        return self.tool_choice

    @property
    def response_format(self) -> ResponseFormat | None:
        """`text.format` as the chat path's `response_format` (None when unset)."""
        text_format = self.text.format if self.text is not None else None
        if text_format is None:
            return None
        if isinstance(text_format, TextFormatJsonSchema):
            spec = JsonSchemaSpec(
                name=text_format.name,
                schema=text_format.schema_,
                description=text_format.description,
                strict=text_format.strict,
            )
            return ResponseFormat(type="json_schema", json_schema=spec)
        return ResponseFormat(type=text_format.type)

    @property
    def tier(self) -> Tier:
        """The service tier the request is served in (`auto` and unset are `default`)."""
        return served_tier(self.service_tier)

    def echoed(self) -> dict[str, Any]:
        """The request's settings as its `Response` repeats them, OpenAI's defaults filled in.

        Returns:
            Keyword arguments of `server.responses_answers.Response`.
        """
        text_format = self.text.format if self.text is not None else None
        return {
            "instructions": self.instructions,
            "tools": [tool.model_dump() for tool in self.tools],
            "tool_choice": (
                self.tool_choice.model_dump()
                if isinstance(self.tool_choice, ToolChoiceFunctionParam)
                else self.tool_choice or "auto"
            ),
            "parallel_tool_calls": self.parallel_tool_calls is not False,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_output_tokens": self.max_output_tokens,
            "previous_response_id": self.previous_response_id,
            "store": self.store is not False,
            "background": bool(self.background),
            "metadata": dict(self.metadata or {}),
            "text": {
                "format": (
                    text_format.model_dump(by_alias=True, exclude_none=True)
                    if text_format is not None
                    else {"type": "text"}
                ),
                "verbosity": self.text.verbosity if self.text is not None else self.verbosity,
            },
            "truncation": "disabled",
            "user": self.user,
            "reasoning": self.reasoning.model_dump() if self.reasoning is not None else None,
        }
