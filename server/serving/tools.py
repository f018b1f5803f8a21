"""A chat request's tools: checked, handed to the chat template, and turned into the output's parsing.

Nothing of a tool reaches the engine unchecked: the number of tools is bounded, every function's
parameter schema goes through the size caps structured outputs have, and a forced call's schema (the
constraint the model's output must follow) through the same bounded compile as a `response_format`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from server.engine.types import ToolRequest

if TYPE_CHECKING:
    from server.engine.output_parsing import OutputParsers, RequestParsing
from server.errors import InvalidRequestError
from server.protocol import ChatCompletionRequest
from server.serving.schema_limits import SchemaLimits, check_schema_limits

# vLLM's words for `auto` without a parser, so clients that match on them see the same refusal.
AUTO_NEEDS_PARSER = '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'


def tool_request(body: ChatCompletionRequest) -> ToolRequest:
    """The request's tool fields in the plain form the engine's parsers take."""
    return ToolRequest(
        tools=[tool.model_dump(exclude_none=True) for tool in body.tools] if body.tools else None,
        tool_choice=body.effective_tool_choice,
        parallel_tool_calls=body.parallel_tool_calls,
        include_reasoning=body.include_reasoning,
    )


def check_tools(
    body: ChatCompletionRequest, parsers: OutputParsers, max_tools: int, limits: SchemaLimits
) -> None:
    """Refuse tools this server cannot serve as asked, before anything is rendered.

    Raises:
        InvalidRequestError: More tools than `max_tools`, or `auto` without an auto tool parser.
        SchemaTooLargeError: A function's parameter schema over the structured-output size caps.
    """
    if not body.tools:
        return
    if len(body.tools) > max_tools:
        raise InvalidRequestError(
            f"tools: {len(body.tools)} tools given; this server takes at most {max_tools} (--max-tools)",
            param="tools",
        )
    if body.effective_tool_choice == "auto" and not parsers.auto_tools:
        raise InvalidRequestError(AUTO_NEEDS_PARSER, param="tool_choice")
    for index, tool in enumerate(body.tools):
        if tool.function.parameters is not None:
            check_schema_limits(tool.function.parameters, limits, f"tools.{index}.function.parameters")


def template_tools(body: ChatCompletionRequest) -> list[dict[str, Any]] | None:
    """The tools as the chat template lists them (vLLM hands templates the chat-completions form)."""
    return [tool.model_dump(exclude_none=True) for tool in body.tools] if body.tools else None


def tool_chars(body: ChatCompletionRequest) -> int:
    """Characters the tools and the history's tool calls add to what the template renders."""
    total = sum(len(json.dumps(tool)) for tool in template_tools(body) or ())
    for message in body.messages:
        total += len(message.tool_call_id or "")
        for call in message.tool_calls or ():
            total += len(call.id) + len(call.function.name) + len(call.function.arguments)
    return total


def output_parsing(body: ChatCompletionRequest, parsers: OutputParsers) -> RequestParsing | None:
    """How the request's output is read (None: plain text, the fast path)."""
    tools = tool_request(body)
    return parsers.for_request(tools) if parsers.needed(tools) else None
