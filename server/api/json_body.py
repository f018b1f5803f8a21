"""A non-streamed answer's JSON: small ones on the event loop, large ones in a thread, a piece at a time.

An answer of many megabytes (long outputs, logprobs with many alternatives) takes pydantic a hundred
milliseconds and more to serialise. pydantic holds the GIL for the whole of one call, so running that
one call in a thread would stall the event loop just the same: the thread serialises the answer in
pieces of at most `PIECE_ITEMS` list items, and between two pieces the interpreter lets the event loop
run. The pieces join into exactly the bytes `model_dump_json` gives.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Iterator

from pydantic import BaseModel, TypeAdapter

# Answers estimated below this many bytes are serialised at once, on the event loop: a thread hop costs
# more than they do.
LARGE_BODY_BYTES = 256 * 2**10
PIECE_ITEMS = 256  # list items per piece: a few milliseconds even for logprobs with 20 alternatives


async def serialize(body: BaseModel, size_estimate: int) -> bytes:
    """The body's JSON; off the event loop when `size_estimate` (bytes) says it is large."""
    if size_estimate < LARGE_BODY_BYTES:
        return body.model_dump_json().encode()
    return await asyncio.to_thread(dump_in_pieces, body)


def dump_in_pieces(model: BaseModel) -> bytes:
    """`model.model_dump_json()`, as bytes, made of many short serialisations instead of one long one."""
    return b"".join(_pieces(model))


def _pieces(model: BaseModel) -> Iterator[bytes]:
    cls = type(model)
    if cls.__pydantic_decorators__.model_serializers:  # it shapes its own JSON (small ones: usage, deltas)
        yield model.model_dump_json().encode()
        return
    yield b"{"
    first = True
    for name, field in cls.model_fields.items():
        value = getattr(model, name)
        if field.exclude_if is not None and field.exclude_if(value):
            continue
        yield b"%s%s:" % (b"" if first else b",", json.dumps(name).encode())
        first = False
        if isinstance(value, BaseModel):
            yield from _pieces(value)
        elif isinstance(value, list) and len(value) > PIECE_ITEMS:
            adapter = _field_adapter(cls, name)
            yield b"["
            for start in range(0, len(value), PIECE_ITEMS):
                yield b"," if start else b""
                yield adapter.dump_json(value[start : start + PIECE_ITEMS])[1:-1]
            yield b"]"
        elif isinstance(value, list) and any(isinstance(item, BaseModel) for item in value):
            yield b"["
            for position, item in enumerate(value):
                yield b"," if position else b""
                yield from _pieces(item)
            yield b"]"
        else:
            yield _field_adapter(cls, name).dump_json(value)
    yield b"}"


@functools.cache
def _field_adapter(cls: type[BaseModel], name: str) -> TypeAdapter:
    return TypeAdapter(cls.model_fields[name].annotation)
