"""`create_app`: the composition root that wires routes, error handling, state and the engine."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from server.errors import install_error_handlers
from server.generation import EngineClient
from server.lifespan import make_lifespan
from server.routes import chat, completions, health, models
from server.settings import ServerSettings
from server.state import AppState


def _no_stop(_: EngineClient) -> None:
    return None


def create_app(
    settings: ServerSettings,
    start_engine: Callable[[], EngineClient],
    stop_engine: Callable[[EngineClient], None] = _no_stop,
) -> FastAPI:
    """Build the FastAPI application.

    Args:
        settings: The server's own settings.
        start_engine: Called once at startup; returns the engine to serve with.
        stop_engine: Called once at shutdown with that engine.

    Returns:
        The application, ready for uvicorn or an ASGI test transport.
    """
    state = AppState(api_key=settings.api_key)
    app = FastAPI(
        title="wattserve",
        summary="OpenAI-compatible LLM server on vLLM with energy per token",
        lifespan=make_lifespan(state, start_engine, stop_engine),
    )
    app.state.wattserve = state
    install_error_handlers(app)
    for module in (chat, completions, models, health):
        app.include_router(module.router)
    return app
