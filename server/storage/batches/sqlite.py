"""The Batch API's files and batches in one SQLite file and a folder of contents: the embedded default.

Why it is built this way:

- Durable against a process crash: WAL with `synchronous=NORMAL`, as the response store; a committed
  transaction survives a SIGKILL at any moment. Contents are fsynced before their rows go in.
- Atomic: every write is one `BEGIN IMMEDIATE` transaction; a process killed mid-write leaves the state
  before it. A content is written whole before its row (`file_dir.py`), so a row never names a partial
  content; a content left without a row by a crash is swept by `purge_expired` an hour on.
- Shared by processes: `BEGIN IMMEDIATE` takes the file's write lock, so replicas on one host sharing
  the file claim, finish and finalize without two ever taking the same line (SQLite's locks do not hold
  on network file systems: use PostgreSQL for replicas on several hosts).
- Off the event loop: one worker thread owns the connection and runs every SQL call in turn; contents
  are read and written on the default executor, so a large upload does not hold up claims.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from server.storage.batches.file_dir import FileDir
from server.storage.batches.rows import (
    check_finalize,
    check_new_batch,
    check_status_change,
    check_upload,
    quota_error,
)
from server.storage.batches.sqlite_tables import Tables
from server.storage.batches.types import (
    BatchLimits,
    BatchLine,
    BatchRecord,
    BatchStoreError,
    FileRecord,
    LineKey,
    LineOutcome,
    is_file_id,
)

T = TypeVar("T")

# A content without a row is an upload between its two steps until it is this old, then a crash's leftover.
ORPHAN_AGE_S = 3600.0


class SqliteBatchStore:
    """The `BatchStore` on SQLite: every SQL call on one worker thread, contents beside the file.

    A caller cancelled while its call runs stops waiting; the call itself completes (or rolls back) on the
    worker, never half done.
    """

    def __init__(self, tables: Tables, files: FileDir, limits: BatchLimits, executor: ThreadPoolExecutor):
        self._tables = tables
        self._files = files
        self._limits = limits
        self._executor = executor
        self._closed = False

    @classmethod
    async def open(
        cls, path: Path, files_dir: Path, limits: BatchLimits, clock: Callable[[], float] = time.time
    ) -> SqliteBatchStore:
        """Open the store at `path` with contents in `files_dir`, creating both and the schema as needed.

        Raises:
            BatchSchemaTooNewError: The file was written by a newer wattserve.
            BatchStoreError: The file is not a SQLite database.
            OSError: A folder cannot be created.
        """
        files = FileDir(files_dir)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wattserve-batch-store")
        try:
            await asyncio.to_thread(files.create)
            tables = await asyncio.get_running_loop().run_in_executor(
                executor, Tables.open, path, limits, clock
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(tables, files, limits, executor)

    async def _call(self, method: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise BatchStoreError("the batch store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, method, *args)

    async def put_file(self, record: FileRecord, content: bytes) -> None:
        """Store the file within the quota: its content on disk, then its row."""
        check_upload(record, content, self._limits)
        # A cheap early refusal, before a large content is written; the insert checks again, atomically.
        stored = await self._call(self._tables.file_bytes)
        if error := quota_error(record, stored, self._limits):
            raise error
        try:
            await asyncio.to_thread(self._files.write, record.id, content)
        except FileExistsError as err:
            raise BatchStoreError(f"file id {record.id} is taken") from err
        try:
            await self._call(self._tables.insert_file, record)
        except Exception:
            # The row never went in: its content goes too. (A cancelled caller leaves the insert running on
            # the worker, so its content stays; the sweep takes it if the insert failed.)
            await asyncio.to_thread(self._files.remove, [record.id])
            raise

    async def get_file(self, owner: str, file_id: str) -> FileRecord | None:
        """The owner's file, or None."""
        return await self._call(self._tables.get_file, owner, file_id) if is_file_id(file_id) else None

    async def file_content(self, owner: str, file_id: str) -> bytes | None:
        """The owner's file's content, or None."""
        if await self.get_file(owner, file_id) is None:
            return None
        return await asyncio.to_thread(self._files.read, file_id)

    async def list_files(
        self, owner: str, *, purpose: str | None, after: str | None, limit: int
    ) -> list[FileRecord]:
        """A page of the owner's files, newest first."""
        return await self._call(self._tables.list_files, owner, purpose, after, limit)

    async def delete_file(self, owner: str, file_id: str) -> bool:
        """Delete the owner's file, its row then its content; whether there was one."""
        if not is_file_id(file_id) or not await self._call(self._tables.delete_file, owner, file_id):
            return False
        await asyncio.to_thread(self._files.remove, [file_id])
        return True

    async def create_batch(self, batch: BatchRecord, lines: list[BatchLine]) -> None:
        """Store the batch and its lines, pending, in one transaction."""
        check_new_batch(batch, lines)
        await self._call(self._tables.create_batch, batch, lines)

    async def get_batch(self, owner: str, batch_id: str) -> BatchRecord | None:
        """The owner's batch, or None."""
        return await self._call(self._tables.get_batch, owner, batch_id)

    async def get_batch_any_owner(self, batch_id: str) -> BatchRecord | None:
        """The batch whoever owns it (for the runner)."""
        return await self._call(self._tables.get_batch, None, batch_id)

    async def list_batches(self, owner: str, *, after: str | None, limit: int) -> list[BatchRecord]:
        """A page of the owner's batches, newest first."""
        return await self._call(self._tables.list_batches, owner, after, limit)

    async def set_status(self, batch_id: str, status: str, **timestamps: float) -> bool:
        """Set the status and timestamps unless the batch is cancelling or finished; whether it was."""
        check_status_change(status, timestamps)
        return await self._call(self._tables.set_status, batch_id, status, timestamps)

    async def claim_lines(self, worker_id: str, limit: int) -> list[BatchLine]:
        """Take up to `limit` runnable lines for the worker, oldest batch first, then by line."""
        return await self._call(self._tables.claim_lines, worker_id, limit) if limit > 0 else []

    async def renew_claims(self, worker_id: str, keys: Sequence[LineKey]) -> None:
        """Restart the lease of those lines the worker still holds."""
        await self._call(self._tables.renew_claims, worker_id, list(keys))

    async def finish_line(self, worker_id: str, batch_id: str, outcome: LineOutcome) -> bool:
        """Write the outcome and count it in, if the worker still holds the line; whether it did."""
        return await self._call(self._tables.finish_line, worker_id, batch_id, outcome)

    async def release_claims(self, worker_id: str) -> None:
        """Put the worker's claimed lines back to pending."""
        await self._call(self._tables.release_claims, worker_id)

    async def cancel_batch(self, owner: str, batch_id: str) -> BatchRecord | None:
        """Start cancelling the owner's batch if it is validating or in progress; the batch, or None."""
        return await self._call(self._tables.cancel_batch, owner, batch_id)

    async def batches_ready_to_finalize(self) -> list[str]:
        """The batches with nothing left to run that no one has finalized, oldest first."""
        return await self._call(self._tables.batches_ready_to_finalize)

    async def finalize(
        self,
        batch_id: str,
        *,
        status: str,
        output: FileRecord | None,
        output_content: bytes | None,
        error_file: FileRecord | None,
        error_content: bytes | None,
    ) -> bool:
        """Store the output and error files and finish the batch, once; False if it was not ready."""
        files = check_finalize(status, output, output_content, error_file, error_content)
        written: list[str] = []
        finalized = False
        try:
            for record, content in files:
                await asyncio.to_thread(self._files.write, record.id, content)
                written.append(record.id)
            finalized = await self._call(self._tables.finalize, batch_id, status, output, error_file)
        except Exception:
            await asyncio.to_thread(self._files.remove, written)
            raise
        if not finalized:  # another replica finalized first: its files are the batch's, these go
            await asyncio.to_thread(self._files.remove, written)
        return finalized

    async def line_outcomes(self, batch_id: str) -> list[tuple[int, dict[str, Any], bool]]:
        """(line_no, record, failed) of the done lines, in line order."""
        return await self._call(self._tables.line_outcomes, batch_id)

    async def expire_due(self, now: float) -> list[str]:
        """Expire the validating and in-progress batches past their expires_at; their ids."""
        return await self._call(self._tables.expire_due, now)

    async def purge_expired(self, now: float) -> int:
        """Delete expired files, finished batches older than file_ttl_s, and crash leftovers; how many."""
        purged, file_ids = await self._call(self._tables.purge_expired, now)
        await asyncio.to_thread(self._files.remove, file_ids)
        keep = await self._call(self._tables.file_ids)
        await asyncio.to_thread(self._files.sweep, keep, now - ORPHAN_AGE_S)
        return purged

    async def close(self) -> None:
        """Close the file once every call already made has run; later calls raise BatchStoreError."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._tables.close)
        finally:
            self._executor.shutdown(wait=False)
