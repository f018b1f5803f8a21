"""The Batch API's files and batches in PostgreSQL, for several replicas sharing one store.

Why it is built this way:

- File contents live in the database (a `bytea` column), not on disk: replicas need no shared volume, and
  a content goes in with its row, in one transaction. `files_dir` is not used.
- Every write is one transaction (psycopg 3's async pool, connections in autocommit outside explicit
  transactions): a replica killed mid-write has its transaction rolled back by the server.
- Claims take lines with `SELECT ... FOR UPDATE SKIP LOCKED`, so replicas claiming at once each get
  other lines and never wait on one another. A transaction that touches a batch and its lines locks the
  batch's row first (`finish_line` too), so two never deadlock.
- The quota is checked under a transaction-scoped advisory lock: two uploads cannot both fit in the room
  of one.
- Time (claims' leases, visibility of expiring files) is each replica's clock: keep `lease_s` far above
  the replicas' clock skew (NTP keeps it to milliseconds).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from server.storage.batches.postgres_files import PostgresFiles, insert_files
from server.storage.batches.postgres_schema import Connection, Database
from server.storage.batches.rows import (
    BATCH_COLUMNS,
    FINALIZE_FROM,
    FINISHED_AT,
    OPEN_LINE,
    READY,
    batch_from_row,
    batch_values,
    check_finalize,
    check_new_batch,
    check_status_change,
    finalize_timestamps,
    json_text,
    json_value,
    line_from_row,
    line_values,
    outcome_totals,
)
from server.storage.batches.types import (
    CANCELLING,
    EXPIRED,
    FAILED,
    FINISHED,
    IN_PROGRESS,
    VALIDATING,
    BatchLimits,
    BatchLine,
    BatchRecord,
    FileRecord,
    LineKey,
    LineOutcome,
)

_BATCHES = ", ".join(BATCH_COLUMNS)
_STATUS_LOCKED = [CANCELLING, *FINISHED]


class PostgresBatchStore:
    """The `BatchStore` on PostgreSQL, through a pool of async connections."""

    def __init__(self, database: Database, limits: BatchLimits, clock: Callable[[], float]) -> None:
        self._database = database
        self._connect = database.connect
        self._limits = limits
        self._clock = clock
        self._files = PostgresFiles(database, limits, clock)

    @classmethod
    async def open(
        cls,
        url: str,
        limits: BatchLimits,
        clock: Callable[[], float] = time.time,
        *,
        max_connections: int = 8,
    ) -> PostgresBatchStore:
        """Connect to the database at `url` and bring its schema up to date.

        Raises:
            BatchSchemaTooNewError: A newer wattserve wrote the database.
            BatchStoreError: The database cannot be reached or used.
        """
        return cls(await Database.open(url, max_connections), limits, clock)

    async def put_file(self, record: FileRecord, content: bytes) -> None:
        """Store the file, its content in the database, within the quota."""
        await self._files.put_file(record, content)

    async def get_file(self, owner: str, file_id: str) -> FileRecord | None:
        """The owner's file, or None."""
        return await self._files.get_file(owner, file_id)

    async def file_content(self, owner: str, file_id: str) -> bytes | None:
        """The owner's file's content, or None."""
        return await self._files.file_content(owner, file_id)

    async def list_files(
        self, owner: str, *, purpose: str | None, after: str | None, limit: int
    ) -> list[FileRecord]:
        """A page of the owner's files, newest first."""
        return await self._files.list_files(owner, purpose=purpose, after=after, limit=limit)

    async def delete_file(self, owner: str, file_id: str) -> bool:
        """Delete the owner's file; whether there was one."""
        return await self._files.delete_file(owner, file_id)

    async def create_batch(self, batch: BatchRecord, lines: list[BatchLine]) -> None:
        """Store the batch and its lines, pending, in one transaction."""
        check_new_batch(batch, lines)
        async with self._connect() as db:
            await db.execute(
                f"INSERT INTO batches ({_BATCHES}) VALUES ({', '.join(['%s'] * len(BATCH_COLUMNS))})",
                batch_values(batch),
            )
            copy_lines = "COPY batch_lines (batch_id, line_no, custom_id, url, body, state) FROM STDIN"
            async with db.cursor() as cursor, cursor.copy(copy_lines) as copy:
                for line in lines:
                    await copy.write_row((*line_values(line), "pending"))

    async def _get_batch(self, db: Connection, batch_id: str, owner: str | None = None) -> BatchRecord | None:
        query = f"SELECT {_BATCHES} FROM batches WHERE id = %s"
        args: tuple[str, ...] = (batch_id,) if owner is None else (batch_id, owner)
        row = await (
            await db.execute(query + (" AND owner = %s" if owner is not None else ""), args)
        ).fetchone()
        return None if row is None else batch_from_row(row)

    async def get_batch(self, owner: str, batch_id: str) -> BatchRecord | None:
        """The owner's batch, or None."""
        async with self._connect(transaction=False) as db:
            return await self._get_batch(db, batch_id, owner)

    async def get_batch_any_owner(self, batch_id: str) -> BatchRecord | None:
        """The batch whoever owns it (for the runner)."""
        async with self._connect(transaction=False) as db:
            return await self._get_batch(db, batch_id)

    async def list_batches(self, owner: str, *, after: str | None, limit: int) -> list[BatchRecord]:
        """A page of the owner's batches, newest first."""
        where, args = "owner = %s", [owner]
        if after is not None:
            where += (
                " AND (created_at, seq) < (SELECT created_at, seq FROM batches WHERE id = %s AND owner = %s)"
            )
            args += [after, owner]
        rows = await self._database.rows(
            f"SELECT {_BATCHES} FROM batches WHERE {where} ORDER BY created_at DESC, seq DESC LIMIT %s",
            (*args, max(limit, 0)),
        )
        return [batch_from_row(row) for row in rows]

    async def set_status(self, batch_id: str, status: str, **timestamps: float) -> bool:
        """Set the status and timestamps unless the batch is cancelling or finished; whether it was."""
        check_status_change(status, timestamps)
        assignments = "".join(f", {name} = %s" for name in timestamps)  # names checked above
        async with self._connect() as db:
            cursor = await db.execute(
                f"UPDATE batches SET status = %s{assignments} WHERE id = %s AND status <> ALL(%s)",
                (status, *timestamps.values(), batch_id, _STATUS_LOCKED),
            )
            if cursor.rowcount and status == FAILED:
                await self._cancel_lines(db, batch_id, claimed_too=True)
            return cursor.rowcount > 0

    @staticmethod
    async def _cancel_lines(db: Connection, batch_id: str, *, claimed_too: bool) -> None:
        states = OPEN_LINE if claimed_too else "state = 'pending'"
        await db.execute(
            f"UPDATE batch_lines SET state = 'cancelled' WHERE batch_id = %s AND {states}", (batch_id,)
        )

    async def _lock_batch(
        self, db: Connection, batch_id: str, owner: str | None = None
    ) -> BatchRecord | None:
        owned = "" if owner is None else " AND owner = %s"
        args = (batch_id,) if owner is None else (batch_id, owner)
        cursor = await db.execute(f"SELECT {_BATCHES} FROM batches WHERE id = %s{owned} FOR UPDATE", args)
        row = await cursor.fetchone()
        return None if row is None else batch_from_row(row)

    async def cancel_batch(self, owner: str, batch_id: str) -> BatchRecord | None:
        """Start cancelling the owner's batch if it is validating or in progress; the batch, or None."""
        async with self._connect() as db:
            batch = await self._lock_batch(db, batch_id, owner)
            if batch is None or batch.status not in (VALIDATING, IN_PROGRESS):
                return batch
            await db.execute(
                "UPDATE batches SET status = %s, cancelling_at = %s WHERE id = %s",
                (CANCELLING, self._clock(), batch_id),
            )
            await self._cancel_lines(db, batch_id, claimed_too=False)
            return await self._get_batch(db, batch_id)

    async def claim_lines(self, worker_id: str, limit: int) -> list[BatchLine]:
        """Take up to `limit` runnable lines for the worker, oldest batch first, then by line."""
        if limit <= 0:
            return []
        now = self._clock()
        claimed: list[BatchLine] = []
        async with self._connect() as db:
            cursor = await db.execute(
                "SELECT id FROM batches WHERE status = %s ORDER BY created_at, seq", (IN_PROGRESS,)
            )
            for (batch_id,) in await cursor.fetchall():
                if len(claimed) >= limit:
                    break
                # Lines another replica is claiming right now are locked: skipped, never waited for.
                cursor = await db.execute(
                    "SELECT batch_id, line_no, custom_id, url, body FROM batch_lines"
                    f" WHERE batch_id = %s AND {OPEN_LINE} AND (state = 'pending' OR claimed_at < %s)"
                    " ORDER BY line_no LIMIT %s FOR UPDATE SKIP LOCKED",
                    (batch_id, now - self._limits.lease_s, limit - len(claimed)),
                )
                taken = [line_from_row(row) for row in await cursor.fetchall()]
                if not taken:
                    continue
                await db.execute(
                    "UPDATE batch_lines SET state = 'claimed', worker_id = %s, claimed_at = %s"
                    " WHERE batch_id = %s AND line_no = ANY(%s)",
                    (worker_id, now, batch_id, [line.line_no for line in taken]),
                )
                claimed += taken
        return claimed

    async def renew_claims(self, worker_id: str, keys: Sequence[LineKey]) -> None:
        """Restart the lease of those lines the worker still holds."""
        if not keys:
            return
        async with self._connect() as db:
            await db.execute(
                "UPDATE batch_lines SET claimed_at = %s WHERE state = 'claimed' AND worker_id = %s"
                " AND (batch_id, line_no) IN (SELECT * FROM unnest(%s::text[], %s::integer[]))",
                (self._clock(), worker_id, [key[0] for key in keys], [key[1] for key in keys]),
            )

    async def finish_line(self, worker_id: str, batch_id: str, outcome: LineOutcome) -> bool:
        """Write the outcome and count it in, if the worker still holds the line; whether it did."""
        async with self._connect() as db:
            await db.execute("SELECT 1 FROM batches WHERE id = %s FOR UPDATE", (batch_id,))
            cursor = await db.execute(
                "UPDATE batch_lines SET state = 'done', record = %s, failed = %s"
                " WHERE batch_id = %s AND line_no = %s AND state = 'claimed' AND worker_id = %s",
                (json_text(outcome.record), outcome.failed, batch_id, outcome.line_no, worker_id),
            )
            if cursor.rowcount:
                await self._count_finished(db, batch_id, outcome)
            return cursor.rowcount > 0

    async def _count_finished(self, db: Connection, batch_id: str, outcome: LineOutcome) -> None:
        await db.execute(
            "UPDATE batches SET completed = completed + %s, failed = failed + %s, joules = joules + %s,"
            " output_tokens = output_tokens + %s, co2e_grams = co2e_grams + %s,"
            " co2e_avoided_grams = co2e_avoided_grams + %s WHERE id = %s",
            (*outcome_totals(outcome), batch_id),
        )

    async def release_claims(self, worker_id: str) -> None:
        """Put the worker's claimed lines back to pending."""
        async with self._connect() as db:
            await db.execute(
                "UPDATE batch_lines SET state = 'pending', worker_id = NULL, claimed_at = NULL"
                " WHERE state = 'claimed' AND worker_id = %s",
                (worker_id,),
            )

    async def batches_ready_to_finalize(self) -> list[str]:
        """The batches with nothing left to run that no one has finalized, oldest first."""
        async with self._connect() as db:
            # The cancelling batches' rows first, as every transaction on a batch and its lines; one being
            # finalized or finished right now is skipped this time.
            cursor = await db.execute(
                "SELECT id FROM batches WHERE status = %s FOR UPDATE SKIP LOCKED", (CANCELLING,)
            )
            if cancelling := [batch_id for (batch_id,) in await cursor.fetchall()]:
                await db.execute(
                    "UPDATE batch_lines SET state = 'cancelled'"
                    " WHERE batch_id = ANY(%s) AND state = 'claimed' AND claimed_at < %s",
                    (cancelling, self._clock() - self._limits.lease_s),
                )
            cursor = await db.execute(
                f"SELECT id FROM batches AS b WHERE status IN ('{IN_PROGRESS}', '{CANCELLING}', '{EXPIRED}')"
                f" AND {READY} ORDER BY created_at, seq"
            )
            return [batch_id for (batch_id,) in await cursor.fetchall()]

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
        now = self._clock()
        async with self._connect() as db:
            batch = await self._lock_batch(db, batch_id)
            if batch is None or batch.status != FINALIZE_FROM[status]:
                return False
            cursor = await db.execute(f"SELECT 1 FROM batches AS b WHERE id = %s AND {READY}", (batch_id,))
            if await cursor.fetchone() is None:
                return False
            await self._cancel_lines(db, batch_id, claimed_too=True)  # what was never run, never will be
            await insert_files(db, files)
            changes = {
                "status": status,
                **finalize_timestamps(status, now),
                "output_file_id": output and output.id,
                "error_file_id": error_file and error_file.id,
            }
            await db.execute(
                f"UPDATE batches SET {', '.join(f'{name} = %s' for name in changes)} WHERE id = %s",
                (*changes.values(), batch_id),
            )
        return True

    async def line_outcomes(self, batch_id: str) -> list[tuple[int, dict[str, Any], bool]]:
        """(line_no, record, failed) of the done lines, in line order."""
        rows = await self._database.rows(
            "SELECT line_no, record, failed FROM batch_lines WHERE batch_id = %s AND state = 'done'"
            " ORDER BY line_no",
            (batch_id,),
        )
        return [(line_no, json_value(record), bool(failed)) for line_no, record, failed in rows]

    async def expire_due(self, now: float) -> list[str]:
        """Expire the validating and in-progress batches past their expires_at; their ids."""
        async with self._connect() as db:
            cursor = await db.execute(
                "SELECT id FROM batches WHERE status IN (%s, %s) AND expires_at < %s"
                " ORDER BY created_at, seq FOR UPDATE",
                (VALIDATING, IN_PROGRESS, now),
            )
            due = [batch_id for (batch_id,) in await cursor.fetchall()]
            for batch_id in due:
                await db.execute(
                    "UPDATE batches SET status = %s, expired_at = %s WHERE id = %s", (EXPIRED, now, batch_id)
                )
                # Claimed lines too: an answer arriving after the deadline is not the batch's.
                await self._cancel_lines(db, batch_id, claimed_too=True)
        return due

    async def purge_expired(self, now: float) -> int:
        """Delete expired files, and finished batches older than file_ttl_s with their lines; how many."""
        async with self._connect() as db:
            files = await self._files.purge(db, now)
            cursor = await db.execute(
                f"SELECT id FROM batches WHERE status = ANY(%s) AND {FINISHED_AT} < %s FOR UPDATE",
                (list(FINISHED), now - self._limits.file_ttl_s),
            )
            batches = [batch_id for (batch_id,) in await cursor.fetchall()]
            await db.execute("DELETE FROM batch_lines WHERE batch_id = ANY(%s)", (batches,))
            await db.execute("DELETE FROM batches WHERE id = ANY(%s)", (batches,))
            return files + len(batches)

    async def close(self) -> None:
        """Close the pool once calls in flight have returned their connections; later calls raise."""
        await self._database.close()
