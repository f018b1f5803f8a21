"""The PostgreSQL store's files: rows with their contents in a `bytea` column, so replicas share no volume."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from server.storage.batches.postgres_schema import QUOTA_LOCK, Connection, Database
from server.storage.batches.rows import FILE_COLUMNS, check_upload, file_from_row, file_values, quota_error
from server.storage.batches.types import BatchLimits, FileRecord, is_file_id

_FILES = ", ".join(FILE_COLUMNS)
_VISIBLE = "(expires_at IS NULL OR expires_at >= %s)"


async def insert_files(db: Connection, files: list[tuple[FileRecord, bytes]]) -> None:
    """Insert the files' rows with their contents, in the caller's transaction."""
    async with db.cursor() as cursor:
        await cursor.executemany(
            f"INSERT INTO batch_files ({_FILES}, content)"
            f" VALUES ({', '.join(['%s'] * len(FILE_COLUMNS))}, %s)",
            [(*file_values(record), content) for record, content in files],
        )


class PostgresFiles:
    """Uploads and batches' output files: each row with its content, in one transaction."""

    def __init__(self, database: Database, limits: BatchLimits, clock: Callable[[], float]) -> None:
        self._database = database
        self._limits = limits
        self._clock = clock

    async def put_file(self, record: FileRecord, content: bytes) -> None:
        """Store the file within the quota; see `BatchStore.put_file`."""
        check_upload(record, content, self._limits)
        async with self._database.connect() as db:
            # Uploads check and insert one at a time: two cannot both fit in the room for one.
            await db.execute("SELECT pg_advisory_xact_lock(%s)", (QUOTA_LOCK,))
            cursor = await db.execute("SELECT COALESCE(SUM(bytes), 0) FROM batch_files")
            (stored,) = await cursor.fetchone() or (0,)
            if error := quota_error(record, int(stored), self._limits):
                raise error
            await insert_files(db, [(record, content)])

    async def _one(self, columns: str, owner: str, file_id: str) -> tuple[Any, ...] | None:
        if not is_file_id(file_id):
            return None
        query = f"SELECT {columns} FROM batch_files WHERE id = %s AND owner = %s AND {_VISIBLE}"
        rows = await self._database.rows(query, (file_id, owner, self._clock()))
        return rows[0] if rows else None

    async def get_file(self, owner: str, file_id: str) -> FileRecord | None:
        """The owner's file, or None."""
        row = await self._one(_FILES, owner, file_id)
        return None if row is None else file_from_row(row)

    async def file_content(self, owner: str, file_id: str) -> bytes | None:
        """The owner's file's content, or None."""
        row = await self._one("content", owner, file_id)
        return None if row is None else bytes(row[0])

    async def list_files(
        self, owner: str, *, purpose: str | None, after: str | None, limit: int
    ) -> list[FileRecord]:
        """A page of the owner's files, newest first."""
        where, args = ["owner = %s", _VISIBLE], [owner, self._clock()]
        if purpose is not None:
            where.append("purpose = %s")
            args.append(purpose)
        if after is not None:
            # An `after` that is not the owner's file gives no row to compare with, so no page.
            where.append(
                "(created_at, seq) < (SELECT created_at, seq FROM batch_files WHERE id = %s AND owner = %s)"
            )
            args += [after, owner]
        rows = await self._database.rows(
            f"SELECT {_FILES} FROM batch_files WHERE {' AND '.join(where)}"
            " ORDER BY created_at DESC, seq DESC LIMIT %s",
            (*args, max(limit, 0)),
        )
        return [file_from_row(row) for row in rows]

    async def delete_file(self, owner: str, file_id: str) -> bool:
        """Delete the owner's file; whether there was one."""
        if not is_file_id(file_id):
            return False
        async with self._database.connect() as db:
            cursor = await db.execute(
                f"DELETE FROM batch_files WHERE id = %s AND owner = %s AND {_VISIBLE}",
                (file_id, owner, self._clock()),
            )
            return cursor.rowcount > 0

    async def purge(self, db: Connection, now: float) -> int:
        """Delete the files past their expires_at, in the caller's transaction; how many."""
        cursor = await db.execute("DELETE FROM batch_files WHERE expires_at < %s", (now,))
        return cursor.rowcount
