"""A Responses request as the chat request it is served as, so both go through one request path.

Tiers, admission, adapters, input limits, tool checks, parsing and energy are the chat path's; only the
wording of the answer differs (`server.api.responses_format`).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from server.errors import InvalidRequestError
from server.protocol import ChatCompletionRequest
from server.responses_wire import ResponsesRequest


def _with_argument_text(message: dict[str, Any]) -> dict[str, Any]:
    # The items hold arguments parsed; chat history carries them as JSON text, as OpenAI sends them.
    calls = message.get("tool_calls")
    if not calls:
        return message
    return {
        **message,
        "tool_calls": [
            {**call, "function": {**call["function"], "arguments": _text(call["function"]["arguments"])}}
            for call in calls
        ],
    }


def _text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


def chat_request(body: ResponsesRequest, history: list[dict[str, Any]]) -> ChatCompletionRequest:
    """The chat request that serves `body`, after the conversation `history` (stored items, oldest first).

    Raises:
        InvalidRequestError: The conversation is not one the chat path can serve (a message it refuses).
    """
    fields: dict[str, Any] = {
        "model": body.model,
        "messages": [_with_argument_text(message) for message in body.template_messages(history)],
    }
    if body.chat_tools is not None:
        fields["tools"] = body.chat_tools
        if body.chat_tool_choice is not None:
            fields["tool_choice"] = body.chat_tool_choice
    if body.parallel_tool_calls is not None:
        fields["parallel_tool_calls"] = body.parallel_tool_calls
    optional = {
        "max_completion_tokens": body.max_output_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "service_tier": body.service_tier,
    }
    fields.update({name: value for name, value in optional.items() if value is not None})
    if body.response_format is not None:
        fields["response_format"] = body.response_format.model_dump(by_alias=True, exclude_none=True)
    try:
        return ChatCompletionRequest.model_validate(fields)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidRequestError(
            f"input: the conversation cannot be served: {where}: {first['msg']}", param="input"
        ) from err
