"""Helpers shared by the generation routes: model lookup, request ids, client-disconnect handling."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from fastapi import Request
from fastapi.responses import Response

from server.errors import ModelNotFoundError
from server.generation import EngineClient

T = TypeVar("T")

# nginx's "client closed request": nobody reads it, but logs show why the request ended.
CLIENT_CLOSED_REQUEST = 499


def check_model(engine: EngineClient, model: str) -> None:
    """Raise a 404 unless `model` is a name this server serves."""
    if model != engine.served_model_name:
        raise ModelNotFoundError(f"The model '{model}' does not exist.", param="model")


def new_request_id(prefix: str) -> str:
    """A unique id for one request, also used as the engine request id."""
    return f"{prefix}-{uuid.uuid4().hex}"


async def _disconnected(request: Request) -> None:
    # Reads the ASGI channel directly: request.is_disconnected() polls and misses disconnects behind
    # middleware. The body has already been read, so the next message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def until_disconnected(request: Request, work: Awaitable[T]) -> T | Response:
    """Run `work`, cancelling it (and so aborting its engine requests) if the client goes away."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task.cancelled() or not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return task.result()


async def prepend(first: T, rest: AsyncIterator[T]) -> AsyncIterator[T]:
    """Yield `first`, then everything from `rest` (a stream whose first item was already taken)."""
    yield first
    async for item in rest:
        yield item
