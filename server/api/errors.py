"""Every error, ours or the framework's, answered with OpenAI's error body; the OpenAPI error entries.

Adapter errors (`adapters.errors`) map here too: not found → 404; refused or failed load → 400 with
the refusal reason as `code` (`adapter_load_failed` when the engine refused it); a load or pin the
engine's adapter slots cannot hold next to the pinned ones → 409 with `pin_limit_reached` or
`adapter_slots_full`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.errors import AdapterCapacityError, AdapterError, AdapterNotFoundError, AdapterValidationError
from server.answers import ErrorResponse
from server.errors import PayloadTooLargeError, ServerError, error_body, server_error_body
from server.protocol import UNSUPPORTED_CHAT_FIELDS, UNSUPPORTED_COMPLETION_FIELDS
from server.request_fields import CODED_ERRORS as CODED_FIELD_ERRORS
from server.responses_wire import CODED_ERRORS as CODED_RESPONSES_ERRORS
from server.responses_wire import UNSUPPORTED_RESPONSES_FIELDS
from server.unencodable import INVALID_ENCODING

logger = logging.getLogger(__name__)
# Validation errors answered with their type as `code` and the `param` their context names.
CODED_ERRORS = CODED_FIELD_ERRORS | CODED_RESPONSES_ERRORS | {INVALID_ENCODING}
UNION_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _json(status: int, body: dict) -> JSONResponse:
    return JSONResponse(status_code=status, content=body)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """Turn pydantic's first error into OpenAI's one-line message and `param`."""
    first = exc.errors()[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    # Union members add their type to the location ("str", "list[TextPart]", "constrained-str"); drop
    # those to name the field itself. Field names are plain identifiers, so they are never dropped.
    loc = [part for part in loc if not (part in UNION_TAGS or "[" in part or "-" in part)]
    param = ".".join(loc) or None
    if first.get("type") in CODED_ERRORS:
        # Checked on the whole body or inside a free-form field, the error's context names the field.
        param = first.get("ctx", {}).get("param") or param
        message = str(first.get("msg"))
        return (message if message.startswith(f"{param}:") else f"{param}: {message}"), param
    if first.get("type") == "extra_forbidden" and param:
        field = loc[-1]
        if field in UNSUPPORTED_CHAT_FIELDS | UNSUPPORTED_COMPLETION_FIELDS | UNSUPPORTED_RESPONSES_FIELDS:
            return f"'{field}' is not supported by this server", param
        return f"Unrecognized request argument supplied: {param}", param
    if first.get("type") == "json_invalid":
        return f"Request body is not valid JSON: {first.get('msg')}", None
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return (f"{param}: {message}" if param else message), param


ERROR_DESCRIPTIONS = {
    400: "Invalid request: a field, a type, the context length, or an unsupported parameter.",
    401: "Missing or wrong API key.",
    404: "No model, adapter or route of that name.",
    409: "The adapter change conflicts with the engine's adapter slots.",
    413: "The request body is larger than the server accepts.",
    429: "At capacity: retry after the Retry-After header's seconds.",
    503: "The engine is not running, is shutting down, or has stopped.",
}


SERVED_ROUTES = "/v1/chat/completions, /v1/completions, /v1/responses, /v1/batches, /v1/files and /v1/models"
# OpenAI's API families this server does not serve: a client calling one learns which, not just 404.
UNSERVED_OPENAI_APIS = (
    "embeddings",
    "uploads",
    "images",
    "audio",
    "moderations",
    "fine_tuning",
    "assistants",
    "threads",
    "vector_stores",
    "realtime",
    "evals",
    "containers",
    "conversations",
)


def unserved_route(method: str, path: str) -> tuple[str, str | None]:
    """The message and code for a route nothing serves, worded as OpenAI words an invalid URL."""
    family = path.removeprefix("/v1/").split("/", 1)[0] if path.startswith("/v1/") else ""
    if family in UNSERVED_OPENAI_APIS:
        return (
            f"Invalid URL ({method} {path}): this server does not serve OpenAI's {family} API; it serves "
            f"{SERVED_ROUTES}.",
            "unsupported_endpoint",
        )
    return f"Invalid URL ({method} {path}): this server serves {SERVED_ROUTES}.", None


def documented_errors(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI `responses` for these error statuses, each with OpenAI's error body."""
    return {
        status: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[status]} for status in statuses
    }


def openapi_without_422(app: FastAPI) -> Callable[[], dict]:
    """The app's OpenAPI document without FastAPI's 422: invalid bodies are answered 400 here."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    responses = operation.get("responses", {})
                    responses.pop("422", None)
                    # Errors are JSON even where the success body is plain text (vLLM's adapter routes).
                    for status, response in responses.items():
                        content = response.get("content", {})
                        if status.startswith(("4", "5")) and "text/plain" in content:
                            content["application/json"] = content.pop("text/plain")
            for unused in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def install_error_handlers(app: FastAPI) -> None:
    """Make every error, ours or the framework's, answer with OpenAI's error body."""

    @app.exception_handler(ServerError)
    async def _ours(_: Request, exc: ServerError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content=server_error_body(exc), headers=exc.headers)

    @app.exception_handler(AdapterError)
    async def _adapter(_: Request, exc: AdapterError) -> JSONResponse:
        if isinstance(exc, AdapterNotFoundError):
            return _json(404, error_body(exc.message, "invalid_request_error", "model", "model_not_found"))
        if isinstance(exc, AdapterCapacityError):
            return _json(409, error_body(exc.message, "invalid_request_error", None, exc.reason.value))
        code = exc.reason.value if isinstance(exc, AdapterValidationError) else "adapter_load_failed"
        return _json(400, error_body(exc.message, "invalid_request_error", None, code))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        kind = exc.errors()[0].get("type")
        code = kind if kind in CODED_ERRORS else None
        return _json(400, error_body(message, "invalid_request_error", param, code))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        code = PayloadTooLargeError.code if exc.status_code == PayloadTooLargeError.status else None
        message = str(exc.detail)
        if exc.status_code in (HTTPStatus.NOT_FOUND, HTTPStatus.METHOD_NOT_ALLOWED) and exc.detail in (
            "Not Found",
            "Method Not Allowed",
        ):
            message, code = unserved_route(request.method, request.url.path)
        body = error_body(message, error_type, None, code)
        return JSONResponse(status_code=exc.status_code, content=body, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Logged with the traceback here; the client gets a message without one.
        logger.exception("unhandled error", exc_info=exc)
        return _json(500, error_body("Internal server error", "server_error", None, None))
