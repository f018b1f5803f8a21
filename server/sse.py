"""Server-sent-events encoding of stream chunks and the closing `[DONE]`."""

from __future__ import annotations

import json

from pydantic import BaseModel

DONE = b"data: [DONE]\n\n"


def sse_event(payload: BaseModel | dict) -> bytes:
    """Encode one `data:` event."""
    body = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload)
    return b"data: " + body.encode() + b"\n\n"
