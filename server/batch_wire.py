"""Pydantic wire models of OpenAI's Files and Batch APIs, and the check of a batch's input lines.

Each input line is `{"custom_id", "method": "POST", "url", "body"}`; its body must be one the live route
would accept (the same request models check it), must not stream, and its `custom_id` must be unique.
A line that fails is an error naming its line number, in OpenAI's `errors` list of the batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from server.protocol import ChatCompletionRequest, CompletionRequest
from server.request_fields import Metadata, StrictModel

ENDPOINTS: dict[str, type[ChatCompletionRequest] | type[CompletionRequest]] = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/completions": CompletionRequest,
}
Endpoint = Literal["/v1/chat/completions", "/v1/completions"]
ERRORS_SHOWN = 1000  # a batch lists at most this many line errors (the count says how many there were)


class BatchCreateRequest(StrictModel):
    """Body of `POST /v1/batches`."""

    input_file_id: str = Field(min_length=1)
    endpoint: Endpoint
    completion_window: Literal["24h"]
    metadata: Metadata | None = None


class FileObject(BaseModel):
    """OpenAI's `file` object."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"
    expires_at: int | None = None


class FileList(BaseModel):
    """`GET /v1/files`."""

    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class Deleted(BaseModel):
    """The answer to a DELETE."""

    id: str
    object: str
    deleted: bool = True


class BatchError(BaseModel):
    """One reason a batch failed validation: which line, which field."""

    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    """A batch's `errors`."""

    object: Literal["list"] = "list"
    data: list[BatchError]


class RequestCounts(BaseModel):
    """How many of a batch's requests there are, and how many finished well or not."""

    total: int
    completed: int
    failed: int


class BatchEnergy(BaseModel):
    """wattserve's extension: what the batch's finished requests cost (`source` says how it was known)."""

    joules: float
    joules_per_output_token: float | None
    co2e_grams: float
    co2e_avoided_grams: float
    output_tokens: int
    source: str


class BatchObject(BaseModel):
    """OpenAI's `batch` object, with `energy`."""

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts
    metadata: dict[str, str] | None = None
    energy: BatchEnergy | None = None


class BatchList(BaseModel):
    """`GET /v1/batches`."""

    object: Literal["list"] = "list"
    data: list[BatchObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


@dataclass(frozen=True)
class InputLine:
    """One checked line of a batch's input."""

    line_no: int
    custom_id: str
    body: dict[str, Any]


def check_lines(content: bytes, endpoint: str) -> tuple[list[InputLine], list[BatchError]]:
    """Every line of a batch input file, checked as the live route checks its body.

    Returns:
        The lines (when there is no error), and the errors, each naming its line (1-based).
    """
    request_model = ENDPOINTS[endpoint]
    lines: list[InputLine] = []
    errors: list[BatchError] = []
    seen: set[str] = set()
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as err:
        return [], [BatchError(code="invalid_encoding", message=f"The input file is not UTF-8 text: {err}")]
    for line_no, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        error = _line_error(raw, line_no, endpoint, request_model, seen)
        if isinstance(error, BatchError):
            errors.append(error)
        else:
            lines.append(error)
    if not lines and not errors:
        errors.append(BatchError(code="empty_file", message="The input file holds no requests."))
    return lines, errors


def _line_error(  # noqa: PLR0911 - one return per way a line can be wrong, in the order they are checked
    raw: str, line_no: int, endpoint: str, request_model: type[BaseModel], seen: set[str]
) -> BatchError | InputLine:
    try:
        entry = json.loads(raw)
    except ValueError as err:
        return BatchError(
            code="invalid_json_line", message=f"Line {line_no} is not JSON: {err}", line=line_no
        )
    if not isinstance(entry, dict):
        return BatchError(
            code="invalid_json_line", message=f"Line {line_no} is not a JSON object.", line=line_no
        )
    custom_id = entry.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return BatchError(
            code="missing_required_parameter",
            message="custom_id must be a non-empty string",
            param="custom_id",
            line=line_no,
        )
    if entry.get("method") != "POST":
        return BatchError(code="invalid_method", message="method must be POST", param="method", line=line_no)
    if entry.get("url") != endpoint:
        return BatchError(
            code="invalid_url",
            message=f"url must be the batch's endpoint, {endpoint}",
            param="url",
            line=line_no,
        )
    extra = sorted(set(entry) - {"custom_id", "method", "url", "body"})
    if extra:
        return BatchError(
            code="invalid_request", message=f"unknown field {extra[0]}", param=extra[0], line=line_no
        )
    body = entry.get("body")
    if not isinstance(body, dict):
        return BatchError(
            code="invalid_request", message="body must be a JSON object", param="body", line=line_no
        )
    if body.get("stream"):
        return BatchError(
            code="invalid_request", message="a batch request cannot stream", param="body.stream", line=line_no
        )
    try:
        request_model.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        return BatchError(
            code="invalid_request", message=message, param=f"body.{where}" if where else "body", line=line_no
        )
    if custom_id in seen:
        return BatchError(
            code="duplicate_custom_id",
            message=f"custom_id {custom_id!r} is used twice",
            param="custom_id",
            line=line_no,
        )
    seen.add(custom_id)
    return InputLine(line_no, custom_id, body)
