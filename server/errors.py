"""The server's exception tree and OpenAI's error body for each; it knows no web framework.

Tree::

    ServerError                      500 server_error
    ├── InvalidRequestError          400 invalid_request_error
    │   ├── ContextLengthError       400 invalid_request_error, code context_length_exceeded
    │   ├── TooManyMessagesError     400 invalid_request_error, code array_above_max_length
    │   ├── ResponseTooLargeError    400 invalid_request_error, code response_too_large
    │   ├── SchemaTooLargeError      400 invalid_request_error, code response_format_too_large
    │   └── GrammarTooComplexError   400 invalid_request_error, code response_format_too_complex
    ├── AuthenticationError          401 authentication_error
    ├── ModelNotFoundError           404 invalid_request_error, code model_not_found
    ├── PayloadTooLargeError         413 invalid_request_error, code request_too_large
    ├── OverloadedError              429 rate_limit_error, code server_overloaded (+ Retry-After)
    ├── ClientDisconnectedError      499 (nginx's "client closed request"; nobody reads it)
    └── EngineUnavailableError       503 service_unavailable

The HTTP side (handlers for these, for adapter errors and for the framework's own) is
`server.api.errors`.
"""

from __future__ import annotations

from http import HTTPStatus

from server.answers import ErrorDetail, ErrorResponse
from server.unencodable import printable


class ServerError(Exception):
    """Base of every error the server answers with an OpenAI error body."""

    status = HTTPStatus.INTERNAL_SERVER_ERROR
    error_type = "server_error"
    code: str | None = None
    headers: dict[str, str] | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequestError(ServerError):
    """The request body is well-formed JSON but asks for something invalid."""

    status = HTTPStatus.BAD_REQUEST
    error_type = "invalid_request_error"


class UnsupportedContentPartError(InvalidRequestError):
    """A chat message holds a content part the served model cannot take (an image for a text-only model)."""

    code = "unsupported_content_part"


class ContextLengthError(InvalidRequestError):
    """The prompt plus the requested output do not fit the model's context."""

    code = "context_length_exceeded"


class SchemaTooLargeError(InvalidRequestError):
    """A `response_format` schema is over the server's size caps (bytes, enum values, properties)."""

    code = "response_format_too_large"


class GrammarTooComplexError(InvalidRequestError):
    """A `response_format` schema did not compile into a grammar within the server's deadline."""

    code = "response_format_too_complex"


class TooManyMessagesError(InvalidRequestError):
    """A chat holds more messages than the server renders (OpenAI's code for an over-long array)."""

    code = "array_above_max_length"


class ResponseTooLargeError(InvalidRequestError):
    """A request asks for more tokens and log probabilities than one answer may hold."""

    code = "response_too_large"


class AuthenticationError(ServerError):
    """The API key is missing or wrong."""

    status = HTTPStatus.UNAUTHORIZED
    error_type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFoundError(ServerError):
    """The `model` field names nothing this server serves."""

    status = HTTPStatus.NOT_FOUND
    error_type = "invalid_request_error"
    code = "model_not_found"


class ResponseNotFoundError(ServerError):
    """No stored response of that id for this caller (absent, expired, or another key's: answered alike)."""

    status = HTTPStatus.NOT_FOUND
    error_type = "invalid_request_error"
    code = "response_not_found"


class StoredFileNotFoundError(ServerError):
    """No file of that id for this caller (absent, expired, or another key's: answered alike)."""

    status = HTTPStatus.NOT_FOUND
    error_type = "invalid_request_error"
    code = "file_not_found"


class BatchNotFoundError(ServerError):
    """No batch of that id for this caller (absent, purged, or another key's: answered alike)."""

    status = HTTPStatus.NOT_FOUND
    error_type = "invalid_request_error"
    code = "batch_not_found"


class PayloadTooLargeError(ServerError):
    """The request body is larger than the server accepts."""

    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    error_type = "invalid_request_error"
    code = "request_too_large"


class OverloadedError(ServerError):
    """Every slot is taken and the queue is full: retry after `retry_after_s` seconds."""

    status = HTTPStatus.TOO_MANY_REQUESTS
    error_type = "rate_limit_error"
    code = "server_overloaded"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        """`Retry-After`, in whole seconds."""
        return {"Retry-After": str(self.retry_after_s)}


class ClientDisconnectedError(ServerError):
    """The client went away before the answer was ready (logged as 499; the client never sees it)."""

    status = 499
    error_type = "client_closed_request"


class EngineUnavailableError(ServerError):
    """The engine cannot serve right now (starting, dead or shutting down)."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    error_type = "service_unavailable"


def error_body(message: str, error_type: str, param: str | None, code: str | None) -> dict:
    """Build OpenAI's error body as a plain dict (also used inside SSE streams).

    Messages and params may echo the request; what UTF-8 cannot encode is escaped, so the body can
    always be sent whatever the input held.
    """
    param = printable(param) if param is not None else None
    detail = ErrorDetail(message=printable(message), type=error_type, param=param, code=code)
    return ErrorResponse(error=detail).model_dump()


def server_error_body(exc: ServerError) -> dict:
    """The OpenAI error body for one of our exceptions."""
    return error_body(exc.message, exc.error_type, exc.param, exc.code)
