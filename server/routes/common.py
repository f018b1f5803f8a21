"""Helpers shared by the generation routes: model lookup, request ids, client-disconnect handling."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TypeVar

from fastapi import Request
from fastapi.responses import Response

from adapters.errors import AdapterNotFoundError
from adapters.registry import AdapterRegistry
from adapters.types import AdapterRef
from server.accounting import EnergyFigures
from server.errors import ModelNotFoundError
from server.generation import EngineClient
from server.metrics import BASE_LABEL
from server.protocol import EnergyUsage, Usage
from server.state import AppState

T = TypeVar("T")
ADAPTER_VERSION_HEADER = "x-adapter-version"

# nginx's "client closed request": nobody reads it, but logs show why the request ended.
CLIENT_CLOSED_REQUEST = 499


@dataclass
class ModelLease:
    """The base model or one adapter version, held for one request; `release` is idempotent."""

    adapter: AdapterRef | None = None
    _registry: AdapterRegistry | None = None

    @property
    def label(self) -> str:
        """The metrics label: the adapter name, or "base"."""
        return self.adapter.name if self.adapter else BASE_LABEL

    @property
    def headers(self) -> dict[str, str]:
        """Response headers naming the adapter version that served the request."""
        return {ADAPTER_VERSION_HEADER: f"{self.adapter.name}@{self.adapter.version}"} if self.adapter else {}

    def release(self) -> None:
        """Let the adapter version drain (no-op for the base model or a second call)."""
        if self._registry is not None and self.adapter is not None:
            registry, self._registry = self._registry, None
            registry.release(self.adapter)


def lease_model(engine: EngineClient, state: AppState, model: str) -> ModelLease:
    """Resolve `model` to the base model or the current version of an adapter, and hold it.

    Raises:
        ModelNotFoundError: Nothing of that name is served (or the adapter is draining).
    """
    if model == engine.served_model_name:
        return ModelLease()
    if state.adapters is not None:
        registry = state.adapters.registry
        try:
            return ModelLease(registry.acquire(model), registry)
        except AdapterNotFoundError:
            pass
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


def make_usage(prompt_tokens: int, completion_tokens: int, energy: EnergyFigures | None) -> Usage:
    """OpenAI's `usage`, with `energy` when the server meters energy."""
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        energy=None if energy is None else EnergyUsage(**vars(energy)),
    )
