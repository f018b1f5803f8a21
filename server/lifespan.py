"""Startup and shutdown order: build the engine before the first request, stop it after the last."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

from server.generation import EngineClient
from server.state import AppState

logger = logging.getLogger(__name__)


def make_lifespan(
    state: AppState, start_engine: Callable[[], EngineClient], stop_engine: Callable[[EngineClient], None]
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan that starts the engine, publishes it in `state`, and stops it on shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.wattserve = state
        # Blocking on purpose: nothing can be served until the model is loaded, and uvicorn only
        # starts listening once this returns, so clients never see a half-started server.
        engine = start_engine()
        state.engine = engine
        logger.info("serving %s (max_model_len=%d)", engine.served_model_name, engine.max_model_len)
        try:
            yield
        finally:
            state.engine = None
            stop_engine(engine)

    return lifespan
