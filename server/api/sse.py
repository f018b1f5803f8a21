"""Server-sent-events encoding: plain events, pre-serialised event templates, and the closing `[DONE]`."""

from __future__ import annotations

import json

import msgspec
from pydantic import BaseModel

DONE = b"data: [DONE]\n\n"
# Stands for the one string an event template leaves open; no generated text contains NUL bytes around it.
HOLE = "\x00wattserve-hole\x00"
_encode = msgspec.json.Encoder().encode
# OpenAPI description of one event of a streamed answer (the shape SSE-aware tools parse events into).
EVENT_SCHEMA = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "string",
            "description": "A JSON chunk of the answer, a final usage chunk, an error body, or [DONE].",
        },
        "event": {"type": "string"},
    },
}


def sse_event(payload: BaseModel | dict) -> bytes:
    """Encode one `data:` event."""
    body = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload)
    return b"data: " + body.encode() + b"\n\n"


class EventTemplate:
    """One event serialised once, with a string field left open; each use only encodes that string.

    Streaming sends one event per token: building and serialising the pydantic chunk every time cost
    more than everything else the API process does per token, while only the text changes.
    """

    __slots__ = ("_prefix", "_suffix")

    def __init__(self, model: BaseModel) -> None:
        event = sse_event(model)
        marker = _encode(HOLE)
        if event.count(marker) != 1:
            raise ValueError("an event template needs exactly one hole")
        self._prefix, _, self._suffix = event.partition(marker)

    def fill(self, text: str) -> bytes:
        """The event with `text` in the hole (JSON-escaped)."""
        return self._prefix + _encode(text) + self._suffix
