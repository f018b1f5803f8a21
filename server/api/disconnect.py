"""Client-disconnect detection: await some work unless the client goes away first."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

from server.errors import ClientDisconnectedError

T = TypeVar("T")


async def _disconnected(request: Request) -> None:
    # Reads the ASGI channel directly: request.is_disconnected() polls and misses disconnects behind
    # middleware. The body has already been read, so the next message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client goes away first.

    Raises:
        ClientDisconnectedError: The client went away.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ClientDisconnectedError("The client closed the connection.")
    return task.result()
