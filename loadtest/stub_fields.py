"""What the stub server reads from a request body: the fields it checks, and a stand-in for a tokenizer.

Imports nothing from the harness, so the stub runs on the server's own dependencies.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "SERVICE_TIERS",
    "BadRequest",
    "count_words",
    "error_body",
    "max_tokens",
    "service_tier",
]

DEFAULT_MAX_TOKENS = 16
# The values of OpenAI's `service_tier` (the harness's loadtest.sampling has the same tuple).
SERVICE_TIERS = ("auto", "default", "flex", "priority")


class BadRequest(Exception):
    """A request the stub refuses with a 400."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def error_body(message: str, param: str | None = None, code: str | None = None) -> bytes:
    """An OpenAI-style error body."""
    detail = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return json.dumps({"error": detail}).encode()


def count_words(value: Any) -> int:
    """Whitespace-separated words in a prompt or messages list: a stand-in for a tokenizer.

    Strings count their words, integers count as one token id, lists add up, and dicts (messages
    and content parts) count their `content` and `text` fields.
    """
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return 1
    if isinstance(value, list):
        return sum(count_words(item) for item in value)
    if isinstance(value, dict):
        return count_words(value.get("content")) + count_words(value.get("text"))
    return 0


def max_tokens(request: dict[str, Any]) -> int:
    """`max_completion_tokens`, else `max_tokens`, else the default; at least 1."""
    param = "max_completion_tokens" if request.get("max_completion_tokens") is not None else "max_tokens"
    value = request.get(param)
    if value is None:
        return DEFAULT_MAX_TOKENS
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"'{param}' must be an integer >= 1", param)
    return value


def service_tier(request: dict[str, Any]) -> str:
    """The tier that serves the request, named as OpenAI names it in the response.

    `auto`, or no tier, is served by `default`; `flex` and `priority` by themselves.

    Raises:
        BadRequest: The field is not one of `SERVICE_TIERS` (nor null).
    """
    tier = request.get("service_tier")
    if tier is None or tier == "auto":
        return "default"
    if not isinstance(tier, str) or tier not in SERVICE_TIERS:
        raise BadRequest(f"'service_tier' must be one of {', '.join(SERVICE_TIERS)}", "service_tier")
    return tier
