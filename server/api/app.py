"""`build_http_app`: the FastAPI application around an `AppState`: routes, middleware, error handling."""

from __future__ import annotations

import contextlib
import importlib
import inspect
from collections.abc import Callable

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from server.api.auth import KeyMiddleware
from server.api.body_limit import BodyLimitMiddleware
from server.api.errors import install_error_handlers, openapi_without_422
from server.api.request_id import RequestIdMiddleware
from server.api.routes import (
    adapters,
    batches,
    chat,
    completions,
    energy,
    files,
    health,
    models,
    responses,
    tokenize,
)
from server.api.state import AppState
from server.settings import ServerSettings

Lifespan = Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]


def build_http_app(settings: ServerSettings, state: AppState, lifespan: Lifespan) -> FastAPI:
    """The application, ready for uvicorn or an ASGI test transport.

    Args:
        settings: The server's settings (keys, limits, CORS, docs, root path).
        state: What handlers share.
        lifespan: Starts serving before the first request and stops it after the last.
    """
    docs = {"docs_url": None, "redoc_url": None, "openapi_url": None} if settings.disable_fastapi_docs else {}
    app = FastAPI(
        title="wattserve",
        summary="OpenAI-compatible LLM server on vLLM with energy per token",
        lifespan=lifespan,
        root_path=settings.root_path,
        **docs,
    )
    app.state.wattserve = state
    install_error_handlers(app)
    app.openapi = openapi_without_422(app)
    # The last added runs first: keys are checked before the body is even counted.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_request_body_bytes,
        max_upload_bytes=settings.max_batch_file_bytes,
    )
    app.add_middleware(KeyMiddleware, api_keys=settings.api_keys, admin_key=settings.admin_key)
    if settings.allowed_origins:
        # Outermost, so a browser's preflight (which carries no key) is answered before the key check.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            allow_methods=settings.allowed_methods,
            allow_headers=settings.allowed_headers,
            allow_credentials=settings.allow_credentials,
        )
    if settings.enable_request_id_headers:
        app.add_middleware(RequestIdMiddleware)
    for path in settings.middleware:
        add_middleware_at(app, path)
    for module in (chat, completions, responses, files, batches, models, tokenize, adapters, energy, health):
        app.include_router(module.router)
    return app


def add_middleware_at(app: FastAPI, path: str) -> None:
    """`--middleware module.name`, as vLLM adds it: a class as ASGI middleware, a coroutine function as HTTP.

    Added last, so it runs first, before CORS and the key check.

    Raises:
        ValueError: The path names nothing importable, or neither a class nor a coroutine function.
    """
    module_path, _, name = path.rpartition(".")
    try:
        imported = getattr(importlib.import_module(module_path), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"--middleware {path}: cannot import it ({err})") from err
    if inspect.isclass(imported):
        app.add_middleware(imported)
    elif inspect.iscoroutinefunction(imported):
        app.middleware("http")(imported)
    else:
        raise ValueError(f"--middleware {path}: expected a class or an async function")
