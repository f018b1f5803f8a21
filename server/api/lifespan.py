"""The app's lifespan: serving starts before the first request and stops after the last.

What starting and stopping build and tear down, and in which order, is the composition root's
(`server.compose`); this module only ties it to the application's life.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from fastapi import FastAPI

from server.api.state import AppState, Serving

Running = TypeVar("Running")


def make_lifespan(
    state: AppState,
    start: Callable[[], Awaitable[tuple[Serving, Running]]],
    stop: Callable[[Running], Awaitable[None]],
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan that publishes what `start` built for the handlers, and hands it to `stop` at the end."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.wattserve = state
        # uvicorn only starts listening once this returns, so clients never see a half-started server.
        serving, running = await start()
        state.serving = serving
        try:
            yield
        finally:
            state.serving = None
            await stop(running)

    return lifespan
