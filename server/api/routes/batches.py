"""`/v1/batches`: create, retrieve, list, cancel, as OpenAI's Batch API; the runner does the work.

Creating a batch checks every line of its input file as the live route would check its body (in a
thread: a file of 50,000 lines takes seconds) and stores the batch with its lines in one transaction, as
`in_progress`, or as `failed` with OpenAI's `errors` (each naming its line) when a line is bad: then
nothing runs. The batch object carries what its finished lines cost in `energy`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from server.api.batch_service import BatchApi, get_batch_api
from server.api.errors import documented_errors
from server.api.responses_service import owner_of
from server.batch_wire import (
    ERRORS_SHOWN,
    BatchCreateRequest,
    BatchEnergy,
    BatchErrors,
    BatchList,
    BatchObject,
    RequestCounts,
    check_lines,
)
from server.errors import BatchNotFoundError, InvalidRequestError, StoredFileNotFoundError
from server.storage.batches import BatchLine, BatchRecord

router = APIRouter(responses=documented_errors(400, 401, 404, 413, 503))
WINDOW_S = {"24h": 24 * 3600.0}
TIMESTAMPS = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


def batch_object(batch: BatchRecord, energy_source: str | None) -> BatchObject:
    """A stored batch as OpenAI's `batch` object, with its energy where the server meters it."""
    energy = None
    if energy_source is not None:
        energy = BatchEnergy(
            joules=batch.joules,
            joules_per_output_token=batch.joules / batch.output_tokens if batch.output_tokens else None,
            co2e_grams=batch.co2e_grams,
            co2e_avoided_grams=batch.co2e_avoided_grams,
            output_tokens=batch.output_tokens,
            source=energy_source,
        )
    stamps = {name: int(value) for name in TIMESTAMPS if (value := getattr(batch, name)) is not None}
    return BatchObject(
        id=batch.id,
        endpoint=batch.endpoint,
        errors=BatchErrors(data=batch.errors) if batch.errors else None,
        input_file_id=batch.input_file_id,
        completion_window=batch.completion_window,
        status=batch.status,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        created_at=int(batch.created_at),
        expires_at=int(batch.expires_at),
        request_counts=RequestCounts(total=batch.total, completed=batch.completed, failed=batch.failed),
        metadata=batch.metadata,
        energy=energy,
        **stamps,
    )


@router.post("/v1/batches", response_model=BatchObject)
async def create_batch(
    body: BatchCreateRequest, request: Request, api: BatchApi = Depends(get_batch_api)
) -> BatchObject:
    """Create a batch from an uploaded file of requests to one endpoint, within a 24-hour window."""
    owner = owner_of(request.headers.get("authorization"))
    source = await api.store.get_file(owner, body.input_file_id)
    if source is None:
        raise StoredFileNotFoundError(
            f"No file with id '{body.input_file_id}' was found.", param="input_file_id"
        )
    if source.purpose != "batch":
        raise InvalidRequestError("input_file_id: the file's purpose is not 'batch'", param="input_file_id")
    content = await api.store.file_content(owner, body.input_file_id) or b""
    lines_in_file = content.count(b"\n") + (not content.endswith(b"\n") and bool(content))
    if lines_in_file > api.max_lines:
        raise InvalidRequestError(
            f"input_file_id: the file holds {lines_in_file} lines; a batch takes at most {api.max_lines} "
            "(--max-batch-lines)",
            param="input_file_id",
        )
    lines, errors = await asyncio.to_thread(check_lines, content, body.endpoint)
    now = time.time()
    batch_id = f"batch_{uuid.uuid4().hex}"
    batch = BatchRecord(
        id=batch_id,
        owner=owner,
        endpoint=body.endpoint,
        input_file_id=body.input_file_id,
        completion_window=body.completion_window,
        status="failed" if errors else "in_progress",
        created_at=now,
        expires_at=now + WINDOW_S[body.completion_window],
        in_progress_at=None if errors else now,
        finalizing_at=None,
        completed_at=None,
        failed_at=now if errors else None,
        expired_at=None,
        cancelling_at=None,
        cancelled_at=None,
        total=0 if errors else len(lines),
        completed=0,
        failed=0,
        output_file_id=None,
        error_file_id=None,
        metadata=body.metadata,
        errors=[error.model_dump() for error in errors[:ERRORS_SHOWN]] if errors else None,
        joules=0.0,
        output_tokens=0,
        co2e_grams=0.0,
    )
    rows = (
        []
        if errors
        else [BatchLine(batch_id, line.line_no, line.custom_id, body.endpoint, line.body) for line in lines]
    )
    await api.store.create_batch(batch, rows)
    if errors:
        api.runner.metrics.batches_finished.labels("failed").inc()
    api.runner.wake()
    return batch_object(batch, api.energy_source)


async def _owned(api: BatchApi, request: Request, batch_id: str) -> BatchRecord:
    batch = await api.store.get_batch(owner_of(request.headers.get("authorization")), batch_id)
    if batch is None:
        raise BatchNotFoundError(f"No batch with id '{batch_id}' was found.", param="batch_id")
    return batch


@router.get("/v1/batches/{batch_id}", response_model=BatchObject)
async def retrieve_batch(
    batch_id: str, request: Request, api: BatchApi = Depends(get_batch_api)
) -> BatchObject:
    """A batch as it stands: status, request counts, output and error files once finished, energy."""
    return batch_object(await _owned(api, request, batch_id), api.energy_source)


@router.get("/v1/batches", response_model=BatchList)
async def list_batches(
    request: Request,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    api: BatchApi = Depends(get_batch_api),
) -> BatchList:
    """The caller's batches, newest first, `limit` at a time after the id `after`."""
    owner = owner_of(request.headers.get("authorization"))
    batches = await api.store.list_batches(owner, after=after, limit=limit + 1)
    page = [batch_object(batch, api.energy_source) for batch in batches[:limit]]
    return BatchList(
        data=page,
        first_id=page[0].id if page else None,
        last_id=page[-1].id if page else None,
        has_more=len(batches) > limit,
    )


@router.post("/v1/batches/{batch_id}/cancel", response_model=BatchObject)
async def cancel_batch(
    batch_id: str, request: Request, api: BatchApi = Depends(get_batch_api)
) -> BatchObject:
    """Stop a batch: no line starts from now on; lines running finish; then it is `cancelled`."""
    batch = await api.store.cancel_batch(owner_of(request.headers.get("authorization")), batch_id)
    if batch is None:
        raise BatchNotFoundError(f"No batch with id '{batch_id}' was found.", param="batch_id")
    api.runner.wake()
    return batch_object(batch, api.energy_source)
