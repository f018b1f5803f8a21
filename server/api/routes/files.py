"""`/v1/files`: upload (multipart, `purpose=batch`), list, retrieve, download, delete, as OpenAI's Files API.

File ids are made here (`file-` and 32 hex digits) and checked against that form before anything looks
them up; no name a client sends ever reaches a filesystem path.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response

from server.api.batch_service import BatchApi, get_batch_api
from server.api.errors import documented_errors
from server.api.responses_service import owner_of
from server.batch_wire import Deleted, FileList, FileObject
from server.errors import InvalidRequestError, PayloadTooLargeError, StoredFileNotFoundError
from server.storage.batches import FileRecord, StorageQuotaError

router = APIRouter(responses=documented_errors(400, 401, 404, 413, 503))
PURPOSES = ("batch",)
READ_CHUNK = 2**20


def file_object(record: FileRecord) -> FileObject:
    """A stored file as OpenAI's `file` object."""
    expires = int(record.expires_at) if record.expires_at is not None else None
    return FileObject(
        id=record.id,
        bytes=record.bytes,
        created_at=int(record.created_at),
        filename=record.filename,
        purpose=record.purpose,
        expires_at=expires,
    )


async def _read_capped(upload: UploadFile, limit: int) -> bytes:
    chunks, size = [], 0
    while chunk := await upload.read(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(
                f"file: over {limit} bytes, the largest batch input this server takes "
                "(--max-batch-file-bytes)"
            )
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/v1/files", response_model=FileObject)
async def upload_file(
    request: Request,
    file: Annotated[UploadFile, File()],
    purpose: Annotated[str, Form()],
    api: BatchApi = Depends(get_batch_api),
) -> FileObject:
    """Upload a file: a batch's input (`purpose=batch`, JSON lines)."""
    if purpose not in PURPOSES:
        raise InvalidRequestError(
            f"purpose: only 'batch' files are taken here, not {purpose!r}", param="purpose"
        )
    content = await _read_capped(file, api.limits.max_file_bytes)
    now = time.time()
    record = FileRecord(
        id=f"file-{uuid.uuid4().hex}",
        owner=owner_of(request.headers.get("authorization")),
        purpose=purpose,
        filename=(file.filename or "upload.jsonl")[:255],
        bytes=len(content),
        created_at=now,
        expires_at=now + api.limits.file_ttl_s,
    )
    try:
        await api.store.put_file(record, content)
    except StorageQuotaError as err:
        raise PayloadTooLargeError(f"file: {err} (--max-batch-storage-bytes)") from err
    return file_object(record)


@router.get("/v1/files", response_model=FileList)
async def list_files(
    request: Request,
    purpose: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    api: BatchApi = Depends(get_batch_api),
) -> FileList:
    """The caller's files, newest first, `limit` at a time after the id `after`."""
    owner = owner_of(request.headers.get("authorization"))
    records = await api.store.list_files(owner, purpose=purpose, after=after, limit=limit + 1)
    page = [file_object(record) for record in records[:limit]]
    return FileList(
        data=page,
        first_id=page[0].id if page else None,
        last_id=page[-1].id if page else None,
        has_more=len(records) > limit,
    )


async def _stored(api: BatchApi, request: Request, file_id: str) -> FileRecord:
    record = await api.store.get_file(owner_of(request.headers.get("authorization")), file_id)
    if record is None:
        raise StoredFileNotFoundError(f"No file with id '{file_id}' was found.", param="file_id")
    return record


@router.get("/v1/files/{file_id}", response_model=FileObject)
async def retrieve_file(file_id: str, request: Request, api: BatchApi = Depends(get_batch_api)) -> FileObject:
    """One file's description."""
    return file_object(await _stored(api, request, file_id))


@router.get("/v1/files/{file_id}/content", response_class=Response)
async def file_content(file_id: str, request: Request, api: BatchApi = Depends(get_batch_api)) -> Response:
    """A file's bytes (a batch's output or error file: JSON lines)."""
    record = await _stored(api, request, file_id)
    content = await api.store.file_content(record.owner, file_id)
    if content is None:
        raise StoredFileNotFoundError(f"No file with id '{file_id}' was found.", param="file_id")
    return Response(content, media_type="application/jsonl")


@router.delete("/v1/files/{file_id}", response_model=Deleted)
async def delete_file(file_id: str, request: Request, api: BatchApi = Depends(get_batch_api)) -> Deleted:
    """Delete a file."""
    record = await _stored(api, request, file_id)
    await api.store.delete_file(record.owner, file_id)
    return Deleted(id=file_id, object="file")
